#!/usr/bin/env python3
"""The archive read where it is, over S3, by the query engines people use.

moto_server is the bucket, on loopback. The real binary, as the local server, archives the
accepted samples of events/ (base64-no-content-type.json's uid and flags have other types than
the rest) and events generated over three days, with times in whole seconds and in milliseconds;
`mailhook compact` then merges the older two days, and two late events land beside a merged
object. One of them is rewritten as older versions wrote times (`…13.12Z`, `…12Z`).

Then the bucket's own lines are the truth: every line the binary wrote, merged or not, is valid
against docs/schema.json. ClickHouse (chdb) and polars read the bucket in place, and DuckDB a
synced copy (its httpfs extension cannot be installed here): each must count the lines and the
distinct ids of every (dt, plain or merged) the bucket holds, and read every event_time as a
timestamp with its milliseconds. ClickHouse's own inference reads one day of per-event objects
with its milliseconds. Last, every Python recipe of docs/querying.md runs as written, its bucket
replaced by moto's, over the whole archive and over one day, and must agree with the bucket.

Run by tests/all.sh from the repository root, inside .venv (moto, boto3, chdb, polars, duckdb,
jsonschema).
"""

import contextlib
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import chdb
import duckdb
import jsonschema
import polars as pl

import local_s3
import procs
from checks import Checks
from e2e import EXPECTED, event_body, http

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs/querying.md"
SCHEMA = json.loads((ROOT / "docs/schema.json").read_text())
BUCKET = "mailhook-query"
PREFIX = "mail/"
TOKEN = "example-token"
# What the recipes in docs/querying.md name, replaced by moto's bucket.
DOC_URL = "https://my-bucket.s3.eu-central-1.amazonaws.com/"
DOC_S3 = "s3://my-bucket/"
TODAY = datetime.datetime.now(datetime.UTC).date()
# Three days within the 30 days an event's own date is kept: the older two are compacted.
D1, D2, D3 = (TODAY - datetime.timedelta(days=n) for n in (3, 2, 1))
STRUCTURE = (
    "ts DateTime64(3, ''UTC''), ip Nullable(String), ua Nullable(String), data String, webhook_id Nullable(String), "
    "request_id String, event Nullable(String), mailbox Nullable(String), event_time Nullable(DateTime64(3, ''UTC'')), "
    "flags Array(String), id Nullable(String)"
)


def epoch(day, seconds):
    """The Unix time `seconds` after midnight UTC of `day`."""
    return int(datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()) + seconds


def compact_body(event):
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def id_of(body):
    """The id mailhook gives a compact body: the first 16 bytes of its SHA-256, in hex."""
    return hashlib.sha256(body).hexdigest()[:32]


def generated_events():
    """Events for D1, D2 and D3 (and late ones for D1), by day: each day has whole seconds and
    milliseconds, uid as a number and as a string, flags as an array and as a string. On D3 the
    first object in key order holds whole seconds: an engine inferring the time's type from its
    first lines sees whole seconds first."""

    def event(day, n, tstamp, uid, flags):
        return {"mailbox": f"box{n}@example.com", "uid": uid, "tstamp": tstamp, "event": "flags-set" if flags else "new",
                "folder": "INBOX", "flags": flags, "subject": f"day {day} n {n}"}

    days = {}
    for day in (D1, D2, D3):
        whole = [event(day, n, epoch(day, 36000 + n), n, ["\\Seen"]) for n in range(3)]
        first = min(id_of(compact_body(e)) for e in whole)
        fractions = []
        for n, (tstamp, uid, flags) in enumerate([
            (epoch(day, 36010) * 1000 + 5, str(10), "\\Seen \\Flagged"),
            (epoch(day, 36011) * 1000 + 970, 11, ["\\Deleted"]),
            (datetime.datetime.fromtimestamp(epoch(day, 36012), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.123456Z"), "12", None),
        ]):
            e = event(day, 10 + n, tstamp, uid, flags)
            while id_of(compact_body(e)) < first:  # a later key than a whole-second event's
                e["n"] = e.get("n", 0) + 1
            fractions.append(e)
        days[day] = whole + fractions
    late = [event(D1, 20, epoch(D1, 72000), 20, ["\\Seen"]), event(D1, 21, epoch(D1, 72001) * 1000 + 250, "21", "\\Seen")]
    return days, late


def old_form(text):
    """A time as versions before fixed milliseconds wrote it: trailing zeros of the fraction
    dropped, and the dot with them (`…13.120Z` -> `…13.12Z`, `…12.000Z` -> `…12Z`)."""
    head, _, fraction = text[:-1].partition(".")
    fraction = fraction.rstrip("0")
    return f"{head}.{fraction}Z" if fraction else f"{head}Z"


def ms(value):
    """Milliseconds since the epoch of an engine's time value or of a stored time text, cut to the
    millisecond; None for null."""
    if value is None or (hasattr(value, "isnat") and value.isnat()) or str(value) in ("NaT", "None"):
        return None
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    delta = value - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def day_text(value):
    return str(value)[:10]


def bucket_truth(s3):
    """What the bucket holds, read object by object: {key: [line, ...]}."""
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "dt="):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
            if o["Key"].endswith(".gz"):
                body = gzip.decompress(body)
            objects[o["Key"]] = [json.loads(line) for line in body.decode().splitlines()]
    return objects


def kind(key):
    return "merged" if key.rsplit("/", 1)[1].startswith("merged-") else "plain"


def summary(objects, day=None):
    """{(dt, kind): (lines, distinct ids)} and {id: event_time ms} of the objects (of one day)."""
    groups, times = {}, {}
    for key, lines in objects.items():
        dt = key[len(PREFIX) + 3 : len(PREFIX) + 13]
        if day and dt != str(day):
            continue
        lines_, ids = groups.get((dt, kind(key)), (0, set()))
        groups[(dt, kind(key))] = (lines_ + len(lines), ids | {line["id"] for line in lines})
        times.update({line["id"]: ms(line["event_time"]) for line in lines})
    return {k: (n, len(ids)) for k, (n, ids) in groups.items()}, times


def per_day(objects, day=None):
    """{dt: (lines, distinct ids, latest event_time ms)}: what each recipe prints."""
    out = {}
    for key, lines in objects.items():
        dt = key[len(PREFIX) + 3 : len(PREFIX) + 13]
        if day and dt != str(day):
            continue
        n, ids, last = out.get(dt, (0, set(), None))
        times = [ms(line["event_time"]) for line in lines if line["event_time"]]
        out[dt] = (n + len(lines), ids | {line["id"] for line in lines}, max([last or 0, *times]) or None)
    return {dt: (n, len(ids), last) for dt, (n, ids, last) in out.items()}


def recipes():
    """docs/querying.md's ```python blocks, by the heading they are under."""
    blocks, heading = {}, None
    for part in re.split(r"^(## .*)$", DOC.read_text(), flags=re.M):
        if part.startswith("## "):
            heading = part[3:].split()[0].lower()
        else:
            for block in re.findall(r"```python\n(.*?)```", part, re.S):
                blocks[heading] = block
    return blocks


def clickhouse(sql):
    """chdb's answer as dicts (its DataFrame output of arrays of tuples hangs, in chdb 4.4)."""
    return [json.loads(line) for line in str(chdb.query(sql, "JSONEachRow")).splitlines() if line]


def run_recipe(code, name, cwd=None):
    """Runs a recipe as a script would, and returns its `per_day` as {dt: (lines, events, last ms)}
    and what it printed."""
    namespace, printed = {"__name__": "__main__"}, io.StringIO()
    here = os.getcwd()
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"docs/querying.md ({name})", "exec"), namespace)
        result = namespace["per_day"]
        if hasattr(result, "fetchall"):
            rows = result.fetchall()  # a DuckDB relation runs again, in the recipe's directory
        elif hasattr(result, "rows"):
            rows = result.rows()
        else:
            rows = list(result.itertuples(index=False, name=None))
    finally:
        os.chdir(here)
    return {day_text(dt): (int(lines), int(events), ms(last)) for dt, lines, events, last in rows}, printed.getvalue()


def main():
    check = Checks("query_engines")
    subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    children = []
    logs = tempfile.TemporaryDirectory()
    try:
        moto, s3, s3_env = local_s3.start(BUCKET, open(Path(logs.name) / "moto.log", "w"))
        children.append(moto)
        endpoint = s3_env["AWS_ENDPOINT_URL_S3"]
        env = dict(os.environ, **s3_env, WEBHOOK_TOKENS=TOKEN, ARCHIVE_URI=f"s3://{BUCKET}/{PREFIX}")
        port = procs.free_port()
        server = procs.start([ROOT / "target/debug/mailhook"], open(Path(logs.name) / "server.log", "w"),
                             env=dict(env, LISTEN_ADDR=f"127.0.0.1:{port}"))
        children.append(server)
        procs.need_port(port, server, 30)
        url = f"http://127.0.0.1:{port}/"
        headers = {"X-Webhook-Token": TOKEN, "User-Agent": "adm.tools mail webhook"}

        def post(body, what):
            status, reply = http("POST", url, body, headers)
            check(status == 200, f"stored {what}: {status} {reply[:200]!r}")

        samples = [n for n, e in sorted(EXPECTED.items()) if e["status"] == 200 and e["event"]]
        check("base64-no-content-type.json" in samples, "the samples include base64-no-content-type.json (uid and flags of other types)")
        for name in samples:
            post(event_body(name), name)
        days, late = generated_events()
        for day, events in days.items():
            for e in events:
                post(compact_body(e), f"{day} uid {e['uid']!r}")

        run = subprocess.run([ROOT / "target/debug/mailhook", "compact", "--through", str(D2), "--min-age", "0"],
                             env=env, capture_output=True, text=True, timeout=300)
        check(run.returncode == 0, f"mailhook compact --through {D2}: exit {run.returncode} {run.stderr.strip()[-300:]}")
        for e in late:
            post(compact_body(e), f"a late event for compacted {D1}")
        # One late object as versions before fixed milliseconds wrote it.
        old_key = f"{PREFIX}dt={D1}/{id_of(compact_body(late[0]))}.jsonl"
        line = json.loads(s3.get_object(Bucket=BUCKET, Key=old_key)["Body"].read())
        old = dict(line, ts=old_form(line["ts"][:-2] + "0Z"), event_time=old_form(line["event_time"]))
        check(old["event_time"].endswith(":00Z") and len(old["ts"]) < 24, f"an older line: ts {old['ts']}, event_time {old['event_time']}")
        s3.put_object(Bucket=BUCKET, Key=old_key, Body=json.dumps(old, separators=(",", ":"), ensure_ascii=False) + "\n")

        objects = bucket_truth(s3)
        groups, times = summary(objects)
        lines = [line for ls in objects.values() for line in ls]
        check({(str(D1), "merged"), (str(D1), "plain"), (str(D2), "merged"), (str(D3), "plain")} <= set(groups)
              and (str(D2), "plain") not in groups and (str(D3), "merged") not in groups,
              f"the bucket holds merged and per-event objects: {sorted(groups)}")
        check(len({line["id"] for line in lines}) == len(lines) == len(samples) + sum(map(len, days.values())) + len(late),
              f"{len(lines)} lines, one per event")
        check(any(t % 1000 for t in times.values()) and any(t is not None and t % 1000 == 0 for t in times.values()),
              "times with and without milliseconds")

        # Every line the binary wrote, merged or not, is what docs/schema.json says; the older
        # line is not.
        validator = jsonschema.Draft202012Validator(SCHEMA)
        for key, ls in objects.items():
            for line in ls:
                errors = [e.message for e in validator.iter_errors(line)]
                if line["id"] == old["id"]:
                    check(errors, f"the schema refuses an older line's times: {errors[:2]}")
                else:
                    check(not errors, f"{key}: {line['data'].get('uid')!r} is valid against docs/schema.json {errors[:2]}")

        # The engines' own reads, in place, against the bucket's counts and times.
        moto_url = f"{endpoint}/{BUCKET}/{PREFIX}"
        os.environ.update(s3_env, AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")

        rows = clickhouse(
            f"""SELECT toString(dt) AS day, startsWith(_file, 'merged-') ? 'merged' : 'plain' AS kind, count() AS n,
                       count(DISTINCT id) AS ids, toTypeName(dt) AS dt_type
                FROM s3('{moto_url}dt=*/*.jsonl*', 'JSONEachRow', '{STRUCTURE}') GROUP BY ALL"""
        )
        got = {(r["day"], r["kind"]): (int(r["n"]), int(r["ids"])) for r in rows}
        check(got == groups, f"ClickHouse in place: count(*) and count(DISTINCT id) by dt and kind {got}")
        check({r["dt_type"] for r in rows} == {"Date"}, f"ClickHouse types dt as {({r['dt_type'] for r in rows})}")
        rows = clickhouse(
            f"""SELECT id, toUnixTimestamp64Milli(event_time) AS t
                FROM s3('{moto_url}dt=*/*.jsonl*', 'JSONEachRow', '{STRUCTURE}')"""
        )
        check({r["id"]: r["t"] and int(r["t"]) for r in rows} == times, "ClickHouse in place: every event_time with its milliseconds")

        # ClickHouse inferring the types itself, over one day of per-event objects, data as text.
        rows = clickhouse(
            f"""SELECT id, toUnixTimestamp64Milli(toDateTime64(event_time, 3)) AS t, toTypeName(event_time) AS type,
                       JSONExtractString(data, 'uid') AS uid
                FROM s3('{moto_url}dt={D3}/*.jsonl*', 'JSONEachRow')
                SETTINGS input_format_json_try_infer_named_tuples_from_objects = 0"""
        )
        inferred = {r["id"]: int(r["t"]) for r in rows}
        check(inferred == summary(objects, D3)[1], f"ClickHouse's inference over {D3}: every row, with milliseconds ({({r['type'] for r in rows})})")
        check({"10", "11"} <= {r["uid"] for r in rows}, "ClickHouse's inference reads uid as a string and as a number in data")

        frame = (
            pl.scan_ndjson(f"s3://{BUCKET}/{PREFIX}dt=*/*.jsonl*", schema={c: pl.String for c in SCHEMA["properties"]} | {"flags": pl.List(pl.String)},
                           include_file_paths="path")
            .with_columns(
                pl.col("path").str.extract(r"/dt=([0-9-]{10})/").str.to_date().alias("dt"),
                pl.when(pl.col("path").str.contains("/merged-")).then(pl.lit("merged")).otherwise(pl.lit("plain")).alias("kind"),
                pl.col("event_time").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit="ms", time_zone="UTC"),
            )
            .collect()
        )
        got = {(str(dt), k): (n, d) for dt, k, n, d in
               frame.group_by("dt", "kind").agg(pl.len(), pl.col("id").n_unique()).rows()}
        check(got == groups, f"polars in place: count(*) and count(DISTINCT id) by dt and kind {got}")
        check({i: ms(t) for i, t in frame.select("id", "event_time").rows()} == times, "polars in place: every event_time with its milliseconds")
        check(frame.schema["dt"] == pl.Date and frame.schema["event_time"] == pl.Datetime("ms", "UTC"), "polars: dt a date, event_time a timestamp")

        # DuckDB over a synced copy (aws s3 sync).
        copy = tempfile.TemporaryDirectory()
        for key, ls in objects.items():
            path = Path(copy.name) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        con = duckdb.connect()
        rows = con.execute(
            f"""SELECT dt, CASE WHEN filename LIKE '%/merged-%' THEN 'merged' ELSE 'plain' END, count(*), count(DISTINCT id),
                       list((id, epoch_ms(event_time))), typeof(dt)
                FROM read_json('{copy.name}/{PREFIX}dt=*/*.jsonl*', hive_partitioning = true, filename = true,
                               columns = {{id: 'VARCHAR', data: 'JSON', event_time: 'TIMESTAMPTZ'}})
                GROUP BY ALL"""
        ).fetchall()
        got = {(str(dt), k): (n, d) for dt, k, n, d, _, _ in rows}
        check(got == groups, f"DuckDB on a copy: count(*) and count(DISTINCT id) by dt and kind {got}")
        check({i: t for *_, pairs, _ in rows for i, t in pairs} == times, "DuckDB on a copy: every event_time with its milliseconds")
        check({r[5] for r in rows} == {"DATE"}, "DuckDB types dt as DATE")

        # The recipes of docs/querying.md, as written but for the bucket, over everything and one day.
        blocks = recipes()
        check(sorted(blocks) == ["clickhouse", "duckdb", "polars"], f"docs/querying.md has a Python recipe for {sorted(blocks)}")
        for name, code in sorted(blocks.items()):
            moto_code = code.replace(DOC_URL, f"{endpoint}/{BUCKET}/").replace(DOC_S3, f"s3://{BUCKET}/")
            if name != "duckdb":  # DuckDB's reads a synced copy, in the directory it is run from
                check(moto_code != code, f"{name}: the recipe names {DOC_URL} or {DOC_S3}, replaced by moto's bucket")
            for day in (None, D3):
                run_code = moto_code.replace("dt=*", f"dt={day}") if day else moto_code
                what = f"{name} recipe over {day or 'the whole archive'}"
                try:
                    result, printed = run_recipe(run_code, name, cwd=copy.name if name == "duckdb" else None)
                except Exception as e:  # noqa: BLE001 - the check says what failed
                    check(False, f"{what} runs: {type(e).__name__}: {str(e)[:400]}")
                    continue
                expected = per_day(objects, day)
                check(result == expected, f"{what}: lines, events and latest event_time by dt {result}")
                check(str(day or D3) in printed, f"{what} prints its table")
        copy.cleanup()
    finally:
        for child in reversed(children):
            procs.stop(child)
        check.show_logs(logs.name)
        logs.cleanup()
    check.finish()


if __name__ == "__main__":
    main()
