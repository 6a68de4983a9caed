"""BENCHMARKS.md and bench/latency.svg from bench/run's results. The prose is bench/report.md; the
code here picks the figures out of the results, formats the tables, and judges the targets."""

import math
import random
import re
import statistics
import sys
from pathlib import Path

from common import MiB, ROOT
from stages import compaction, cost

TEMPLATE = Path(__file__).with_name("report.md")
MARKER = re.compile(r"^<!-- ([\w.]+) -->\n", re.M)

# The targets the report judges; the template's sentences state them, so change both together.
WORK_US = 20  # per event through the router
COLD_PER_FLOOR = 1.5  # Init against the floor without tracing
ZIP_BYTES = 2.5 * MiB
PEAK_KIB = 32 * 1024
GROWTH_MIB = 0.5  # over the memory stage's last batch
THROUGHPUT_PER_REFERENCE = 5
COMPACTION_CPU_US = 100  # mailhook's own CPU per compacted event
COMPACTION_DAY_S = 900  # Lambda's limit, for a day of 100,000 objects
# Section 2b, at 128 MB: CPU against the do-nothing floor's, or failing that against the SDK floor's.
BILLED_COLD_CPU_PER_FLOOR = 1.25
BILLED_WARM_CPU_PER_FLOOR = 1.5
BILLED_CPU_PER_SDK_FLOOR = 1.1

# A smoke run's figures come from debug builds and runs of a few seconds: they say whether a stage
# works, not whether a target is met.
NOT_JUDGED = "not judged in a smoke run on debug builds"


def verdict(ok, smoke, met="met", not_met="NOT met"):
    return NOT_JUDGED if smoke else met if ok else not_met


def template():
    """The blocks of bench/report.md by name: stage sections as written, `stage.part` pieces trimmed."""
    parts = MARKER.split(TEMPLATE.read_text())
    return {name: body.strip("\n") if "." in name else body for name, body in zip(parts[1::2], parts[2::2])}


def fill(block, **values):
    """str.format, after leaving out each line that is only a placeholder for "" (and the blank
    line before it), so that an empty table or a missing plot leaves no gap behind."""
    kept = []
    for line in block.split("\n"):
        if line.startswith("{") and line.endswith("}") and values.get(line[1:-1], None) == "":
            if kept and kept[-1] == "":
                kept.pop()
            continue
        kept.append(line)
    return "\n".join(kept).format(**values)


def render(results, plot_name):
    """The whole of BENCHMARKS.md. `plot_name` is the latency plot's path relative to it, or None."""
    t = template()
    smoke = results["smoke"]
    out = [fill(t["header"], smoke_flag=" --smoke" if smoke else "", date=results["date"], machine=results["machine"])]
    if smoke:
        out.append(t["smoke"])
    out += [
        work(t, results.get("work") or [], smoke),
        cold(t, results.get("cold") or sys.exit("no cold-start results: run the cold stage"), smoke),
        section(t, "billed", results.get("billed", {"skipped": "not run"}), smoke, billed),
        section(t, "package", results.get("package", {"skipped": "not run"}), smoke, package),
        section(t, "memory", results.get("memory", {"skipped": "not run"}), smoke, memory),
        section(t, "throughput", results.get("throughput", {"skipped": "not run"}), smoke, throughput, plot_name),
        costs(t, results),
        section(t, "compaction", results.get("compaction", {"skipped": "not run"}), smoke, compacted),
        section(t, "compaction_scale", results.get("compaction_scale", {"skipped": "not run"}), smoke, at_scale),
    ]
    return "".join(out) + t["footer"]


def section(t, name, data, smoke, fill_in, *extra):
    """A stage's section, or its heading and why it was skipped."""
    if "skipped" in data:
        heading = t[name].split("\n", 1)[0]
        return heading + "\n\n" + fill(t["skipped"], reason=data["skipped"])
    return fill_in(t, data, smoke, *extra)


def work(t, rows, smoke):
    table = []
    for name in dict.fromkeys(r["event"] for r in rows):
        pure = next(r for r in rows if r["event"] == name and r["group"] == "pure")
        router = next(r for r in rows if r["event"] == name and r["group"] == "router")
        table.append(f"| {name} | {pure['bytes'] or ''} | {pure['median_us']:.2f} µs | {router['median_us']:.2f} µs |")
    router = [r for r in rows if r["group"] == "router"]
    samples = max((r["median_us"] for r in router if r["event"] != "new-20kb-snippet"), default=0)
    big = max((r["median_us"] for r in router if r["event"] == "new-20kb-snippet"), default=0)
    return fill(t["work"], rows="\n".join(table), samples=samples, big=big,
                samples_verdict=verdict(samples <= WORK_US, smoke), big_verdict=verdict(big <= WORK_US, smoke))


def cold(t, c, smoke):
    floor = c["variants"][0]["median_ms"]
    traced = next((v["median_ms"] for v in c["variants"] if "tracing setup" in v["name"]), None)
    rows = []
    for v in c["variants"]:
        row = f"| {v['name']} | {v['median_ms']:.2f} ms | {v['min_ms']:.2f} ms | {v['max_ms']:.2f} ms | {v['median_ms'] / floor:.2f} |"
        rows.append(row + (f" {v['median_ms'] / traced:.2f} |" if traced else " |"))
    deployed = c["variants"][-1]["median_ms"]
    traced_note = fill(t["cold.traced"], traced=traced, deployed_per_traced=deployed / traced) if traced else "."
    return fill(t["cold"], cold=c, rows="\n".join(rows), floor=floor, deployed=deployed,
                deployed_per_floor=deployed / floor, traced_note=traced_note,
                verdict=verdict(deployed <= COLD_PER_FLOOR * floor, smoke))


BILLED_NAMES = {"mailhook": "mailhook", "mailhook_ssm": "mailhook, tokens from SSM", "naive": "naive",
                "sdk_floor": "SDK floor", "floor": "floor"}
BILLED_RATIOS = (("mailhook", "floor"), ("mailhook", "sdk_floor"), ("naive", "mailhook"), ("mailhook_ssm", "mailhook"))


def ratio_interval(top, bottom, key, resamples=2000, seed=27):
    """The 90 % bootstrap interval of the ratio of `key`'s medians, resampling whole starts (the
    unit that varies) with the same start indices for both functions, which ran interleaved.
    None when the results hold no per-start samples (a run before they were kept)."""
    a, b = top.get(f"{key}_by_start"), bottom.get(f"{key}_by_start")
    if not a or not b or len(a) != len(b):
        return None
    flat = (lambda starts: starts) if key == "cold_cpu" else (lambda starts: [x for s in starts for x in s])
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        picks = [rng.randrange(len(a)) for _ in a]
        ratios.append(statistics.median(flat([a[i] for i in picks])) / statistics.median(flat([b[i] for i in picks])))
    ratios.sort()
    return ratios[int(0.05 * resamples)], ratios[int(0.95 * resamples) - 1]


def billed(t, b, smoke):
    rows, ratios = [], []
    for period in b["periods"]:
        ms = period["period_us"] // 1000
        by_name = {f["name"]: f for f in period["functions"]}
        for f in period["functions"]:
            cells = " | ".join(f"{f[k]['median']:.2f} ({f[k]['p90']:.2f})" for k in ("init", "init_cpu", "cold", "cold_cpu", "warm", "warm_cpu"))
            rows.append(f"| {BILLED_NAMES[f['name']]} | {ms} ms | {cells} | {f['throttled_periods_per_start']:.1f} |")
        for top, bottom in BILLED_RATIOS:
            if top in by_name and bottom in by_name:
                cells = " | ".join(f"{by_name[top][k]['median'] / by_name[bottom][k]['median']:.2f}×"
                                   for k in ("init_cpu", "cold", "cold_cpu", "warm", "warm_cpu"))
                ratios.append(f"| {BILLED_NAMES[top]} / {BILLED_NAMES[bottom]} | {ms} ms | {cells} |")
    skipped = "; ".join(f"{BILLED_NAMES[name]}: {why}" for name, why in b["left_out"].items())
    # Judged at the first period (100 ms in a full run), where throttling matters least.
    f = {x["name"]: x for x in b["periods"][0]["functions"]}
    per = {(k, bottom): f["mailhook"][k]["median"] / f[bottom][k]["median"] for k in ("cold_cpu", "warm_cpu") for bottom in ("floor", "sdk_floor")}
    interval = {}
    for k in ("cold_cpu", "warm_cpu"):
        spread = ratio_interval(f["mailhook"], f["sdk_floor"], k)
        interval[k] = f", 90 % interval over starts {spread[0]:.2f}–{spread[1]:.2f}×" if spread else ""
    return fill(t["billed"], billed=b, memory_mib=b["memory_bytes"] / MiB, rows="\n".join(rows), ratios="\n".join(ratios),
                skipped=f"Not measured: {skipped}." if skipped else "", judged_period=b["periods"][0]["period_us"] // 1000,
                cold_per_floor=per["cold_cpu", "floor"], warm_per_floor=per["warm_cpu", "floor"],
                cold_per_sdk=per["cold_cpu", "sdk_floor"], warm_per_sdk=per["warm_cpu", "sdk_floor"],
                cold_sdk_interval=interval["cold_cpu"], warm_sdk_interval=interval["warm_cpu"],
                cold_verdict=verdict(per["cold_cpu", "floor"] <= BILLED_COLD_CPU_PER_FLOOR, smoke),
                warm_verdict=verdict(per["warm_cpu", "floor"] <= BILLED_WARM_CPU_PER_FLOOR, smoke),
                cold_sdk_verdict=verdict(per["cold_cpu", "sdk_floor"] <= BILLED_CPU_PER_SDK_FLOOR, smoke),
                warm_sdk_verdict=verdict(per["warm_cpu", "sdk_floor"] <= BILLED_CPU_PER_SDK_FLOOR, smoke))


def package(t, p, smoke):
    return fill(t["package"], package=p, zip_mib=p["zip_bytes"] / MiB, bootstrap_mib=p["bootstrap_bytes"] / MiB,
                verdict=verdict(p["zip_bytes"] <= ZIP_BYTES, smoke))


def memory(t, mem, smoke):
    rows = [f"| {pt['requests']:,} | {pt['rss_kib'] / 1024:.1f} MiB |" for pt in mem["points"]]
    last, before_last = mem["points"][-1], mem["points"][-2]
    growth = (last["rss_kib"] - before_last["rss_kib"]) / 1024
    return fill(t["memory"], memory=mem, rows="\n".join(rows), peak_mib=mem["peak_kib"] / 1024,
                requests=last["requests"], last_batch=last["requests"] - before_last["requests"], growth_mib=growth,
                verdict=verdict(mem["peak_kib"] <= PEAK_KIB and growth < GROWTH_MIB, smoke))


def fmt_ms(us):
    return f"{us / 1000:.2f}"


def throughput(t, th, smoke, plot_name):
    rows, verdicts = [], []
    for run_ in th["runs"]:
        for key, name in (("mailhook", "mailhook"), ("reference", f"webhook.php (php -S {run_.get('php', '')}, 2 workers)")):
            r = run_.get(key, {})
            if "skipped" in r:
                rows.append(f"| {run_['fs']} | {name} | skipped: {r['skipped']} | | | | | | |")
                continue
            q = r["percentiles_us"]
            rows.append(f"| {run_['fs']} | {name} | {r['rps']:,.0f} | {fmt_ms(q['50'])} ms | {fmt_ms(q['90'])} ms | "
                        f"{fmt_ms(q['99'])} ms | {fmt_ms(q['99.9'])} ms | {r['stored']:,} | {r['non_2xx']} |")
        if "percentiles_us" in run_.get("reference", {}):
            ratio = run_["mailhook"]["rps"] / run_["reference"]["rps"]
            p99_ok = run_["mailhook"]["percentiles_us"]["99"] <= run_["reference"]["percentiles_us"]["99"]
            verdicts.append(fill(t["throughput.verdict"], fs=run_["fs"], ratio=ratio, p99="no worse" if p99_ok else "worse",
                                 verdict=verdict(ratio >= THROUGHPUT_PER_REFERENCE and p99_ok, smoke)))
    floor = th.get("floor")
    if floor:
        q = floor["percentiles_us"]
        rows.append(f"| none (stores nothing) | hyper floor (examples/http_floor.rs) | {floor['rps']:,.0f} | {fmt_ms(q['50'])} ms | "
                    f"{fmt_ms(q['90'])} ms | {fmt_ms(q['99'])} ms | {fmt_ms(q['99.9'])} ms | 0 | {floor['non_2xx']} |")
        fractions = [f"{run_['fs'].split(' (')[0]} {run_['mailhook']['rps'] / floor['rps']:.0%}" for run_ in th["runs"]
                     if "rps" in run_.get("mailhook", {})]
        verdicts.append(fill(t["throughput.floor"], floor=floor, fractions=", ".join(fractions)))
    plot = fill(t["throughput.plot"], plot_name=plot_name) if plot_name else ""
    return fill(t["throughput"], throughput=th, build="debug" if smoke else "release", rows="\n".join(rows),
                verdicts="\n".join(verdicts), plot=plot)


# The rows of the cost table: label, key in each of results["cost"]'s columns.
COST_ROWS = (
    ("Lambda requests", "lambda_requests"),
    ("Lambda duration, arm64 128 MB", "lambda_duration"),
    ("S3 PUT, one per event", "s3_puts"),
    ("CloudWatch Logs, the log and metrics lines of a request", "logs"),
    ("**total per million events**", "total"),
    ("S3 storage, per month kept", "s3_storage_month"),
)


def usd(amount):
    """Cents, or four decimals for what is less than a cent."""
    return f"${amount:.2f}" if amount >= 0.01 else f"${amount:.4f}"


def costs(t, results):
    billed = results["cost"]
    table = ["| | " + " | ".join(f"billed {b['billed_ms']} ms" for b in billed) + " |", "|---|" + "---:|" * len(billed)]
    table += [f"| {label} | " + " | ".join(usd(b[key]) for b in billed) + " |" for label, key in COST_ROWS]
    first, at_20 = billed[0], billed[1]
    return fill(t["cost"], table="\n".join(table), warm_ms=results["cold"]["warm_duration_ms"]["median"],
                line_bytes=results["line_bytes"], log_bytes=cost.log_bytes_per_request(results), at_20=at_20,
                lambda_usd=at_20["lambda_requests"] + at_20["lambda_duration"], firehose_usd=first["firehose_ingest"],
                firehose_total_usd=at_20["total"] - at_20["s3_puts"] + first["firehose_ingest"])


def compacted(t, c, smoke):
    b, a, r = c["before"], c["after"], c["run"]
    rate = c["events"] / r["wall_s"]
    money = compaction.cost(c)
    mb = money["memory_gb"] * 1024
    cpu_100k = r["cpu_s"] / c["events"] * 1e5
    vcpu = mb / 1769  # Lambda gives a full vCPU at 1,769 MB, and a share in proportion below it
    # One thread does the CPU work (gzip), so a share above one vCPU does not speed it up.
    cpu_per_event_s = r["cpu_s"] / c["events"]
    capacity_per_run = 840 * min(vcpu, 1.0) / cpu_per_event_s
    runs = compaction.runs_per_day()
    return fill(t["compaction"], c=c, before=b, after=a, run=r, cost=money, rate=rate,
                reads_before=b["objects"] + math.ceil(b["objects"] / 1000), reads_after=a["objects"] + 1,
                peak_mib=r["peak_rss_kib"] / 1024, s3_requests=", ".join(f"{v:,} {k}" for k, v in r["s3_requests"].items()),
                day_s=100_000 / rate, within=verdict(100_000 / rate <= COMPACTION_DAY_S, smoke, "within it", "NOT within it"),
                cpu_us_per_object=r["cpu_s"] / c["events"] * 1e6, cpu_100k_s=cpu_100k, memory_mb=mb, vcpu=vcpu,
                cpu_100k_lambda_s=cpu_100k / vcpu, runs_per_day=runs, capacity_per_run=capacity_per_run,
                capacity_per_day=capacity_per_run * runs, headroom=capacity_per_run * runs / 1e6,
                sized=verdict(capacity_per_run * runs >= 2e6, smoke, "at least 2×: met", "less than 2×: NOT met"),
                cpu_verdict=verdict(cpu_per_event_s * 1e6 <= COMPACTION_CPU_US, smoke))


def at_scale(t, s, smoke):
    runs = s["runs"]
    table = [f"| {n} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | {r['peak_rss_kib'] / 1024:.0f} MiB | "
             f"{r['answer']['merged']:,} |" for n, r in enumerate(runs, 1)]
    cpu_s = sum(r["cpu_s"] for r in runs)
    wall_s = sum(r["wall_s"] for r in runs)
    vcpu = s["memory_mb"] / 1769  # as in section 7: a full vCPU at 1,769 MB, one thread
    per_run = 840 * min(vcpu, 1.0) / (cpu_s / s["events"])
    per_day = per_run * compaction.runs_per_day()
    return fill(t["compaction_scale"], s=s, check=s["check"], table="\n".join(table), runs=len(runs),
                on_time=verdict(all(r["on_time"] for r in runs), smoke, "all on time", "NOT all on time"),
                peak_mib=max(r["peak_rss_kib"] for r in runs) / 1024, cpu_s=cpu_s, wall_s=wall_s,
                cpu_us=cpu_s / s["events"] * 1e6, rate=s["events"] / wall_s, vcpu=vcpu, per_run=per_run,
                runs_900=f"{math.ceil(s['events'] / per_run)} run" + ("s" if math.ceil(s['events'] / per_run) > 1 else ""), per_day=per_day, headroom=per_day / 1e6,
                sized=verdict(per_day >= 2e6, smoke, "at least 2×: met", "less than 2×: NOT met"))


def latency_svg(throughput_results, path):
    """Latency by percentile, mailhook against the reference on each file system, log scale."""
    runs = throughput_results.get("runs", [])
    series = [(run_["fs"].split(" (")[0].split(":")[0], key, run_[key]) for run_ in runs
              for key in ("mailhook", "reference") if "percentiles_us" in run_.get(key, {})]
    if not series:
        return False
    # Results from before wrk.lua reported the maximum carry a 0 there: leave that point out.
    series = [(fs, key, {**s, "percentiles_us": {p: v for p, v in s["percentiles_us"].items() if v > 0}})
              for fs, key, s in series]
    labels = list(series[0][2]["percentiles_us"].keys())
    values = [max(v, 1) / 1000 for _, _, s in series for v in s["percentiles_us"].values()]
    low, high = 10 ** math.floor(math.log10(min(values))), 10 ** math.ceil(math.log10(max(values)))
    width, height, left, right, top, bottom = 760, 420, 70, 250, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i):
        return left + plot_w * i / (len(labels) - 1)

    def y(ms):
        return top + plot_h * (1 - (math.log10(max(ms, low)) - math.log10(low)) / (math.log10(high) - math.log10(low)))

    colours = {"mailhook": "#d9480f", "reference": "#1c7ed6"}
    names = {"mailhook": "mailhook", "reference": "webhook.php"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">Latency by percentile: wrk, {throughput_results["connections"]} connections, '
        f'{throughput_results["seconds"]} s each, distinct events</text>',
    ]
    decade = low
    while decade <= high:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(decade):.1f}" y2="{y(decade):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y(decade) + 4:.1f}" text-anchor="end">{decade:g} ms</text>')
        decade *= 10
    for i, label in enumerate(labels):
        out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 18}" text-anchor="middle" font-size="10">{label}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 15}" text-anchor="middle">percentile</text>')
    for n, (fs, key, s) in enumerate(series):
        dash = "" if n < 2 else ' stroke-dasharray="6 4"'
        points = " ".join(f"{x(i):.1f},{y(v / 1000):.1f}" for i, v in enumerate(s["percentiles_us"].values()))
        out.append(f'<polyline fill="none" stroke="{colours[key]}" stroke-width="2.5"{dash} points="{points}"/>')
        out.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 40}" y1="{top + 16 + 38 * n}" y2="{top + 16 + 38 * n}" '
                   f'stroke="{colours[key]}" stroke-width="2.5"{dash}/>')
        out.append(f'<text x="{left + plot_w + 48}" y="{top + 20 + 38 * n}" fill="{colours[key]}">{names[key]}, {fs}</text>')
        out.append(f'<text x="{left + plot_w + 48}" y="{top + 35 + 38 * n}" fill="{colours[key]}">{s["rps"]:,.0f} req/s</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")
    return True
