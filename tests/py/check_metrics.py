#!/usr/bin/env python3
"""Checks a real scrape of /metrics with Prometheus's own linter, `promtool check metrics`.

The local server (S3 archive on moto_server, METRICS_ADDR set) serves requests of each outcome it
can have in S3: stored, duplicate, rejected, and failed (moto stopped). `busy` (the local
directory writer's queue full) cannot be caused on demand; its series is there at 0. Then one
scrape, asking for the Prometheus text format (`Accept: text/plain;version=0.0.4`), the only
format promtool reads:

- Its counts, read with the Prometheus client's OpenMetrics parser, match the requests.
- /metrics serves 0.0.4 text unless OpenMetrics is asked for, and the scrape goes to promtool as
  it is: any problem fails.
- A saved OpenMetrics body (--scrape), which promtool reads as 0.0.4 text: OpenMetrics names a counter's
  family without `_total` in HELP and TYPE, so promtool sees each `_total` sample as a metric
  with no help text. That misreading, and nothing else, is allowed on the scrape as served; the
  same families, re-encoded as 0.0.4 text by the Prometheus client, must then pass promtool.

Usage: tests/py/check_metrics.py [--binary target/debug/mailhook] [--scrape FILE [--text]]
(--scrape checks a saved scrape body instead, as OpenMetrics or, with --text, as 0.0.4 text, to
show a broken one fails.)
Run by tests/all.sh inside .venv (moto, prometheus-client); needs promtool (Debian: prometheus).
"""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

import local_s3
import procs
from checks import Checks

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token"
ASK = "text/plain;version=0.0.4"


def event(uid):
    return json.dumps({"mailbox": "info@example.com", "uid": uid, "tstamp": 1795711572, "event": "new",
                       "folder": "INBOX", "flags": []}).encode()


def send(port, method="POST", body=b"", token=TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, "/", body, {"X-Webhook-Token": token} if token else {})
    reply = conn.getresponse()
    reply.read()
    return reply.status


def scrape(metrics_port):
    conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=30)
    conn.request("GET", "/metrics", headers={"Accept": ASK})
    reply = conn.getresponse()
    return reply.getheader("Content-Type", ""), reply.read().decode()


def serve_each_outcome(binary, check, log):
    """Runs the server through each outcome; returns (Content-Type, body) of one scrape."""
    moto, _, s3_env = local_s3.start("metrics", log)
    server = None
    try:
        port, metrics_port = procs.free_port(), procs.free_port()
        env = dict(os.environ, **s3_env, WEBHOOK_TOKENS=TOKEN, ARCHIVE_URI="s3://metrics/mail/", STORE_TIMEOUT_MS="2000",
                   LISTEN_ADDR=f"127.0.0.1:{port}", METRICS_ADDR=f"127.0.0.1:{metrics_port}", RUST_LOG="warn")
        server = procs.start([binary], log, env=env)
        procs.need_port(port, server)
        procs.need_port(metrics_port, server)
        statuses = {
            "stored": [send(port, body=event(uid)) for uid in (1, 2, 3)],
            "duplicate": [send(port, body=event(uid)) for uid in (1, 2)],
            "rejected": [send(port, body=event(4), token="wrong"), send(port, "GET"), send(port, body=b"{not json")],
        }
        procs.stop(moto)
        statuses["failed"] = [send(port, body=event(uid)) for uid in (5, 6)]
        check(statuses == {"stored": [200] * 3, "duplicate": [200] * 2, "rejected": [401, 405, 400], "failed": [500] * 2},
              f"requests of each outcome answered: {statuses}")
        return scrape(metrics_port)
    finally:
        if server:
            procs.stop(server)
        procs.stop(moto)


def promtool(text):
    """promtool check metrics on `text`: (exit code, its problem lines)."""
    run = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    return run.returncode, [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "target/debug/mailhook"))
    parser.add_argument("--scrape", help="check this saved OpenMetrics body instead of a live scrape")
    parser.add_argument("--text", action="store_true", help="the saved body is 0.0.4 text, as if served as text/plain")
    args = parser.parse_args()
    if not shutil.which("promtool"):
        sys.exit("promtool not found: install Debian's prometheus package (tests/all.sh does, as root)")
    version = subprocess.run(["promtool", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    check = Checks("check_metrics")
    logs = tempfile.TemporaryDirectory()
    if args.scrape:
        content_type = "text/plain; version=0.0.4" if args.text else "application/openmetrics-text"
        text, expected = Path(args.scrape).read_text(), None
    else:
        with open(Path(logs.name) / "server-and-moto.log", "w") as log:
            content_type, text = serve_each_outcome(args.binary, check, log)
        expected = {"stored": 3, "duplicate": 2, "rejected": 3, "failed": 2, "busy": 0}
        check(content_type.startswith("text/plain; version=0.0.4"),
              f"asked for the 0.0.4 text format, /metrics serves it: {content_type}")
    print(f"{'a saved scrape, taken as' if args.scrape else f'asked for {ASK}, served'} {content_type}; checking with {version}")

    served_text = content_type.startswith("text/plain")
    form = "0.0.4 text" if served_text else "OpenMetrics"
    try:
        families = list((parse_text if served_text else parse_openmetrics)(text))
        counts = {s.labels["outcome"]: int(s.value) for f in families for s in f.samples if s.name == "mailhook_requests_total"}
        check(expected is None or counts == expected, f"the scrape parses as {form} and counts {counts}")
    except ValueError as e:
        families = None
        check(False, f"the scrape does not parse as {form}: {e}")

    code, problems = promtool(text)
    if served_text:
        check(code == 0 and not problems, f"promtool check metrics on the scrape as served: {problems or 'no problem'}")
    else:
        help_of_counters = {f"{f.name}_total" for f in families or [] if f.type == "counter" and f.documentation}
        misread = [p for p in problems if re.fullmatch(r"(\S+) no help text", p) and p.split()[0] in help_of_counters]
        rest = [p for p in problems if p not in misread]
        check(code in (0, 3) and not rest,
              f"promtool check metrics on the scrape as served (OpenMetrics): {rest or 'no problem'}"
              + (f", besides its misreading of OpenMetrics counters: {misread}" if misread else ""))
        if families is not None:
            class Parsed:
                def collect(self):
                    return families

            code, problems = promtool(generate_latest(Parsed()).decode())
            check(code == 0 and not problems, f"promtool check metrics on the same families as 0.0.4 text: {problems or 'no problem'}")
    check.show_logs(logs.name)
    check.finish()


if __name__ == "__main__":
    main()
