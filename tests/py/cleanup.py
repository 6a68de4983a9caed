#!/usr/bin/env python3
"""scripts/cleanup against moto_server on loopback: a versioned bucket, as the template makes it,
holding 1,200 keys with two versions each and a delete marker on every third (2,800 entries,
three DeleteObjects batches), and a CloudFormation stack whose ArchiveBucketName output names it,
as a mailhook stack's does.

- Typing the wrong name deletes nothing.
- `--stack` deletes the stack, then every version and delete marker, then the bucket.
- `--bucket` alone does the same to a bucket whose stack is already gone.
- A stack that does not exist, or a bucket that does not, fails with exit 1 and says so.

Run by tests/all.sh from the repository root, inside .venv (moto, boto3, awscli).
"""

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
from botocore.exceptions import ClientError

import local_s3
from checks import Checks

ROOT = Path(__file__).resolve().parents[2]
CLEANUP = ROOT / "scripts/cleanup"
BUCKET = "mailhook-cleanup"
STACK = "cleanup"
KEYS = 1200
# The parts of a mailhook stack that cleanup reads: its ArchiveBucketName output. moto needs a
# resource; the log group stands in for the stack's own.
STACK_TEMPLATE = """
Resources:
  MailhookLogGroup:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: /aws/lambda/cleanup-mailhook}
Outputs:
  ArchiveBucketName: {Value: %s}
"""


def fill(s3, bucket):
    """KEYS keys, two versions each, a delete marker on every third: returns how many entries."""
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    keys = [f"mail/dt=2026-11-{1 + i % 28:02d}/{i:032x}.jsonl" for i in range(KEYS)]

    def one(i_key):
        i, key = i_key
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"v":1}\n')
        s3.put_object(Bucket=bucket, Key=key, Body=b'{"v":2}\n')
        if i % 3 == 0:
            s3.delete_object(Bucket=bucket, Key=key)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, enumerate(keys)))
    return 2 * KEYS + len(range(0, KEYS, 3))


def entries(s3, bucket):
    """Versions and delete markers in the bucket, or None if there is no bucket."""
    count = 0
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            count += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    except ClientError as e:
        if e.response["Error"]["Code"] == "NoSuchBucket":
            return None
        raise
    return count


def main():
    check = Checks("cleanup")
    logs_dir = tempfile.TemporaryDirectory()
    moto = None
    try:
        moto, s3, s3_env = local_s3.start(BUCKET + "-unused", open(Path(logs_dir.name) / "moto.log", "w"))
        endpoint = s3_env["AWS_ENDPOINT_URL_S3"]
        cloudformation = boto3.client(
            "cloudformation", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )
        env = local_s3.aws_cli_env(endpoint)

        def cleanup(*args, answer=""):
            run = subprocess.run(
                [sys.executable, CLEANUP, *args], input=answer, env=env, capture_output=True, text=True, timeout=600
            )
            print(f"$ scripts/cleanup {' '.join(args)}  (exit {run.returncode})")
            print("\n".join("  " + line for line in (run.stdout + run.stderr).splitlines()))
            lines = run.stdout.strip().splitlines()
            return run.returncode, run.stdout, lines[-1] if lines else ""

        def stack_exists():
            try:
                stacks = cloudformation.describe_stacks(StackName=STACK)["Stacks"]
            except ClientError:
                return False
            return any(s["StackStatus"] != "DELETE_COMPLETE" for s in stacks)

        total = fill(s3, BUCKET)
        check(entries(s3, BUCKET) == total == 2800, f"the bucket holds {total} versions and delete markers")
        cloudformation.create_stack(StackName=STACK, TemplateBody=STACK_TEMPLATE % BUCKET)
        ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
        parameter = f"/{STACK}/webhook-tokens"
        ssm.put_parameter(Name=parameter, Value="the-token", Type="SecureString")

        def parameter_exists():
            return any(p["Name"] == parameter for p in ssm.describe_parameters()["Parameters"])

        code, out, last = cleanup("--stack", STACK, answer="mailhook\n")
        check(
            code == 1 and "nothing deleted" in last and entries(s3, BUCKET) == total and stack_exists() and parameter_exists(),
            f"a wrong name typed deletes nothing: exit {code}, {last!r}",
        )
        code, out, last = cleanup("--stack", STACK, answer=BUCKET + "\n")
        check(code == 0 and last == "cleanup: done", f"--stack runs to the end: exit {code}, {last!r}")
        check(f"stack: deleted {STACK}" in out and not stack_exists(), "the stack is deleted")
        check(f"token parameter: deleted {parameter}" in out and not parameter_exists(),
              "the token parameter SetTokenCommand put is deleted")
        check(f"empty: {total:,} object versions and delete markers deleted" in out, f"all {total} entries were deleted")
        check(entries(s3, BUCKET) is None, "no version or delete marker is left, and the bucket is deleted")

        other = BUCKET + "-2"
        total = fill(s3, other)
        code, out, last = cleanup("--bucket", other, "--yes")
        check(
            code == 0 and last == "cleanup: done" and entries(s3, other) is None,
            f"--bucket empties and deletes a bucket whose stack is gone: exit {code}, {last!r}",
        )

        code, out, last = cleanup("--stack", "no-such-stack", "--yes")
        check(
            code == 1 and last.startswith("cleanup FAILED: aws cloudformation describe-stacks") and "--bucket" in last,
            f"a stack that does not exist fails and says what to do: {last!r}",
        )
        code, out, last = cleanup("--bucket", "no-such-bucket", "--yes")
        check(code == 1 and "NoSuchBucket" in last, f"a bucket that does not exist fails: {last!r}")
    finally:
        if moto:
            import procs

            procs.stop(moto)
        check.show_logs(logs_dir.name)
        logs_dir.cleanup()
    check.finish()


if __name__ == "__main__":
    main()
