#!/usr/bin/env python3
"""The archive on a bucket encrypted with a customer managed KMS key (ArchiveKmsKeyArn), in moto:

- moto makes a KMS key and a bucket whose default encryption is SSE-KMS with that key and a
  Bucket Key, as template.yaml sets it when ArchiveKmsKeyArn is given;
- the real binary (the local server on that S3 archive) stores every accepted sample, and a
  resend is answered 200 without a second object;
- `mailhook compact` merges them, and the per-event and the merged objects are all encrypted with
  the key.

moto does not enforce IAM, so the roles' KMS permissions are checked in check_template.py.
Run by tests/all.sh inside .venv (moto, boto3).
"""

import os
import subprocess
import tempfile
import time
from pathlib import Path

import boto3

import local_s3
import procs
from checks import Checks
from e2e import EXPECTED, event_body, http

ROOT = Path(__file__).resolve().parents[2]
BUCKET, PREFIX, TOKEN = "mail-kms", "mail/", "kms-token"


def post(port, body):
    status, _ = http("POST", f"http://127.0.0.1:{port}/", body, {"X-Webhook-Token": TOKEN})
    return status


def bodies():
    """Every sample the receiver stores, as sent."""
    return [event_body(name) for name, e in sorted(EXPECTED.items()) if e["status"] == 200 and e["event"]]


def main():
    check = Checks("sse_kms")
    subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    binary = ROOT / "target/debug/mailhook"
    logs = tempfile.TemporaryDirectory()
    with open(Path(logs.name) / "moto-and-mailhook.log", "w") as log:
        moto, s3, env = local_s3.start(BUCKET, log)
        server = None
        try:
            kms = boto3.client("kms", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                               aws_access_key_id="test", aws_secret_access_key="test")
            key = kms.create_key(Description="mailhook archive")["KeyMetadata"]["Arn"]
            s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [{
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
                "BucketKeyEnabled": True}]})

            port = procs.free_port()
            server_env = dict(os.environ, **env, WEBHOOK_TOKENS=TOKEN, ARCHIVE_URI=f"s3://{BUCKET}/{PREFIX}",
                              LISTEN_ADDR=f"127.0.0.1:{port}", RUST_LOG="warn")
            server = procs.start([binary], log, env=server_env)
            procs.need_port(port, server)
            sent = list(bodies())
            statuses = [post(port, b) for b in sent] + [post(port, sent[0])]
            check(statuses == [200] * (len(sent) + 1), f"{len(sent)} samples and a resend answered 200: {statuses}")
            procs.stop(server)
            server = None

            def objects():
                pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
                return [o["Key"] for page in pages for o in page.get("Contents", [])]

            def encrypted(keys):
                heads = [s3.head_object(Bucket=BUCKET, Key=k) for k in keys]
                return all(h.get("ServerSideEncryption") == "aws:kms" and h.get("SSEKMSKeyId") == key for h in heads)

            stored = objects()
            check(len(stored) == len(sent), f"one object per event, none for the resend: {len(stored)}")
            check(encrypted(stored), "every per-event object is encrypted with the customer managed key")

            through = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400 * 400))
            run = subprocess.run([binary, "compact", "--through", through, "--min-age", "0"], env=dict(os.environ, **env, ARCHIVE_URI=f"s3://{BUCKET}/{PREFIX}"),
                                 stdout=log, stderr=log, timeout=300)
            merged = [k for k in objects() if k.endswith(".jsonl.gz")]
            check(run.returncode == 0 and merged and not [k for k in objects() if k.endswith(".jsonl")],
                  f"compaction merged every event: exit {run.returncode}, {len(merged)} merged objects")
            check(encrypted(merged), "every merged object is encrypted with the customer managed key")
        finally:
            if server:
                procs.stop(server)
            procs.stop(moto)
    check.show_logs(logs.name)
    check.finish()


if __name__ == "__main__":
    main()
