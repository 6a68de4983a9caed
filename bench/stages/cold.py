"""Stage 2, cold start: exec -> first poll of a stand-in Lambda Runtime API, mailhook against two
do-nothing lambda_http floors, without tracing (examples/floor_bare.rs, lambda-perf's shape) and
with it (examples/floor.rs); then Init + the first requests against a stand-in S3 on loopback,
counting the connections made during Init. The stand-ins are bench/lambda_stand.py's.

The processes are started with a plain Popen, not procs.start: the time from here to the first
poll is what is measured, and it should hold nothing but mailhook's own start."""

import statistics
import sys
from pathlib import Path

import procs
from common import ROOT, percentile
from lambda_stand import SSM_PARAMETER, FakeS3, RuntimeApi, lambda_env, serve, start_once


def measure(profile, runs):
    out = ROOT / "target" / ("debug" if profile == "dev" else profile)
    runtime, s3 = serve(RuntimeApi), serve(FakeS3)
    base = lambda_env(runtime, f"http://127.0.0.1:{s3.server_address[1]}")
    bundle = next((p for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt") if Path(p).exists()), None)
    # The stand-in S3 is plain http, so mailhook trusts the compiled-in Amazon Trust Services
    # roots, as it does on AWS's own endpoints. An https endpoint of another store makes it load
    # the platform's roots instead: nothing listens there, and nothing connects during Init.
    elsewhere = {"AWS_ENDPOINT_URL_S3": "https://127.0.0.1:9/"}
    variants = [
        ("floor: do-nothing lambda_http, no tracing (lambda-perf's hello)", out / "examples" / "floor_bare", {}),
        ("floor with mailhook's tracing setup", out / "examples" / "floor", {}),
        ("mailhook, another https endpoint, default trust store", out / "mailhook", elsewhere),
    ]
    if bundle:
        variants.append(("mailhook, another https endpoint, SSL_CERT_FILE's bundle", out / "mailhook",
                         {**elsewhere, "SSL_CERT_FILE": bundle}))
    # The template's default: the tokens in an SSM parameter, read on the first webhook request.
    from_ssm = {"WEBHOOK_TOKENS": "", "WEBHOOK_TOKENS_PARAMETER": SSM_PARAMETER,
                "AWS_ENDPOINT_URL_SSM": base["AWS_ENDPOINT_URL_S3"]}
    variants.append(("mailhook, tokens from an SSM parameter (TokenStore=SsmParameter)", out / "mailhook",
                     {**from_ssm, "SSL_CERT_FILE": bundle} if bundle else from_ssm))
    # Last: the report and the Init + first request runs below take it as the deployed one.
    variants.append(("mailhook, AWS's endpoint: Amazon Trust Services roots (as deployed)", out / "mailhook",
                     {"SSL_CERT_FILE": bundle} if bundle else {}))
    results = {"runs": runs, "profile": profile, "bundle": bundle, "variants": []}
    polls = {name: [] for name, _, _ in variants}
    for round_ in range(runs + 2):
        # Interleaved, so that whatever else the machine does falls on every variant alike; the
        # first two rounds only warm the page cache.
        for name, binary, extra in variants:
            poll_ms = start_once(str(binary), {**base, **extra})["poll_ms"]
            if round_ >= 2:
                polls[name].append(poll_ms)
    for name, times in polls.items():
        results["variants"].append({"name": name, "median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)})
        procs.log(f"cold start {name}: median {statistics.median(times):.2f} ms")
    # Init + the first request (and the warm ones after it), as deployed, with the tokens in the
    # environment and then in an SSM parameter, interleaved.
    env = {**base, **variants[-1][2]}
    ssm_env = {**env, **from_ssm}
    firsts, warm, connections, puts, log_bytes = [], [], [], 0, []
    ssm_firsts, ssm_warm, ssm_reads = [], [], 0
    for _ in range(runs):
        once = start_once(str(out / "mailhook"), env, invocations=5)
        if once["statuses"] != [200] * 5:
            sys.exit(f"mailhook answered {once['statuses']} to five new events")
        firsts.append(once["answered_ms"][0])
        warm.extend(once["durations_ms"][1:])
        connections.append(once["init_connections"])
        puts += once["s3_puts"]
        if once["log_bytes"] is not None:
            log_bytes.append(once["log_bytes"])
        once = start_once(str(out / "mailhook"), ssm_env, invocations=5)
        if once["statuses"] != [200] * 5:
            sys.exit(f"mailhook with its tokens in SSM answered {once['statuses']} to five new events")
        ssm_firsts.append(once["answered_ms"][0])
        ssm_warm.extend(once["durations_ms"][1:])
        ssm_reads += once["ssm_reads"]
    results["first_request_ms"] = statistics.median(firsts)
    results["warm_duration_ms"] = {"median": statistics.median(warm), "p99": percentile(warm, 99), "max": max(warm)}
    results["init_connections"] = max(connections)
    results["s3_puts"] = puts
    results["ssm_tokens"] = {
        "first_request_ms": statistics.median(ssm_firsts),
        "warm_median_ms": statistics.median(ssm_warm),
        "reads_per_start": ssm_reads / runs,
    }
    # What mailhook writes per request, as CloudWatch Logs ingests it: the JSON log line and the
    # EMF metrics line (the platform adds its own START/END/REPORT lines, which every function
    # pays for alike).
    results["log_bytes_per_request"] = statistics.mean(log_bytes) if log_bytes else None
    runtime.shutdown()
    s3.shutdown()
    return results

