#!/usr/bin/env python3
"""Bounded load on loopback: N distinct events from C concurrent clients through mailhook's local
HTTP server into moto_server (atomic conditional puts) or a local directory, then every event sent
again. Reports sent, stored, lost, duplicated and p50/p99 latency; fails if anything is lost or
duplicated or any answer is not 200.

    tests/py/load.py [--events 10000] [--clients 64] [--archive s3|dir|both] [--json results.json]

Run inside .venv (tests/all.sh runs it); needs target/debug/mailhook or --binary.
"""

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import local_s3
import procs
from prometheus_client.openmetrics.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "load-token"
BUCKET = "mailhook-load"
TIME_LIMIT = 15 * 60  # seconds for the whole run; the load stops by itself


def event(i):
    return json.dumps(
        {
            "mailbox": f"user{i % 50}@example.com",
            "uid": i,
            "tstamp": int(time.time()) - i % 3600,
            "event": ("new", "create", "flags-set")[i % 3],
            "folder": "INBOX",
            "flags": ["\\Seen"] if i % 3 == 2 else [],
            "subject": f"Load test message {i}",
            "snippet": "x" * (i % 400),
        }
    ).encode()


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else 0.0


def blast(port, bodies, clients, deadline):
    """Sends every body once with `clients` keep-alive connections; returns (statuses, latencies ms)."""
    local = threading.local()
    statuses, latencies = [None] * len(bodies), [0.0] * len(bodies)

    def send(i):
        if time.monotonic() > deadline:
            return
        for attempt in range(2):
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            started = time.perf_counter()
            try:
                local.conn.request("POST", "/", bodies[i], {"X-Webhook-Token": TOKEN, "User-Agent": "adm.tools mail webhook"})
                reply = local.conn.getresponse()
                reply.read()
                statuses[i], latencies[i] = reply.status, (time.perf_counter() - started) * 1000
                return
            except (http.client.HTTPException, OSError):
                del local.conn  # reconnect once, as the sender would on its resend
        statuses[i] = "connection error"

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(send, range(len(bodies))))
    return statuses, latencies


def scrape(port, metrics_port):
    """One refused request, then /metrics read with the Prometheus client's OpenMetrics parser:
    the request counts by outcome, and how many stores the latency histogram saw."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/", b"{}", {"X-Webhook-Token": "not-the-token"})
    assert conn.getresponse().status == 401
    conn = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=30)
    # As Prometheus asks; without it /metrics answers the 0.0.4 text format.
    conn.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"})
    reply = conn.getresponse()
    assert reply.getheader("Content-Type", "").startswith("application/openmetrics-text"), reply.getheader("Content-Type")
    text = reply.read().decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mailhook_requests_total":
                counts[sample.labels["outcome"]] = int(sample.value)
            elif sample.name == "mailhook_store_seconds_count":
                counts["store_seconds_count"] = int(sample.value)
    return counts


def run(kind, args, deadline):
    workdir = tempfile.TemporaryDirectory()
    children = []
    env = dict(os.environ, WEBHOOK_TOKENS=TOKEN, RUST_LOG="warn")
    try:
        if kind == "s3":
            moto, s3, s3_env = local_s3.start(BUCKET, open(Path(workdir.name) / "moto.log", "w"))
            children.append(moto)
            env.update(s3_env, ARCHIVE_URI=f"s3://{BUCKET}/mail/", STORE_TIMEOUT_MS="20000")
        else:
            archive = Path(workdir.name) / "archive"
            metrics_port = procs.free_port()
            env.update(ARCHIVE_URI=str(archive), METRICS_ADDR=f"127.0.0.1:{metrics_port}")
        port = procs.free_port()
        env["LISTEN_ADDR"] = f"127.0.0.1:{port}"
        # Every client is 127.0.0.1: past 64 of them, lift the per-source limit above the count.
        env["MAX_CONNECTIONS_PER_SOURCE"] = str(max(128, 2 * args.clients))
        server = procs.start([args.binary], None, env=env)  # None: its warnings show in this run's output
        children.append(server)
        if not procs.wait_port(port, process=server):
            sys.exit(f"load: nothing listening on {port}")

        bodies = [event(i) for i in range(args.events)]
        result = {"archive": kind, "events": args.events, "clients": args.clients}
        for phase in ("first", "resend"):
            started = time.monotonic()
            statuses, latencies = blast(port, bodies, args.clients, deadline)
            elapsed = time.monotonic() - started
            ok = [l for s, l in zip(statuses, latencies) if s == 200]
            bad = [s for s in statuses if s != 200]
            result[phase] = {
                "sent": len(bodies),
                "ok": len(ok),
                "not_ok": len(bad),
                "not_ok_examples": sorted({str(s) for s in bad})[:5],
                "seconds": round(elapsed, 2),
                "per_second": round(len(bodies) / elapsed, 1),
                "p50_ms": round(percentile(ok, 50), 2),
                "p99_ms": round(percentile(ok, 99), 2),
            }

        if kind == "s3":
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]

            def uid_of(key):
                return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["data"]["uid"]

            with ThreadPoolExecutor(max_workers=16) as pool:
                uids = list(pool.map(uid_of, keys))
        else:
            result["metrics"] = scrape(port, metrics_port)
            # SIGTERM seals the segments: then every line is in a visible dt=*/*.jsonl file.
            server.terminate()
            server.wait(timeout=30)
            files = [f for f in archive.rglob("*") if f.is_file() and f.name != ".mailhook.lock"]
            hidden = [f for f in files if f.name.startswith(".")]
            result["temporary_files_left"] = len(hidden)
            segments = [f for f in files if f.suffix == ".jsonl"]
            result["segments"] = len(segments)
            uids = [json.loads(line)["data"]["uid"] for f in segments for line in f.read_text().splitlines()]
        result["stored"] = len(uids)
        result["lost"] = len(set(range(args.events)) - set(uids))
        result["duplicated"] = len(uids) - len(set(uids))
        return result
    finally:
        for child in reversed(children):
            procs.stop(child)
        workdir.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--archive", choices=["s3", "dir", "both"], default="both")
    parser.add_argument("--binary", default=str(ROOT / "target/debug/mailhook"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    deadline = time.monotonic() + TIME_LIMIT

    results, failures = [], 0
    for kind in (["s3", "dir"] if args.archive == "both" else [args.archive]):
        r = run(kind, args, deadline)
        results.append(r)
        print(
            f"{kind:>3}: sent {r['events']} x2 with {r['clients']} clients | stored {r['stored']} | "
            f"lost {r['lost']} | duplicated {r['duplicated']} | "
            f"first {r['first']['per_second']}/s p50 {r['first']['p50_ms']} ms p99 {r['first']['p99_ms']} ms | "
            f"resend {r['resend']['per_second']}/s p50 {r['resend']['p50_ms']} ms p99 {r['resend']['p99_ms']} ms"
            + (f" | {r['segments']} segment files" if "segments" in r else "")
            + (f" | /metrics {r['metrics']}" if "metrics" in r else "")
        )
        problems = [
            r["lost"] != 0,
            r["duplicated"] != 0,
            r["first"]["not_ok"] != 0,
            r["resend"]["not_ok"] != 0,
            r.get("temporary_files_left", 0) != 0,
            "metrics" in r and r["metrics"] != {"stored": r["events"], "duplicate": r["events"], "rejected": 1,
                                                  "failed": 0, "busy": 0, "store_seconds_count": 2 * r["events"]},
        ]
        if any(problems):
            failures += 1
            print(f"     FAILED: {json.dumps(r)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"load: {len(results) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
