"""A stand-in Lambda Runtime API handing out function URL events, and a stand-in S3 that answers
every PUT, for the stages that start a function as Lambda does (cold.py, billed.py).

A start is one process: `start_once` execs it, hands it `invocations` events built from
events/new.json, and times its first poll and each answer; given `cpu` (a reading of the
process's CPU time in ns, from its cgroup), it also reads the CPU at those moments. The S3 can be
served behind TLS (`serve(FakeS3, tls=...)`)."""

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

from common import ROOT, QuietServer


class Stand:
    """State shared by the stand-in Runtime API and the stand-in S3 for one process start."""

    def __init__(self, events=(), cpu=None, gap=0.0):
        self.lock = threading.Lock()
        self.events = list(events)
        self.cpu = cpu or (lambda: None)  # the process's CPU time so far, in ns
        self.gap = gap  # seconds between an answer and the next event handed out
        self.first_poll = threading.Event()
        self.first_poll_at = None
        self.first_poll_cpu = None
        self.handed_out = {}  # request id -> (time handed out, CPU then)
        self.responses = []  # (request id, handed-out time, answered time, status, CPU handed out, CPU answered)
        self.all_answered = threading.Event()
        self.s3_connections = []  # times
        self.s3_puts = 0
        self.ssm_reads = 0


SSM_PARAMETER = "/bench/webhook-tokens"


STAND = Stand()


class NoDelay(BaseHTTPRequestHandler):
    """Headers and body leave in separate writes; without TCP_NODELAY, Nagle's algorithm and the
    client's delayed ACK would add 40 ms to every answer, which the real services do not."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class RuntimeApi(NoDelay):
    """Each connection serves the start during which it was opened: a killed process's last poll
    can still be read after the next start has begun, and must not take that start's events."""

    def setup(self):
        self.stand = STAND
        super().setup()

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        stand = self.stand
        with stand.lock:
            if stand.first_poll_at is None:
                stand.first_poll_cpu = stand.cpu()
                stand.first_poll_at = time.perf_counter()
                stand.first_poll.set()
            elif stand.gap and stand.events:
                # A warm invocation comes some time after the last one, as webhooks do: under a CPU
                # quota, one right after another would pay for the previous one's CPU.
                time.sleep(stand.gap)
            event = stand.events.pop(0) if stand.events else None
        if event is None:
            time.sleep(5)  # hold the poll; the process is killed once the times are taken
            return
        request_id, body = event
        stand.handed_out[request_id] = (time.perf_counter(), stand.cpu())
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 10_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:mailhook")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        stand = self.stand
        answered, cpu = time.perf_counter(), stand.cpu()
        payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        match = re.search(r"/runtime/invocation/([^/]+)/(response|error)$", self.path)
        status = None
        if match and match.group(2) == "response":
            status = json.loads(payload).get("statusCode")
        if match:
            request_id = match.group(1)
            handed_out, handed_out_cpu = stand.handed_out.get(request_id, (None, None))
            stand.responses.append((request_id, handed_out, answered, status, handed_out_cpu, cpu))
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

    def setup(self):
        self.stand = STAND
        self.stand.s3_connections.append(time.perf_counter())
        super().setup()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("X-Amz-Target") != "AmazonSSM.GetParameter":
            self.send_error(400)
            return
        self.stand.ssm_reads += 1
        body = json.dumps({"Parameter": {"Name": SSM_PARAMETER, "Type": "SecureString", "Value": "example-token",
                                         "Version": 1, "DataType": "text"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.stand.s3_puts += 1
        self.send_response(200)
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class TlsServer(QuietServer):
    """A stand-in server behind TLS: each connection's handshake runs in its own handler thread."""

    def __init__(self, address, handler, context):
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that does not trust the certificate; its own error says so
        super().finish_request(request, client_address)


def serve(handler, tls=None):
    """`handler` on a loopback port, behind TLS when `tls` is an ssl.SSLContext."""
    server = TlsServer(("127.0.0.1", 0), handler, tls) if tls else QuietServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def lambda_env(runtime, s3_endpoint):
    """The environment Lambda gives a 128 MB function (the role's keys included), with mailhook's
    settings and its S3 at `s3_endpoint`; `runtime` is the stand-in Runtime API's server."""
    return {
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
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "S3_FORCE_PATH_STYLE": "true",
    }


def invocation(i):
    event = json.loads((ROOT / "events" / "new.json").read_text())
    body = json.loads(event["body"])
    body["uid"] = 1_000_000 + i
    body["tstamp"] = int(time.time())
    event["body"] = json.dumps(body, ensure_ascii=False)
    event["requestContext"]["requestId"] = f"bench-{i}"
    return f"bench-{i}", json.dumps(event).encode()


def start_once(binary, env, invocations=0, cpu=None, gap=0.0, preexec_fn=None):
    """One process start, `preexec_fn` (joining a cgroup) run in the child before its exec, and
    invocations handed out `gap` seconds after the last answer. Returns ms to the first
    poll and to each answer, each invocation's duration, S3 connections before the first poll,
    statuses; with `cpu`, the CPU ms to the first poll and to the first answer, and each
    invocation's."""
    global STAND
    STAND = Stand((invocation(i) for i in range(invocations)), cpu, gap)
    logs = subprocess.PIPE if invocations else subprocess.DEVNULL
    if preexec_fn is None:
        cpu_before = STAND.cpu()
        started = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdout=logs, stderr=subprocess.DEVNULL)
    else:
        # Joining a cgroup (a write to cgroup.procs) can take tens of ms, the kernel waiting for
        # RCU: a shell runs `preexec_fn`, says it is ready, and execs the function when told, so
        # the time and CPU measured start there, `gap` later.
        process = subprocess.Popen(["/bin/sh", "-c", 'echo >&2; read go; exec "$0" 2>/dev/null', binary], env=env,
                                   stdin=subprocess.PIPE, stdout=logs, stderr=subprocess.PIPE, preexec_fn=preexec_fn)
        process.stderr.readline()
        # The shell's start spent some of this period's CPU quota: with `gap`, a new period begins.
        time.sleep(gap)
        cpu_before = STAND.cpu()
        started = time.perf_counter()
        process.stdin.write(b"go\n")
        process.stdin.flush()
    try:
        if not STAND.first_poll.wait(20):
            sys.exit(f"{binary} never polled the Runtime API")
        if invocations and not STAND.all_answered.wait(20 + invocations * gap):
            process.kill()
            sys.exit(f"{binary} did not answer its {invocations} invocations; answered {STAND.responses}, "
                     f"its log ends:\n{process.stdout.read().decode()[-3000:]}")
    finally:
        process.kill()
        process.wait()
    log_lines = process.stdout.read().decode().splitlines() if invocations else []
    # What each request writes: its log line (with its request id) and its EMF metrics line.
    request_lines = [line for line in log_lines if '"request_id"' in line or '"_aws"' in line]
    poll_ms = (STAND.first_poll_at - started) * 1000
    answers = sorted(STAND.responses, key=lambda r: r[2])
    init_connections = sum(1 for t in STAND.s3_connections if t < STAND.first_poll_at)
    once = {
        "poll_ms": poll_ms,
        "answered_ms": [(r[2] - started) * 1000 for r in answers],
        "durations_ms": [(r[2] - r[1]) * 1000 for r in answers if r[1]],
        "statuses": [r[3] for r in answers],
        "init_connections": init_connections,
        "s3_puts": STAND.s3_puts,
        "ssm_reads": STAND.ssm_reads,
        "log_bytes": sum(len(line.encode()) + 1 for line in request_lines) / len(answers) if answers else None,
    }
    if cpu_before is not None:
        once["poll_cpu_ms"] = (STAND.first_poll_cpu - cpu_before) / 1e6
        once["answered_cpu_ms"] = [(r[5] - cpu_before) / 1e6 for r in answers]
        once["cpu_ms"] = [(r[5] - r[4]) / 1e6 for r in answers if r[4] is not None]
    return once
