#!/usr/bin/env python3
"""`sam local invoke`, for real: the function as `sam build` built it from template.yaml (arm64,
provided.al2023), run by AWS's own Runtime Interface Emulator (which the SAM CLI ships and adds to
the image), in a local stand-in for the provided.al2023 image (tests/sam/base-image.sh), with arm64
run under qemu-user-static.

Every file in events/ is invoked with `sam local invoke -e`: each function URL sample against its
status in tests/data/expected.json, then the bucket is read back (each accepted event once, its
line byte for byte), and the EMF line each request writes is read from the function's log. Then the
compaction function is invoked once with events/compact.json, and the merged objects are read.

No registry is reachable, so nothing is pulled. The container sits on a Docker network this test
creates, and moto_server listens on that network's gateway address only: the container reaches
nothing else. Run by tests/all.sh after `sam build`, with the engine from tests/sam/engine.sh.

    python tests/py/sam_local.py [--build-dir target/sam] [--arch arm64]
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3

import local_s3
import procs
from checks import Checks

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
TABLE = json.loads((ROOT / "tests/data/expected.json").read_text())
BUCKET = "mailhook-sam"
PREFIX = "mail/"
TOKEN = "example-token"
ACCOUNT_ID = "123456"
NETWORK = "mailhook-sam-test"
# A network of this test's own, on this machine: its gateway is the host's address on it.
SUBNET, GATEWAY = "172.30.240.0/24", "172.30.240.1"


def compact_json(text):
    """The sender's JSON on one line, as mailhook stores it: whitespace outside strings dropped."""
    out, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif ch not in " \t\r\n":
            out.append(ch)
    return "".join(out)


def body_of(event):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        import base64

        return base64.b64decode(body).decode()
    return body


def raw_data(line):
    """The raw text of a stored line's `data`: between `,"data":` and the last `,"webhook_id":`."""
    start = line.index(',"data":') + len(',"data":')
    return line[start : line.rindex(',"webhook_id":')]


def docker(*args, check=True):
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default="target/sam")
    parser.add_argument("--arch", default="arm64", choices=["arm64", "x86_64"])
    args = parser.parse_args()
    template = ROOT / args.build_dir / "template.yaml"
    if not template.exists():
        sys.exit(f"sam_local: {template} is missing: run `sam build --build-dir {args.build_dir}` first")

    check = Checks("sam local invoke")

    started = time.monotonic()
    image = subprocess.run([ROOT / "tests/sam/base-image.sh", args.arch], capture_output=True, text=True, check=True).stdout.strip()
    docker("network", "rm", NETWORK, check=False)
    docker("network", "create", "--driver", "bridge", "--subnet", SUBNET, "--gateway", GATEWAY, NETWORK)
    logs = tempfile.TemporaryDirectory()
    moto = None
    try:
        moto, s3, s3_env = local_s3.start(BUCKET, open(Path(logs.name) / "moto.log", "w"), host=GATEWAY)
        settings = {
            "ARCHIVE_URI": f"s3://{BUCKET}/{PREFIX}",
            "AWS_ENDPOINT_URL_S3": s3_env["AWS_ENDPOINT_URL_S3"],
            "S3_FORCE_PATH_STYLE": "true",
        }
        env_vars = Path(logs.name) / "env.json"
        env_vars.write_text(json.dumps({
            "MailhookFunction": {**settings, "WEBHOOK_TOKENS": f"old-token,{TOKEN}", "ACCOUNT_ID": ACCOUNT_ID},
            "CompactFunction": settings,
        }))
        # The template's defaults (TokenStore=SsmParameter): no token in the environment, SSM at
        # moto (one endpoint for every service). SAM local names the stack "local".
        ssm_env_vars = Path(logs.name) / "env-ssm.json"
        ssm_env_vars.write_text(json.dumps({
            "MailhookFunction": {**settings, "AWS_ENDPOINT_URL_SSM": s3_env["AWS_ENDPOINT_URL_S3"], "ACCOUNT_ID": ACCOUNT_ID},
        }))
        ssm = boto3.client("ssm", endpoint_url=s3_env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        # SAM hands the container the credentials and region of its own environment.
        sam_env = dict(os.environ, SAM_CLI_TELEMETRY="0", AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                       AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
                       AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)

        def invoke(function, event, tokens_in_ssm=False):
            overrides = [] if tokens_in_ssm else ["--parameter-overrides", f"TokenStore=TemplateParameter WebhookTokens={TOKEN}"]
            run = subprocess.run(
                ["sam", "local", "invoke", function, "--template", template, "--event", EVENTS / event,
                 "--invoke-image", image, "--skip-pull-image", "--docker-network", NETWORK,
                 "--env-vars", ssm_env_vars if tokens_in_ssm else env_vars, *overrides],
                cwd=ROOT, env=sam_env, capture_output=True, text=True, timeout=300,
            )
            reply = None
            for line in reversed(run.stdout.strip().splitlines()):
                try:
                    reply = json.loads(line)
                    break
                except json.JSONDecodeError:
                    continue
            emf = []
            for log_line in run.stderr.splitlines():
                if log_line.startswith("{") and '"_aws"' in log_line:
                    emf.append(json.loads(log_line))
            return run, reply, emf

        # Every function URL sample.
        receiver = {n: e for n, e in TABLE.items() if "function" not in e}
        for name, expected in sorted(receiver.items()):
            t0 = time.monotonic()
            run, reply, emf = invoke("MailhookFunction", name)
            took = time.monotonic() - t0
            if reply is None or "statusCode" not in reply:
                check(False, f"sam local invoke {name}: no response (exit {run.returncode}): {run.stderr.strip()[-800:]}")
                continue
            check(reply["statusCode"] == expected["status"], f"sam local invoke {name}: status {reply['statusCode']} in {took:.1f} s")
            request_emf = [m for m in emf if "Stored" in m]
            if name != "confirm.json":
                outcome = "Stored" if expected["status"] == 200 else "Rejected"
                counts = [{k: m[k] for k in ("Stored", "Duplicate", "Rejected", "StoreFailed", "SenderRefused")} for m in request_emf]
                check(len(request_emf) == 1 and request_emf[0][outcome] == 1
                      and request_emf[0]["SenderRefused"] == int(name == "wrong-token.json"),
                      f"{name}: one EMF line, {outcome} 1 (SenderRefused for the provider's wrong token): {counts}")
        # Each accepted sample again: its resend is a duplicate.
        run, reply, emf = invoke("MailhookFunction", "new.json")
        check(reply and reply["statusCode"] == 200 and any(m.get("Duplicate") == 1 for m in emf),
              f"a resend of new.json: 200, counted as Duplicate ({reply and reply.get('statusCode')})")

        # The first deploy with the template's defaults: the token parameter does not exist yet, so
        # an event gets 503 (and its one resend later); the stack's SetTokenCommand puts it (as
        # SecureString), and the resend is accepted, by a function that was not redeployed.
        run, reply, emf = invoke("MailhookFunction", "new.json", tokens_in_ssm=True)
        check(reply and reply["statusCode"] == 503 and "No webhook token is configured yet" in reply.get("body", ""),
              f"TokenStore=SsmParameter before the token is set: 503 ({reply}; {run.stderr.strip()[-300:]})")
        ssm.put_parameter(Name="/local/webhook-tokens", Value=f"old-token,{TOKEN}", Type="SecureString", Overwrite=True)
        run, reply, emf = invoke("MailhookFunction", "new.json", tokens_in_ssm=True)
        check(reply and reply["statusCode"] == 200 and any(m.get("Duplicate") == 1 for m in emf),
              f"TokenStore=SsmParameter once SetTokenCommand has put the token: 200 ({reply}; {run.stderr.strip()[-300:]})")
        check(TOKEN not in run.stderr and TOKEN not in run.stdout, "the token read from SSM is not in the logs")

        # The bucket: each accepted event once, its data byte for byte as sent, under its id.
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
        lines = {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode() for k in keys}
        accepted = {n: json.loads((EVENTS / n).read_text()) for n, e in receiver.items() if e["status"] == 200 and e["event"]}
        sent = {compact_json(body_of(e)): n for n, e in accepted.items()}
        check(len(keys) == len(sent), f"{len(keys)} objects for {len(sent)} distinct accepted events")
        for key, line in lines.items():
            record = json.loads(line)
            name = sent.get(raw_data(line))
            check(name is not None, f"{key}: data byte for byte one of the samples")
            check(line.endswith("\n") and line.count("\n") == 1, f"{key}: one line")
            check(key == f"{PREFIX}dt={key.split('dt=')[1][:10]}/{record['id']}.jsonl", f"{key}: named by the line's id")
            if name:
                event = accepted[name]
                check(record["ip"] == event["requestContext"]["http"]["sourceIp"], f"{key}: ip from the request context")
                check(record["ua"] == event["headers"].get("user-agent"), f"{key}: ua")
                check(record["webhook_id"] == event["headers"].get("x-webhook-id"), f"{key}: webhook_id")
                check(record["event"] == receiver[name]["event"], f"{key}: event {record['event']}")

        # The compaction function, once, with the sample event: it merges the partitions two days
        # old and older, and leaves the others.
        through = (datetime.now(timezone.utc) - timedelta(days=2)).date().isoformat()
        eligible = [k for k in keys if k.split("dt=")[1][:10] <= through]
        run, reply, emf = invoke("CompactFunction", "compact.json")
        check(reply is not None and reply.get("merged") == len(eligible),
              f"sam local invoke CompactFunction compact.json: {reply} for {len(eligible)} events through {through} ({run.stderr.strip()[-300:] if reply is None else 'ok'})")
        check(any(m.get("CompactionFailed") == 0 and m.get("CompactedEvents") == len(eligible) for m in emf),
              f"compaction's EMF line: CompactionFailed 0, CompactedEvents {len(eligible)}")
        after = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if "/dt=" in o["Key"]]
        merged_lines = []
        for key in after:
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            merged_lines += (gzip.decompress(body) if key.endswith(".gz") else body).decode().splitlines(keepends=True)
        check(sorted(merged_lines) == sorted(lines.values()), "after compaction every line is there once, byte for byte")
        check(not any(k in after for k in eligible) and all(k in after for k in keys if k not in eligible),
              f"the eligible per-event objects became merged ones; the others stayed: {after}")
        lease = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}_compaction.lease")["Body"].read())
        check(lease["expires_unix_ms"] == 0, f"the compaction released its lease (wrote it expired): {lease}")
    finally:
        if moto:
            procs.stop(moto)
        for container in docker("ps", "-aq", "--filter", f"network={NETWORK}", check=False).stdout.split():
            docker("rm", "-f", container, check=False)
        docker("network", "rm", NETWORK, check=False)
        check.show_logs(logs.name, 40)
        logs.cleanup()
    check.finish(f", in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
