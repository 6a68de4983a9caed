"""Stage 2, cold start: exec -> first poll of a stand-in Lambda Runtime API, mailhook against two
do-nothing lambda_http floors, without tracing (examples/floor_bare.rs, lambda-perf's shape) and
with it (examples/floor.rs); then Init + the first requests against a stand-in S3 on loopback,
counting the connections made during Init.

The processes are started with a plain Popen, not procs.start: the time from here to the first
poll is what is measured, and it should hold nothing but mailhook's own start."""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import procs
from common import ROOT, QuietServer, percentile


class Stand:
    """State shared by the stand-in Runtime API and the stand-in S3 for one process start."""

    def __init__(self, events=()):
        self.lock = threading.Lock()
        self.events = list(events)
        self.first_poll = threading.Event()
        self.first_poll_at = None
        self.handed_out = {}  # request id -> time handed out
        self.responses = []  # (request id, handed-out time, answered time, status)
        self.all_answered = threading.Event()
        self.s3_connections = []  # times
        self.s3_puts = 0
        self.ssm_reads = 0


STAND = Stand()
SSM_PARAMETER = "/bench/webhook-tokens"


class NoDelay(BaseHTTPRequestHandler):
    """Headers and body leave in separate writes; without TCP_NODELAY, Nagle's algorithm and the
    client's delayed ACK would add 40 ms to every answer, which the real services do not."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RuntimeApi(NoDelay):

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        stand = STAND
        with stand.lock:
            if stand.first_poll_at is None:
                stand.first_poll_at = time.perf_counter()
                stand.first_poll.set()
            event = stand.events.pop(0) if stand.events else None
        if event is None:
            time.sleep(5)  # hold the poll; the process is killed once the times are taken
            return
        request_id, body = event
        stand.handed_out[request_id] = time.perf_counter()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 10_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:mailhook")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        stand = STAND
        answered = time.perf_counter()
        payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        match = re.search(r"/runtime/invocation/([^/]+)/(response|error)$", self.path)
        status = None
        if match and match.group(2) == "response":
            status = json.loads(payload).get("statusCode")
        if match:
            request_id = match.group(1)
            stand.responses.append((request_id, stand.handed_out.get(request_id), answered, status))
            if not stand.events and len(stand.responses) == len(stand.handed_out):
                stand.all_answered.set()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class FakeS3(NoDelay):
    """Answers every PUT like S3 does, and SSM's GetParameter (the tokens, WEBHOOK_TOKENS_PARAMETER)
    like SSM does; counts connections, so Init's network use shows."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("X-Amz-Target") != "AmazonSSM.GetParameter":
            self.send_error(400)
            return
        STAND.ssm_reads += 1
        body = json.dumps({"Parameter": {"Name": SSM_PARAMETER, "Type": "SecureString", "Value": "example-token",
                                         "Version": 1, "DataType": "text"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def setup(self):
        STAND.s3_connections.append(time.perf_counter())
        super().setup()

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        STAND.s3_puts += 1
        self.send_response(200)
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(handler):
    server = QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def invocation(i):
    event = json.loads((ROOT / "events" / "new.json").read_text())
    body = json.loads(event["body"])
    body["uid"] = 1_000_000 + i
    body["tstamp"] = int(time.time())
    event["body"] = json.dumps(body, ensure_ascii=False)
    event["requestContext"]["requestId"] = f"bench-{i}"
    return f"bench-{i}", json.dumps(event).encode()


def start_once(binary, env, invocations=0):
    """One process start. Returns (ms to first poll, ms to each answer, S3 connections before the
    first poll, statuses)."""
    global STAND
    STAND = Stand(invocation(i) for i in range(invocations))
    started = time.perf_counter()
    logs = subprocess.PIPE if invocations else subprocess.DEVNULL
    process = subprocess.Popen([binary], env=env, stdout=logs, stderr=subprocess.DEVNULL)
    try:
        if not STAND.first_poll.wait(20):
            sys.exit(f"{binary} never polled the Runtime API")
        if invocations and not STAND.all_answered.wait(20):
            process.kill()
            sys.exit(f"{binary} did not answer its {invocations} invocations; answered {STAND.responses}, "
                     f"its log ends:\n{process.stdout.read().decode()[-3000:]}")
    finally:
        process.kill()
        process.wait()
    log_lines = process.stdout.read().decode().splitlines() if invocations else []
    request_lines = [line for line in log_lines if '"request_id"' in line]
    poll_ms = (STAND.first_poll_at - started) * 1000
    answers = sorted(STAND.responses, key=lambda r: r[2])
    init_connections = sum(1 for t in STAND.s3_connections if t < STAND.first_poll_at)
    return {
        "poll_ms": poll_ms,
        "answered_ms": [(r[2] - started) * 1000 for r in answers],
        "durations_ms": [(r[2] - r[1]) * 1000 for r in answers if r[1]],
        "statuses": [r[3] for r in answers],
        "init_connections": init_connections,
        "s3_puts": STAND.s3_puts,
        "ssm_reads": STAND.ssm_reads,
        "log_bytes": [len(line) + 1 for line in request_lines],
    }


def measure(profile, runs):
    out = ROOT / "target" / ("debug" if profile == "dev" else profile)
    runtime, s3 = serve(RuntimeApi), serve(FakeS3)
    base = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": "mailhook",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "example",
        "AWS_SESSION_TOKEN": "example",
        "WEBHOOK_TOKENS": "example-token",
        "ACCOUNT_ID": "123456",
        "ARCHIVE_URI": "s3://example-bucket/mail/",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3.server_address[1]}",
        "S3_FORCE_PATH_STYLE": "true",
    }
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
        log_bytes.extend(once["log_bytes"])
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
    # Lambda's JSON log line per request, as CloudWatch Logs ingests it (the platform adds its own
    # START/END/REPORT lines, which every function pays for alike).
    results["log_bytes_per_request"] = statistics.mean(log_bytes) if log_bytes else None
    runtime.shutdown()
    s3.shutdown()
    return results

