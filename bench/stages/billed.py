"""Stage 2b, billed time and CPU at 128 MB as deployed: four functions side by side under the CPU
share and memory Lambda gives 128 MB, storing to an S3 behind TLS.

- The share: a cgroup CPU quota of 128/1769 of a vCPU (7,236 µs per 100 ms period, and again
  1,447 µs per 20 ms: Lambda does not publish its period) and a 128 MiB memory limit; cgroup v1
  (cpu, cpuacct and memory hierarchies) or v2 (cpu.max, memory.max), whichever the machine has.
- S3: bench/lambda_stand.py's stand-in behind TLS on loopback, its certificate from a test chain
  of RSA-2048 keys as real S3's (root -> intermediate -> server), made with openssl; each
  function trusts the root through SSL_CERT_FILE (mailhook reads it for any endpoint but AWS's;
  the SDK's default client reads it through rustls-native-certs).
- The functions: mailhook; "naive", what a user would write instead (bench/functions/naive:
  lambda_http, aws-config and aws-sdk-s3 with default features, so rustls on AWS-LC); the SDK
  floor (bench/functions/sdk_floor: mailhook's SDK features, ring, a put_object and nothing
  else); and the do-nothing floor (examples/floor_bare.rs).
- Each cold start (exec -> first answer; Init = exec -> first poll) is followed by warm
  invocations (event handed out -> answer), each handed out a period after the last answer so
  that it does not pay for its predecessor's CPU. Wall time, and CPU time from the cgroup's
  usage counter read at those moments. Interleaved: each round starts every function once.
"""

import os
import shutil
import ssl
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import procs
from common import ROOT, percentile, run
from lambda_stand import SSM_PARAMETER, FakeS3, RuntimeApi, lambda_env, serve, start_once

MEMORY_BYTES = 128 * 1024 * 1024
SHARE = 128 / 1769  # of a vCPU: Lambda gives a full one at 1,769 MB
PERIODS_US = (100_000, 20_000)
FUNCTIONS_DIR = ROOT / "bench" / "functions"


class Cgroup:
    """One cgroup with a CPU quota and a memory limit, on v2 or v1: `join` (in a child before its
    exec) puts a process in it, `usage_ns` is the CPU time of everything that ran in it."""

    def __init__(self, name):
        self.dirs = []
        unified = Path("/sys/fs/cgroup")
        if (unified / "cgroup.controllers").exists():
            self.version = 2
            # v2 lets no process sit in a cgroup whose controllers its children use: under the root
            # (which is exempt), with cpu and memory handed down to children.
            wanted = {"cpu", "memory"}
            if not wanted <= set((unified / "cgroup.controllers").read_text().split()):
                raise OSError("cgroup v2 without the cpu and memory controllers")
            (unified / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in sorted(wanted)))
            self.dirs = [unified / name]
        else:
            self.version = 1
            own = dict(line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines())
            for controller in ("cpu", "cpuacct", "memory"):
                mount = unified / controller
                if not mount.is_dir():
                    raise OSError(f"no cgroup v2 and no v1 {controller} hierarchy at {mount}")
                # Under this process's own cgroup of that hierarchy, so whatever limits it stay.
                parent = next((mount / path.lstrip("/") for key, path in own.items() if controller in key.split(",")), mount)
                self.dirs.append((parent if parent.is_dir() else mount) / name)

    def create(self):
        for d in self.dirs:
            d.mkdir(exist_ok=True)
        if self.version == 2:
            (self.dirs[0] / "memory.max").write_text(str(MEMORY_BYTES))
            if (self.dirs[0] / "memory.swap.max").exists():
                (self.dirs[0] / "memory.swap.max").write_text("0")
            self.usage_file = self.dirs[0] / "cpu.stat"
        else:
            (self.dirs[2] / "memory.limit_in_bytes").write_text(str(MEMORY_BYTES))
            self.usage_file = self.dirs[1] / "cpuacct.usage"

    def quota(self, period_us):
        """128 MB's share of a CPU in each period of `period_us`."""
        quota_us = round(SHARE * period_us)
        if self.version == 2:
            (self.dirs[0] / "cpu.max").write_text(f"{quota_us} {period_us}")
        else:
            # The quota may not exceed what a new period allows: set it last when it shrinks.
            (self.dirs[0] / "cpu.cfs_quota_us").write_text("-1")
            (self.dirs[0] / "cpu.cfs_period_us").write_text(str(period_us))
            (self.dirs[0] / "cpu.cfs_quota_us").write_text(str(quota_us))
        return quota_us

    def join(self):
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))

    def usage_ns(self):
        text = self.usage_file.read_text()
        if self.version == 1:
            return int(text)
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith("usage_usec"))) * 1000

    def throttled(self):
        """Periods in which the quota ran out, so far."""
        stat = (self.dirs[0] / "cpu.stat").read_text().split()
        return int(stat[stat.index("nr_throttled") + 1])

    def remove(self):
        for d in filter(Path.exists, self.dirs):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:  # the last killed process is still leaving
                    time.sleep(0.05)


def test_chain(directory):
    """A root, an intermediate and a server certificate for 127.0.0.1, RSA-2048 keys as S3's
    chain has: (the root's PEM file, an ssl context serving server + intermediate)."""
    d = Path(directory)

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for name in ("root", "intermediate", "server"):
        openssl("genrsa", "-out", f"{name}.key", "2048")
    (d / "ca.ext").write_text("basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n")
    (d / "server.ext").write_text("basicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-x509", "-new", "-key", "root.key", "-subj", "/CN=bench root", "-days", "2", "-sha256",
            "-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", "root.pem")
    for name, issuer, ext in (("intermediate", "root", "ca.ext"), ("server", "intermediate", "server.ext")):
        openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN=bench {name}", "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key", "-CAcreateserial",
                "-days", "2", "-sha256", "-extfile", ext, "-out", f"{name}.pem")
    (d / "chain.pem").write_text((d / "server.pem").read_text() + (d / "intermediate.pem").read_text())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "chain.pem", d / "server.key")
    return d / "root.pem", context


def build_functions(profile, smoke):
    """Builds the naive function and the SDK floor into the repository's target/ (shared with
    mailhook's build, so the SDK floor reuses what it can). Returns {name: binary or why not}."""
    built = {}
    for name in ("sdk_floor", "naive"):
        if smoke and name == "naive":
            # Its default features compile aws-lc-sys: minutes of C for a smoke run.
            built[name] = "not built in a smoke run (aws-lc-sys takes minutes to compile)"
            continue
        manifest = FUNCTIONS_DIR / name / "Cargo.toml"
        run(["cargo", "build", "--locked", "--profile", profile, "--manifest-path", manifest, "--target-dir", ROOT / "target"])
        built[name] = ROOT / "target" / ("debug" if profile == "dev" else profile) / name
    return built


def summary(values):
    return {"median": statistics.median(values), "p90": percentile(values, 90)}


def measure(profile, starts, warm, periods=PERIODS_US, smoke=False):
    if not shutil.which("openssl"):
        return {"skipped": "needs openssl, for the test CA"}
    cgroup = None
    try:
        cgroup = Cgroup(f"mailhook-bench-{os.getpid()}")
        cgroup.create()
        subprocess.run(["true"], preexec_fn=cgroup.join, check=True)  # a process can join it
    except (OSError, subprocess.SubprocessError) as e:
        return {"skipped": f"needs a writable cgroup v1 or v2 hierarchy with cpu and memory, as root ({e})"}
    else:
        return measured(cgroup, profile, starts, warm, periods, smoke)
    finally:
        if cgroup:
            cgroup.remove()


def measured(cgroup, profile, starts, warm, periods, smoke):
    out = ROOT / "target" / ("debug" if profile == "dev" else profile)
    built = build_functions(profile, smoke)
    functions = [("mailhook", out / "mailhook"), ("mailhook_ssm", out / "mailhook"), ("naive", built["naive"]),
                 ("sdk_floor", built["sdk_floor"]), ("floor", out / "examples" / "floor_bare")]
    results = {"profile": profile, "cgroup": f"v{cgroup.version}", "starts": starts, "warm_per_start": warm,
               "memory_bytes": MEMORY_BYTES, "left_out": {}, "periods": []}
    for name, binary in functions:
        if not isinstance(binary, Path):
            results["left_out"][name] = binary
            procs.log(f"billed: {name} skipped: {binary}")
    functions = [(name, binary) for name, binary in functions if isinstance(binary, Path)]
    scratch = tempfile.mkdtemp(prefix="billed-")
    try:
        root_pem, tls = test_chain(scratch)
        runtime, s3 = serve(RuntimeApi), serve(FakeS3, tls=tls)
        env = {**lambda_env(runtime, f"https://127.0.0.1:{s3.server_address[1]}"), "SSL_CERT_FILE": str(root_pem),
               "BUCKET": "example-bucket"}
        # mailhook with the template's default TokenStore: its tokens read from SSM (the same
        # stand-in, behind the same TLS) on the first webhook request, over a connection of its own.
        envs = {"mailhook_ssm": {**env, "WEBHOOK_TOKENS": "", "WEBHOOK_TOKENS_PARAMETER": SSM_PARAMETER,
                                 "AWS_ENDPOINT_URL_SSM": env["AWS_ENDPOINT_URL_S3"]}}
        for period_us in periods:
            quota_us = cgroup.quota(period_us)
            gap = period_us / 1e6 + 0.01
            samples = {name: {"init": [], "init_cpu": [], "cold": [], "cold_cpu": [], "warm": [], "warm_cpu": [], "throttled": [],
                              "warm_cpu_by_start": []}
                       for name, _ in functions}
            for _ in range(starts):
                for name, binary in functions:
                    throttled = cgroup.throttled()
                    once = start_once(str(binary), envs.get(name, env), invocations=1 + warm, cpu=cgroup.usage_ns, gap=gap, preexec_fn=cgroup.join)
                    if once["statuses"] != [200] * (1 + warm):
                        raise SystemExit(f"{name} answered {once['statuses']} to {1 + warm} new events")
                    s = samples[name]
                    s["init"].append(once["poll_ms"])
                    s["init_cpu"].append(once["poll_cpu_ms"])
                    s["cold"].append(once["answered_ms"][0])
                    s["cold_cpu"].append(once["answered_cpu_ms"][0])
                    s["warm"].extend(once["durations_ms"][1:])
                    s["warm_cpu"].extend(once["cpu_ms"][1:])
                    s["warm_cpu_by_start"].append([round(ms, 4) for ms in once["cpu_ms"][1:]])
                    s["throttled"].append(cgroup.throttled() - throttled)
            rows = []
            for name, _ in functions:
                s = samples[name]
                rows.append({"name": name, **{k: summary(v) for k, v in s.items() if k not in ("throttled", "warm_cpu_by_start")},
                             "throttled_periods_per_start": statistics.mean(s["throttled"]),
                             # Per start, in order, for the report's intervals: the starts are the
                             # unit that varies (one start's warm medians spread by ±15 %).
                             "cold_cpu_by_start": [round(ms, 4) for ms in s["cold_cpu"]],
                             "warm_cpu_by_start": s["warm_cpu_by_start"]})
                procs.log(f"billed {period_us // 1000} ms period, {name}: cold {rows[-1]['cold']['median']:.1f} ms "
                          f"({rows[-1]['cold_cpu']['median']:.2f} ms CPU), warm {rows[-1]['warm']['median']:.2f} ms "
                          f"({rows[-1]['warm_cpu']['median']:.2f} ms CPU)")
            results["periods"].append({"period_us": period_us, "quota_us": quota_us, "functions": rows})
        runtime.shutdown()
        s3.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return results
