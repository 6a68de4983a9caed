"""Stage 7, compaction: one day of events in S3 (moto_server on loopback), before and after
`mailhook compact`.

moto's S3 application is served over keep-alive connections (bench/moto_keepalive.py), as S3
serves them: `moto_server` closes every connection, which would add a TCP connect to each GET.

The events go in through mailhook's own HTTP receiver, so every line is a real stored line; each
is then put into moto under its real key, one object per event, as the S3 archive stores it
(mailhook's S3 path against moto would take as long as moto's PUTs, for the same bytes). Then:

- before: objects in the partition, and DuckDB's time to count them over a local copy;
- `mailhook compact --through <day> --min-age 0`: wall time, objects per second, CPU time and
  peak RSS of the process, and the S3 requests it made (counted from moto's request log);
- after: the merged objects, DuckDB's time over a local copy of them, and the same counts;
- a second run over the compacted day, which must change nothing.

moto is a single Python process, so the throughput is a floor for what S3 itself allows; the
report says so.
"""

import concurrent.futures
import datetime
import http.client
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import procs
from common import ROOT
from stages.cost import PRICE

BUCKET = "bench-archive"
PREFIX = "mail/"
TOKEN = "bench-token"
# moto's application on keep-alive connections, as S3 serves them (bench/moto_keepalive.py).
KEEPALIVE = [sys.executable, str(ROOT / "bench" / "moto_keepalive.py")]
COUNT_SQL = "SELECT count(*), count(DISTINCT id) FROM read_json_auto('{glob}', hive_partitioning = true)"


def missing_tools():
    if not shutil.which("moto_server"):
        return "moto_server not found (pip install -r tests/requirements.txt)"
    try:
        import boto3  # noqa: F401
        import duckdb  # noqa: F401
        import moto  # noqa: F401  (bench/moto_keepalive.py serves it from this Python)
        import waitress  # noqa: F401
    except ImportError as e:
        return f"{e.name} not importable (pip install -r tests/requirements.txt)"
    return None


def measure(binary, events, fs):
    """The stage, in a scratch directory on the file system `fs`."""
    with tempfile.TemporaryDirectory(dir=fs) as scratch:
        return run(binary, events, Path(scratch))


def run(binary, events, scratch):
    missing = missing_tools()
    if missing:
        return {"skipped": missing}
    import boto3
    import botocore.config

    import local_s3  # after the check: it needs boto3

    moto_log = open(scratch / "moto.log", "w+")
    moto, _, s3_env = local_s3.start(BUCKET, moto_log, server=KEEPALIVE)
    try:
        # A client of its own: 32 connections for the 32 threads that copy objects.
        s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test",
                          config=botocore.config.Config(max_pool_connections=32, s3={"addressing_style": "path"}))
        aws = {**s3_env, "ARCHIVE_URI": f"s3://{BUCKET}/{PREFIX}", "PATH": os.environ.get("PATH", "")}
        day = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)).date()
        started = time.monotonic()
        lines = receive(binary, day, events, scratch / "received")
        procs.log(f"compaction: {events:,} events received by mailhook in {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        before = upload(s3, lines, day, scratch / "before")
        procs.log(f"compaction: {events:,} per-event objects put into moto in {time.monotonic() - started:.0f} s")

        partition = f"{PREFIX}dt={day}/"
        before_keys = keys(s3, partition)
        if len(before_keys) != events or not all(k.endswith(".jsonl") for k in before_keys):
            sys.exit(f"compaction: expected {events} per-event objects under {partition}, found {len(before_keys)}")
        before_query = query(scratch / "before")
        if before_query["rows"] != [events, events]:
            sys.exit(f"compaction: DuckDB counted {before_query['rows']} before, expected {events} events")

        moto_log.seek(0, os.SEEK_END)
        requests_from = moto_log.tell()
        first = compact(binary, aws, day)
        moto_log.seek(requests_from)
        first["s3_requests"] = s3_requests(moto_log.read())

        after_keys = keys(s3, partition)
        if not after_keys or not all(k.endswith(".jsonl.gz") for k in after_keys):
            sys.exit(f"compaction: after the run {partition} holds {after_keys[:5]}...: not only merged objects")
        after = local_copy(s3, after_keys, scratch / "after")
        after_query = query(scratch / "after")
        if after_query["rows"] != [events, events]:
            sys.exit(f"compaction: DuckDB counted {after_query['rows']} after, expected each of {events} events once")

        again = compact(binary, aws, day)
        if keys(s3, partition) != after_keys or " 0 events merged" not in again["report"]:
            sys.exit(f"compaction: a second run changed the compacted partition: {again['report']}")
    finally:
        procs.stop(moto)
        moto_log.close()
    return {
        "events": events,
        "before": {"objects": len(before_keys), "bytes": before, **before_query},
        "after": {"objects": len(after_keys), "bytes": after, **after_query},
        "run": first,
        "rerun": again,
    }


def receive(binary, day, events, archive):
    """`events` distinct new-mail events dated `day`, POSTed to mailhook's HTTP receiver from 16
    keep-alive connections; every answer must be 200. It archives into a local directory, whose
    lines are the same bytes the S3 archive stores (one code path builds both); returns them."""
    port = procs.free_port()
    env = {"PATH": os.environ.get("PATH", ""), "WEBHOOK_TOKENS": TOKEN, "ACCOUNT_ID": "123456",
           "ARCHIVE_URI": str(archive), "LISTEN_ADDR": f"127.0.0.1:{port}", "RUST_LOG": "warn"}
    receiver = procs.start([binary], env=env)
    body = json.loads(json.loads((ROOT / "events" / "new.json").read_text())["body"])
    noon = int(datetime.datetime.combine(day, datetime.time(12), datetime.timezone.utc).timestamp())
    failures = []

    def send(uids):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json", "User-Agent": "adm.tools mail webhook",
                   "X-Webhook-Token": TOKEN}
        for uid in uids:
            event = {**body, "uid": uid, "tstamp": noon + uid % 40000}
            connection.request("POST", "/", json.dumps(event, ensure_ascii=False).encode(), headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                failures.append(answer.status)
                return
        connection.close()

    try:
        procs.need_port(port, receiver)
        threads = [threading.Thread(target=send, args=(range(i, events, 16),)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        procs.stop(receiver, timeout=60)  # SIGTERM seals the segments
    if failures:
        sys.exit(f"compaction: mailhook answered {failures[:5]} to the day's events")
    lines = [line for path in sorted(archive.glob(f"dt={day}/*.jsonl")) for line in path.read_bytes().splitlines(True)]
    if len(lines) != events:
        sys.exit(f"compaction: {events} events answered 200, {len(lines)} lines stored")
    return lines


def upload(s3, lines, day, root):
    """Each line as the S3 archive stores it, one object per event under its key
    (`dt=D/<id>.jsonl`, create-only), and the same files under `root` for DuckDB; returns the
    bytes stored."""
    (root / f"dt={day}").mkdir(parents=True)

    def put(line):
        name = f"dt={day}/{json.loads(line)['id']}.jsonl"
        (root / name).write_bytes(line)
        s3.put_object(Bucket=BUCKET, Key=PREFIX + name, Body=line, IfNoneMatch="*")
        return len(line)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        return sum(pool.map(put, lines))


def keys(s3, prefix):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def local_copy(s3, object_keys, root):
    """Downloads the objects under `root`, keeping the keys below the prefix (dt=D/name); returns
    their total size in bytes."""
    def get(key):
        path = root / key[len(PREFIX):]
        path.parent.mkdir(parents=True, exist_ok=True)
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        path.write_bytes(body)
        return len(body)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        return sum(pool.map(get, object_keys))


def query(root, repeats=3):
    """DuckDB's count over the copy, with the README's glob: median of `repeats` runs, each on a
    new connection (the page cache is warm after the copy, as it is for every run)."""
    import duckdb

    times, rows = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        con = duckdb.connect()
        rows = list(con.execute(COUNT_SQL.format(glob=f"{root}/dt=*/*.jsonl*")).fetchone())
        con.close()
        times.append(time.perf_counter() - started)
    return {"query_s": statistics.median(times), "rows": rows}


def compact(binary, aws, day):
    """One `mailhook compact` run: wall time, CPU time (from wait4), peak RSS, and its report.

    The peak is the process's own VmHWM, read while it runs: wait4's ru_maxrss would also count
    the pages of this Python process, which the child held between fork and exec."""
    started = time.perf_counter()
    process = subprocess.Popen([str(binary), "compact", "--through", str(day), "--min-age", "0"],
                               env=aws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read().decode()))
    reader.start()
    peak_kib = 0
    while True:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak_kib = max(peak_kib, next((int(line.split()[1]) for line in status.splitlines()
                                           if line.startswith("VmHWM:")), 0))
        except (FileNotFoundError, ProcessLookupError):
            pass
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.01)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    output = output[0]
    if process.returncode != 0:
        sys.exit(f"compaction: mailhook compact exited {process.returncode}:\n{output}")
    report = re.search(r"\d+ partitions? considered.*?partitions? failed", output)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": peak_kib,
        "report": report.group(0) if report else output.strip(),
    }


def s3_requests(werkzeug_log):
    """S3 requests by kind, from moto's (werkzeug's) access log lines: "GET /bucket/key?... HTTP/1.1"."""
    counts = {"LIST": 0, "GET": 0, "PUT": 0, "DeleteObjects": 0}
    for line in werkzeug_log.splitlines():
        start = line.find('"')
        if start < 0:
            continue
        method, _, target = line[start + 1:].partition(" ")
        path = target.split(" ")[0]
        if method == "GET" and ("list-type=2" in path or path.rstrip("/").count("/") == 1):
            counts["LIST"] += 1
        elif method == "GET":
            counts["GET"] += 1
        elif method == "PUT":
            counts["PUT"] += 1
        elif method == "POST" and "delete" in path:
            counts["DeleteObjects"] += 1
    return counts


def runs_per_day():
    """How often the template's schedule runs the compaction function: cron(M H ...) with H a
    list, a */N or a S/N step, or one hour."""
    text = (ROOT / "template.yaml").read_text()
    block = text[text.index("\n  CompactFunction:"):]
    hours = re.search(r"ScheduleExpression: cron\(\S+ (\S+) ", block).group(1)
    if "/" in hours:
        start, step = hours.split("/")
        return len(range(0 if start == "*" else int(start), 24, int(step)))
    return len(hours.split(","))


def memory_gb():
    """The compaction function's MemorySize in template.yaml, so the cost follows the template."""
    text = (ROOT / "template.yaml").read_text()
    block = text[text.index("\n  CompactFunction:"):]
    return int(re.search(r"MemorySize: (\d+)", block).group(1)) / 1024


def cost(c):
    """Per million events compacted, scaled from the measured run's S3 requests and duration."""
    per_million = 1e6 / c["events"]
    requests = c["run"]["s3_requests"]
    gb = memory_gb()
    rows = {
        "list": requests["LIST"] * per_million * PRICE["s3_list"],
        "get": requests["GET"] * per_million * PRICE["s3_get"],
        "put": requests["PUT"] * per_million * PRICE["s3_put"],
        "delete": requests["DeleteObjects"] * per_million * PRICE["s3_delete_objects"],
        "lambda": c["run"]["wall_s"] * per_million * gb * PRICE["lambda_arm64_gb_second"],
    }
    rows["total"] = sum(rows.values())
    rows["memory_gb"] = gb
    # What reading the day once costs in GETs (and LISTs) before and after.
    rows["read_before"] = c["before"]["objects"] * per_million * PRICE["s3_get"] + math.ceil(c["before"]["objects"] / 1000) * per_million * PRICE["s3_list"]
    rows["read_after"] = c["after"]["objects"] * per_million * PRICE["s3_get"] + per_million * PRICE["s3_list"]
    rows["storage_before"] = c["before"]["bytes"] * per_million / 1e9 * PRICE["s3_gb_month"]
    rows["storage_after"] = c["after"]["bytes"] * per_million / 1e9 * PRICE["s3_gb_month"]
    return rows
