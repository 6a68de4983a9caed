#!/usr/bin/env python3
"""Cold start: time from exec to the first poll for work on a stand-in Lambda Runtime API, for
mailhook (configuration loaded, S3 client built) and for a do-nothing lambda_http function built
with the same profile (the floor). Prints the median of N runs of each.

    bench/coldstart.py [--runs 20] [--profile release]
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
first_poll = threading.Event()


class RuntimeApi(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            first_poll.set()
        # Hold the poll open; the process is killed once the time is taken.
        time.sleep(5)

    def log_message(self, *args):
        pass


def measure(binary, env, runs):
    times = []
    for _ in range(runs):
        first_poll.clear()
        started = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not first_poll.wait(10):
            process.kill()
            sys.exit(f"{binary} never polled for work")
        times.append((time.perf_counter() - started) * 1000)
        process.kill()
        process.wait()
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--profile", default="release")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE added to both runs")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--quiet", "--profile", args.profile, "--bin", "mailhook", "--example", "floor"], cwd=ROOT, check=True)
    out = ROOT / "target" / ("debug" if args.profile == "dev" else args.profile)

    server = ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lambda_env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
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
    }
    lambda_env.update(item.split("=", 1) for item in args.env)
    results = {}
    for name, binary in [("floor", out / "examples/floor"), ("mailhook", out / "mailhook")]:
        measure(str(binary), lambda_env, 2)  # warm the page cache
        times = measure(str(binary), lambda_env, args.runs)
        results[name] = statistics.median(times)
        print(f"{name:>8}: median {results[name]:.2f} ms over {args.runs} runs (min {min(times):.2f}, max {max(times):.2f})")
    print(f"mailhook / floor: {results['mailhook'] / results['floor']:.2f}x")
    server.shutdown()


if __name__ == "__main__":
    main()
