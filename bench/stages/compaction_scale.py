"""Stage 8, compaction at scale: one partition of millions of objects, compacted by as many runs
of the compaction function as it takes.

The store is examples/s3_memory.rs: an S3 in memory, served through s3s, so mailhook's own SDK
client talks to it as to S3, with every LIST page answered after LIST_DELAY_MS (S3's pages take
tens to hundreds of ms). It holds EVENTS objects under one `dt=` prefix, each a line as the
receiver stores it. Each run is the real binary as the compaction function (`_HANDLER=compact`)
under a stand-in Lambda Runtime API, started afresh (as a scheduled run six hours after the
last gets a new sandbox) and handed one invocation whose deadline is TIMEOUT_S away. Runs follow
one another until one finishes the partition. Per run: wall time from the invocation to its
answer, CPU time and peak RSS of the process (wait4). At the end the store checks that every
event is in a merged object exactly once and that no per-event object is left.

A timeout shorter than the template's 900 s makes several runs of a partition that one run of
900 s might finish: it shows each run stopping on time and the next going on; the report scales
the measured work to 900 s runs.
"""

import datetime
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler

import procs
from common import ROOT, QuietServer

LIST_DELAY_MS = 100
BUCKET = "bench-archive"
FUNCTION = "mailhook-compact"
MEMORY_MB = 1024  # the template's CompactFunction


class RuntimeApi(BaseHTTPRequestHandler):
    """One invocation for each process that polls: the event, then its answer."""

    protocol_version = "HTTP/1.1"
    pending = []  # (request id, deadline in Unix ms, body)
    answers = {}
    answered = threading.Event()

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next") or not RuntimeApi.pending:
            time.sleep(600)  # hold the poll; the process is killed once it has answered
            return
        request_id, deadline_ms, body = RuntimeApi.pending.pop()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline_ms))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        payload = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        parts = self.path.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-1] in ("response", "error"):
            RuntimeApi.answers[parts[-2]] = (parts[-1], json.loads(payload or b"null"))
            RuntimeApi.answered.set()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def measure(binary, events, timeout_s, max_runs):
    store_bin = binary.parent / "examples" / "s3_memory"
    day = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)).date()
    port = procs.free_port()
    started = time.monotonic()
    store = subprocess.Popen([str(store_bin), str(port), str(events), str(day), str(LIST_DELAY_MS)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    if store.stdout.readline().strip() != "ready":
        return {"skipped": "the in-memory store did not start"}
    procs.log(f"compaction at scale: {events:,} objects in the store in {time.monotonic() - started:.0f} s")
    api = QuietServer(("127.0.0.1", 0), RuntimeApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
        "_HANDLER": "compact",
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_MB),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "WARN",
        "ARCHIVE_URI": f"s3://{BUCKET}/mail/",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "S3_FORCE_PATH_STYLE": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    event = json.dumps({"through": str(day), "min_age_seconds": 0}).encode()
    runs = []
    try:
        for n in range(1, max_runs + 1):
            request_id = f"run-{n}"
            RuntimeApi.answered.clear()
            handed = time.time()
            RuntimeApi.pending.append((request_id, int((handed + timeout_s) * 1000), event))
            function = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
            if not RuntimeApi.answered.wait(timeout_s + 60):
                function.kill()
                return {"skipped": f"run {n} gave no answer within {timeout_s + 60} s"}
            wall = time.time() - handed
            function.kill()
            _, _, usage = os.wait4(function.pid, 0)
            kind, answer = RuntimeApi.answers[request_id]
            run = {"wall_s": round(wall, 2), "on_time": wall <= timeout_s,
                   "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_kib": usage.ru_maxrss, "answer": answer}
            runs.append(run)
            procs.log(f"compaction at scale: run {n}: {json.dumps(run)}")
            if kind != "response":
                return {"skipped": f"run {n} failed: {answer}"}
            if answer.get("left_for_next_run") == 0:
                break
        store.stdin.close()
        check = json.loads(store.stdout.readline())
    finally:
        api.shutdown()
        if store.poll() is None:
            store.kill()
        store.wait()
    if runs[-1]["answer"].get("left_for_next_run") != 0:
        return {"skipped": f"the partition was not done after {max_runs} runs"}
    if check["per_event_left"] or check["merged_lines"] != events or check["distinct_events"] != events:
        return {"skipped": f"the partition is not each event once at the end: {check}"}
    return {"events": events, "timeout_s": timeout_s, "list_delay_ms": LIST_DELAY_MS, "memory_mb": MEMORY_MB,
            "runs": runs, "check": check}
