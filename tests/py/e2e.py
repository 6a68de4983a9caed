#!/usr/bin/env python3
"""End to end through the Lambda runtime: moto_server as S3 on loopback, mailhook under
`cargo lambda watch`, every file in events/ sent with `cargo lambda invoke --data-file`, requests
POSTed through the emulated function URL, then the bucket read back: each accepted event is
there once. Finally DuckDB reads the synced archive with dt typed as DATE, one row per event.

Run by tests/all.sh from the repository root, inside .venv (moto, boto3, cargo-lambda, duckdb).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb

import local_s3
import procs
from checks import Checks

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
# The function URL samples; an entry naming another function is that function's event.
EXPECTED = {n: e for n, e in json.loads((ROOT / "tests/data/expected.json").read_text()).items() if "function" not in e}
BUCKET = "mailhook-e2e"
PREFIX = "mail/"
TOKEN = "example-token"
ACCOUNT_ID = "123456"
DEADLINE = time.monotonic() + 20 * 60  # the whole run, build included, is bounded


def wait_for(what, probe, seconds):
    end = min(time.monotonic() + seconds, DEADLINE)
    while time.monotonic() < end:
        if probe():
            return
        time.sleep(0.5)
    sys.exit(f"e2e: {what} did not come up in time")


def port_open(port):
    return procs.wait_port(port, 0.5)


def http(method, url, body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def event_body(name):
    event = json.loads((EVENTS / name).read_text())
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        import base64

        return base64.b64decode(body)
    return body.encode()


def main():
    check = Checks("e2e")

    lambda_port = procs.free_port()
    children = []
    logs = tempfile.TemporaryDirectory()
    try:
        moto, s3, s3_env = local_s3.start(BUCKET, open(Path(logs.name) / "moto.log", "w"))
        children.append(moto)
        env = dict(
            os.environ,
            **s3_env,
            WEBHOOK_TOKENS=f"old-token,{TOKEN}",
            ACCOUNT_ID=ACCOUNT_ID,
            ARCHIVE_URI=f"s3://{BUCKET}/{PREFIX}",
        )
        watch_log = open(Path(logs.name) / "watch.log", "w")
        # In a session of its own: cargo lambda watch runs the function under it, and procs.stop
        # stops them together.
        watch = procs.start(
            ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", lambda_port],
            watch_log,
            cwd=ROOT,
            env=env,
        )
        children.append(watch)
        wait_for("cargo lambda watch", lambda: port_open(lambda_port), 120)

        # Every sample through the Runtime API emulator. The first one waits for the build.
        for name, expected in sorted(EXPECTED.items()):
            end = min(time.monotonic() + 900, DEADLINE)
            while True:
                run = subprocess.run(
                    [
                        "cargo", "lambda", "invoke", "mailhook",
                        "--invoke-address", "127.0.0.1", "--invoke-port", str(lambda_port),
                        "--data-file", str(EVENTS / name), "--output-format", "json",
                    ],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                )
                if run.returncode == 0 or time.monotonic() > end:
                    break
                time.sleep(2)
            if run.returncode != 0:
                check(False, f"invoke {name}: {run.stderr.strip()[-500:]}")
                continue
            reply = json.loads(run.stdout)
            check(reply["statusCode"] == expected["status"], f"invoke {name}: status {reply['statusCode']}")

        # The same function through the emulated function URL.
        url = f"http://127.0.0.1:{lambda_port}/lambda-url/mailhook/"
        status, body = http("GET", url + "webhook-confirm.txt")
        check(status == 200 and body.decode() == ACCOUNT_ID, f"URL GET webhook-confirm.txt: {status} {body!r}")
        headers = {"X-Webhook-Token": TOKEN, "User-Agent": "adm.tools mail webhook", "Content-Type": "application/json"}
        status, body = http("POST", url, event_body("new.json"), headers)
        check(status == 200 and json.loads(body) == {"ok": True}, f"URL POST new (a resend): {status} {body!r}")
        late = json.loads(event_body("create.json"))
        late["uid"] = 98
        status, body = http("POST", url, json.dumps(late, indent=2).encode(), headers)
        check(status == 200, f"URL POST a new pretty-printed event: {status} {body!r}")
        status, body = http("POST", url, event_body("new.json"), dict(headers, **{"X-Webhook-Token": "nope"}))
        check(status == 401, f"URL POST with a wrong token: {status} {body!r}")
        status, body = http("PUT", url, event_body("new.json"), headers)
        check(status == 405, f"URL PUT: {status} {body!r}")

        # The bucket: each accepted event exactly once.
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
        lines = {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode() for k in keys}
        accepted = [json.loads(event_body(n)) for n, e in EXPECTED.items() if e["status"] == 200 and e["event"]]
        accepted.append(late)
        check(len(keys) == len(accepted), f"{len(keys)} objects for {len(accepted)} distinct accepted events")
        stored = [json.loads(line)["data"] for line in lines.values()]
        for event in accepted:
            check(stored.count(event) == 1, f"stored once: {event['event']} uid {event['uid']}")
        for key, line in lines.items():
            check(key.startswith(PREFIX + "dt=") and key.endswith(".jsonl"), f"key {key}")
            check(line.endswith("\n") and line.count("\n") == 1, f"one line in {key}")
            record = json.loads(line)
            check(key == f"{key.rsplit('/', 1)[0]}/{record['id']}.jsonl", f"the line's id names its key {key}")
            check(record["ip"] in ("127.0.0.1", "185.68.16.10"), f"ip {record['ip']} in {key}")

        # A synced copy of the archive (as `aws s3 sync` makes it), read by DuckDB.
        with tempfile.TemporaryDirectory() as local:
            for key, line in lines.items():
                path = Path(local) / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(line)
            pattern = f"{local}/{PREFIX}dt=*/*.jsonl"
            con = duckdb.connect()
            rows = con.execute(
                f"SELECT typeof(dt), count(*), count(DISTINCT request_id) "
                f"FROM read_json_auto('{pattern}', hive_partitioning = true) GROUP BY ALL"
            ).fetchall()
            check(len(rows) == 1 and rows[0][0] == "DATE", f"DuckDB types dt as DATE: {rows}")
            check(rows and rows[0][1] == len(accepted) == rows[0][2], f"DuckDB reads one row per event: {rows}")
            deletions = con.execute(
                f"SELECT count(*) FROM read_json_auto('{pattern}', hive_partitioning = true) "
                f"WHERE event = 'flags-set' AND list_contains(flags, '\\Deleted')"
            ).fetchone()[0]
            check(deletions == 1, f"DuckDB finds the deletion through flags: {deletions}")
    finally:
        for child in reversed(children):
            procs.stop(child)
        check.show_logs(logs.name)
        logs.cleanup()
    check.finish()


if __name__ == "__main__":
    main()
