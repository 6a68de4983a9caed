#!/usr/bin/env python3
"""Crash safety of the local archive, with a reader running all along.

mailhook (local server, directory archive) takes a load from concurrent clients and is killed
with SIGKILL in the middle of it, twice. After each restart, before anything more is sent, every
event that was answered 200 must be in the archive exactly once, and no file may hold a torn
line. Then every event is sent again: all answers must be 200, and each event is stored once.
Meanwhile DuckDB reads the archive the way the README shows, over and over: no read may fail, and
once the last event is acknowledged DuckDB must count every event within 60 s.

    tests/py/crash.py [--events 8000] [--clients 32] [--binary target/debug/mailhook]

Run inside .venv (tests/all.sh runs it); needs target/debug/mailhook or --binary.
"""

import argparse
import http.client
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb

import procs

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "crash-token"
VISIBLE_WITHIN = 60  # seconds, the README's promise
TIME_LIMIT = 10 * 60  # the whole run stops by itself


def event(i, now):
    return json.dumps(
        {"mailbox": f"user{i % 20}@example.com", "uid": i, "tstamp": now, "event": "new", "subject": f"crash test {i}",
         "snippet": "y" * (i % 300)}
    ).encode()


class Server:
    def __init__(self, binary, archive, port, log):
        env = dict(os.environ, WEBHOOK_TOKENS=TOKEN, ARCHIVE_URI=str(archive), LISTEN_ADDR=f"127.0.0.1:{port}",
                   RUST_LOG="warn")
        self.process = procs.start([binary], log, env=env)
        if not procs.wait_port(port, process=self.process):
            sys.exit("crash: mailhook did not start")


def send_all(port, bodies, indexes, clients, acked, stop_after=None):
    """Sends bodies[i] for i in indexes; adds i to `acked` on 200. Returns the statuses."""
    local = threading.local()
    statuses = {}

    def send(i):
        try:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            local.conn.request("POST", "/", bodies[i], {"X-Webhook-Token": TOKEN})
            reply = local.conn.getresponse()
            reply.read()
            statuses[i] = reply.status
            if reply.status == 200:
                acked.add(i)
        except (http.client.HTTPException, OSError) as e:
            statuses[i] = type(e).__name__
            local.__dict__.pop("conn", None)

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(send, indexes))
    return statuses


def archive_lines(archive):
    """Every line of every visible file, and the problems found: torn or unreadable lines."""
    lines, problems = [], []
    for path in sorted(archive.glob("dt=*/*.jsonl")):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            problems.append(f"{path.name} does not end in a whole line")
        for raw in data.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                problems.append(f"{path.name}: a line that is not JSON: {raw[:60]!r}")
                continue
            if not re.fullmatch(r"[0-9a-f]{32}", str(line.get("id"))):
                problems.append(f"{path.name}: a line without its id")
            lines.append(line)
    return lines, problems


class Reader(threading.Thread):
    """DuckDB reading the archive over and over, as a user would while events arrive."""

    def __init__(self, archive):
        super().__init__(daemon=True)
        self.query = (f"SELECT count(*), count(DISTINCT id) FROM read_json_auto('{archive}/dt=*/*.jsonl*', "
                      f"hive_partitioning = true)")
        self.reads, self.errors, self.last = 0, [], (0, 0)
        self.running = True

    def run(self):
        con = duckdb.connect()
        while self.running:
            try:
                self.last = con.execute(self.query).fetchone()
                self.reads += 1
            except duckdb.IOException as e:
                if "No files found" not in str(e):  # nothing published yet
                    self.errors.append(str(e)[:300])
            except duckdb.Error as e:
                self.errors.append(str(e)[:300])
            time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--binary", default=str(ROOT / "target/debug/mailhook"))
    args = parser.parse_args()
    deadline = time.monotonic() + TIME_LIMIT

    failures, passed = [], []

    def check(ok, what):
        (passed if ok else failures).append(what)
        print(f"{'ok' if ok else 'FAILED'}: {what}", flush=True)

    work = tempfile.TemporaryDirectory()
    archive = Path(work.name) / "archive"
    log = open(Path(work.name) / "mailhook.log", "w")
    port = procs.free_port()
    now = int(time.time())
    bodies = [event(i, now) for i in range(args.events)]
    acked = set()
    reader = Reader(archive)
    server = None
    try:
        reader.start()
        for kill in (1, 2):
            server = Server(args.binary, archive, port, log)
            pending = [i for i in range(args.events) if i not in acked]
            before = len(acked)
            # SIGKILL once half of what is left has been acknowledged: mid-load however fast the
            # machine is (a fixed delay let a quick run finish before the kill).
            halfway = before + max(1, len(pending) // 2)

            def kill_halfway(server=server, halfway=halfway):
                while len(acked) < halfway and server.process.poll() is None:
                    time.sleep(0.001)
                server.process.send_signal(signal.SIGKILL)

            killer = threading.Thread(target=kill_halfway)
            killer.start()
            send_all(port, bodies, pending, args.clients, acked)
            killer.join()
            server.process.wait(timeout=30)
            check(server.process.returncode == -signal.SIGKILL, f"kill {kill}: SIGKILL during the load")
            check(len(acked) > before and len(acked) < args.events,
                  f"kill {kill}: it struck mid-load ({len(acked) - before} more acknowledged, {len(acked)} of {args.events})")

            # The restart recovers the segments the kill left open: check before sending anything.
            server = Server(args.binary, archive, port, log)
            lines, problems = archive_lines(archive)
            check(not problems, f"after kill {kill}: no torn line ({problems[:3]})")
            counts = Counter(line["data"]["uid"] for line in lines)
            missing = [i for i in acked if counts[i] == 0]
            twice = [i for i, n in counts.items() if n > 1]
            check(not missing, f"after kill {kill}: all {len(acked)} acknowledged events stored ({len(missing)} missing)")
            check(not twice, f"after kill {kill}: none stored twice ({len(twice)} twice)")
            server.process.send_signal(signal.SIGKILL)  # a crash right after a start, too
            server.process.wait(timeout=30)
            if time.monotonic() > deadline:
                sys.exit("crash: out of time")

        server = Server(args.binary, archive, port, log)
        statuses = send_all(port, bodies, range(args.events), args.clients, acked)
        not_ok = Counter(s for s in statuses.values() if s != 200)
        check(not not_ok, f"every event sent again is answered 200 ({dict(not_ok)})")
        acknowledged_at = time.monotonic()
        while reader.last[1] < args.events and time.monotonic() - acknowledged_at < VISIBLE_WITHIN + 5:
            time.sleep(0.2)
        seen = time.monotonic() - acknowledged_at
        check(reader.last == (args.events, args.events) and seen <= VISIBLE_WITHIN,
              f"DuckDB counts all {args.events} events once, {seen:.1f} s after the last answer ({reader.last})")

        server.process.terminate()
        server.process.wait(timeout=30)
        check(server.process.returncode == 0, f"SIGTERM stops it cleanly ({server.process.returncode})")
        lines, problems = archive_lines(archive)
        counts = Counter(line["data"]["uid"] for line in lines)
        check(not problems, f"in the end no torn line ({problems[:3]})")
        check(sorted(counts) == list(range(args.events)) and set(counts.values()) == {1},
              f"in the end each of the {args.events} events is stored exactly once ({len(lines)} lines)")
        left = [p.name for p in archive.rglob(".*") if p.name != ".mailhook.lock"]
        check(not left, f"no live segment or snapshot left after a clean stop ({left[:3]})")
        segments = list(archive.glob("dt=*/*.jsonl"))
        check(len(segments) <= 64, f"{len(segments)} segment files for {args.events} events")
        reader.running = False
        reader.join(timeout=30)
        check(not reader.errors, f"DuckDB read {reader.reads} times during the run without an error ({reader.errors[:2]})")
    finally:
        reader.running = False
        if server and server.process.poll() is None:
            server.process.kill()
        log.close()
        if failures:
            print("--- mailhook's log (last 40 lines)")
            print("\n".join((Path(work.name) / "mailhook.log").read_text(errors="replace").splitlines()[-40:]))
        work.cleanup()

    print(f"crash: {len(passed)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
