#!/usr/bin/env python3
"""scripts/verify against a local stand-in for a deployed stack: moto_server on loopback serves
S3 (a versioned bucket, as the template makes it), CloudFormation (a stack with the outputs,
parameters and log group verify reads), CloudWatch alarms and CloudWatch Logs; mailhook runs
under `cargo lambda watch`, reached through its function URL emulation.

Two stand-ins, said plainly:
- Logs: Lambda ships the function's stdout into its log group; here a thread of this test ships
  every line `cargo lambda watch` prints (the function's real JSON lines among them) into moto's
  log group, as they come.
- Alarms: moto 5.2.5's CloudFormation does not create AWS::CloudWatch::Alarm resources (it skips
  them), so the alarms are made with PutMetricAlarm and given to verify with --alarm; the lookup
  through describe-stack-resources runs only against AWS.

A good run passes every check and leaves no version of the test event in the bucket. Then each
breakage fails it, exit 1, with a last line naming the check: a wrong token, a wrong account ID,
an alarm in ALARM, the object missing, no log line, the token in the log.

Run by tests/all.sh from the repository root, inside .venv (moto, boto3, cargo-lambda, awscli).
"""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3

import local_s3
import procs
from checks import Checks

ROOT = Path(__file__).resolve().parents[2]
VERIFY = ROOT / "scripts/verify"
BUCKET = "mailhook-verify"
PREFIX = "mail/"
STACK = "verify"
LOG_GROUP = f"/aws/lambda/{STACK}-mailhook"
TOKEN = "example-token"
ACCOUNT_ID = "123456"
ALARMS = ["StoreFailedAlarm", "SenderRefusedAlarm", "FunctionErrorsAlarm", "ThrottlesAlarm"]
# A template for moto: the parameters and outputs of template.yaml that verify reads, and the
# function's log group. The URL is cargo lambda's function URL emulation.
STACK_TEMPLATE = """
Parameters:
  AccountId: {Type: String}
  LogLevel: {Type: String, Default: INFO}
  FunctionUrl: {Type: String}
Resources:
  MailhookLogGroup:
    Type: AWS::Logs::LogGroup
    Properties: {LogGroupName: %s}
Outputs:
  WebhookUrl: {Value: !Ref FunctionUrl}
  ConfirmationUrl: {Value: !Sub "${FunctionUrl}webhook-confirm.txt"}
  ArchiveLocation: {Value: s3://%s/%s}
""" % (LOG_GROUP, BUCKET, PREFIX)


def ship_logs(path, logs, stop, leak):
    """Puts every line written to `path` into LOG_GROUP, as Lambda does with a function's stdout.
    While `leak` is set, each line gets the token appended: a function that logs it."""
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName="watch")
    with open(path, errors="replace") as f:
        while not stop.is_set():
            lines = [line.rstrip("\n") for line in f.readlines()]
            lines = [line for line in lines if line.strip()]
            if lines:
                now = int(time.time() * 1000)
                tail = f" token={TOKEN}" if leak.is_set() else ""
                events = [{"timestamp": now, "message": line + tail} for line in lines]
                logs.put_log_events(logGroupName=LOG_GROUP, logStreamName="watch", logEvents=events)
            time.sleep(0.2)


def main():
    check = Checks("verify")
    children = []
    logs_dir = tempfile.TemporaryDirectory()
    stop, leak = threading.Event(), threading.Event()
    try:
        moto, s3, s3_env = local_s3.start(BUCKET, open(Path(logs_dir.name) / "moto.log", "w"))
        children.append(moto)
        endpoint = s3_env["AWS_ENDPOINT_URL_S3"]
        client = lambda service: boto3.client(  # noqa: E731
            service, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
        )
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        cloudwatch = client("cloudwatch")
        for name in ALARMS:
            cloudwatch.put_metric_alarm(
                AlarmName=f"{STACK}-{name}-X1", Namespace="mailhook", MetricName=name.removesuffix("Alarm"),
                Statistic="Sum", Period=300, EvaluationPeriods=1, Threshold=1,
                ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching",
            )
            cloudwatch.set_alarm_state(AlarmName=f"{STACK}-{name}-X1", StateValue="OK", StateReason="test")

        port = procs.free_port()
        url = f"http://127.0.0.1:{port}/lambda-url/mailhook/"
        client("cloudformation").create_stack(
            StackName=STACK,
            TemplateBody=STACK_TEMPLATE,
            Parameters=[
                {"ParameterKey": "AccountId", "ParameterValue": ACCOUNT_ID},
                {"ParameterKey": "FunctionUrl", "ParameterValue": url},
            ],
        )

        env = dict(
            os.environ,
            **s3_env,
            WEBHOOK_TOKENS=TOKEN,
            ACCOUNT_ID=ACCOUNT_ID,
            ARCHIVE_URI=f"s3://{BUCKET}/{PREFIX}",
            AWS_LAMBDA_LOG_FORMAT="JSON",  # as the template sets it
        )
        watch_log = Path(logs_dir.name) / "watch.log"
        watch = procs.start(
            ["cargo", "lambda", "watch", "--invoke-address", "127.0.0.1", "--invoke-port", port],
            open(watch_log, "w"),
            cwd=ROOT,
            env=env,
        )
        children.append(watch)
        shipper = threading.Thread(target=ship_logs, args=(watch_log, client("logs"), stop, leak), daemon=True)
        shipper.start()
        # The first request waits for the build.
        end = time.monotonic() + 900
        while True:
            try:
                with urllib.request.urlopen(url + "webhook-confirm.txt", timeout=900) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > end or watch.poll() is not None:
                sys.exit("verify: cargo lambda watch did not serve the function")
            time.sleep(1)

        verify_env = local_s3.aws_cli_env(endpoint)
        verify_env.pop("WEBHOOK_TOKEN", None)
        alarm_args = [a for name in ALARMS for a in ("--alarm", f"{STACK}-{name}-X1")]

        def verify(*args):
            run = subprocess.run(
                [sys.executable, VERIFY, "--stack", STACK, *alarm_args, "--log-wait", "20", *args],
                env=verify_env, capture_output=True, text=True, timeout=300,
            )
            print(f"$ scripts/verify {' '.join(args)}  (exit {run.returncode})")
            print("\n".join("  " + line for line in (run.stdout + run.stderr).splitlines()))
            lines = run.stdout.strip().splitlines()
            return run.returncode, run.stdout, lines[-1] if lines else ""

        def versions():
            listing = s3.list_object_versions(Bucket=BUCKET)
            return [v["Key"] for kind in ("Versions", "DeleteMarkers") for v in listing.get(kind, [])]

        # A good run: every check passes, and the test event leaves nothing in the bucket.
        code, out, last = verify("--token", TOKEN)
        check(code == 0 and last == "verify: all 7 checks passed", f"a good run passes: exit {code}, {last!r}")
        for name in ("stack", "confirm", "post", "object", "log", "alarms", "cleanup"):
            check(f"\nok    {name}: " in "\n" + out, f"a good run prints its {name} check")
        request_id = re.search(r"^ok    object: .* request_id (\S+)$", out, re.M)
        check(
            request_id is not None and f"INFO accepted request_id={request_id[1]} status=200" in out,
            "the log check shows the function's own line for the stored request",
        )
        check(versions() == [], f"no version of the test event is left in the bucket: {versions()}")
        (ROOT / "target").mkdir(exist_ok=True)
        (ROOT / "target/verify-output.txt").write_text(out)

        # Without a stack: every value given on the command line.
        run = subprocess.run(
            [
                sys.executable, VERIFY, "--token", TOKEN, "--url", url, "--account-id", ACCOUNT_ID,
                "--archive", f"s3://{BUCKET}/{PREFIX}", "--log-group", LOG_GROUP, *alarm_args,
            ],
            env=verify_env, capture_output=True, text=True, timeout=300,
        )
        check(
            run.returncode == 0 and run.stdout.rstrip().endswith("verify: all 6 checks passed") and versions() == [],
            f"a run without a stack passes: exit {run.returncode}, {run.stdout.strip().splitlines()[-1:]}",
        )
        code, out, last = verify("--stack", "no-such-stack", "--token", TOKEN)
        check(code == 1 and last.startswith("verify FAILED: stack:") and "does not exist" in last, f"a wrong stack fails: {last!r}")

        code, out, last = verify("--token", "not-the-token")
        check(code == 1 and last.startswith("verify FAILED: post: POST") and "401" in last, f"a wrong token fails: {last!r}")
        code, out, last = verify("--token", TOKEN, "--account-id", "654321")
        check(
            code == 1 and last.startswith("verify FAILED: confirm:") and "'654321'" in last, f"a wrong account ID fails: {last!r}"
        )
        check(versions() == [], "the failed confirm check still deleted its test event")

        cloudwatch.set_alarm_state(AlarmName=f"{STACK}-StoreFailedAlarm-X1", StateValue="ALARM", StateReason="test")
        code, out, last = verify("--token", TOKEN)
        check(
            code == 1 and last == f"verify FAILED: alarms: {STACK}-StoreFailedAlarm-X1 ALARM", f"an alarm in ALARM fails: {last!r}"
        )
        cloudwatch.set_alarm_state(AlarmName=f"{STACK}-StoreFailedAlarm-X1", StateValue="OK", StateReason="test")

        # The function stores under mail/; verify looks for the object under another prefix.
        code, out, last = verify("--token", TOKEN, "--archive", f"s3://{BUCKET}/elsewhere/")
        check(
            code == 1 and last.startswith("verify FAILED: object: s3://") and last.endswith("is not there"),
            f"a missing object fails: {last!r}",
        )
        leak.set()
        code, out, last = verify("--token", TOKEN)
        leak.clear()
        check(code == 1 and last.startswith("verify FAILED: log: the log holds the token, in a line of request_id")
            and TOKEN not in out, f"a token in the log fails: {last!r}")
        client("logs").create_log_group(logGroupName="/aws/lambda/empty")
        code, out, last = verify("--token", TOKEN, "--log-group", "/aws/lambda/empty", "--log-wait", "2")
        check(code == 1 and last.startswith("verify FAILED: log: no line with request_id"), f"a missing log line fails: {last!r}")
        code, out, last = verify("--token", TOKEN, "--log-group", "/aws/lambda/empty", "--log-wait", "2", "--log-level", "WARN")
        check(code == 0 and "ok    log: skipped: LogLevel WARN" in out, f"at LogLevel WARN no log line is expected: {last!r}")
    finally:
        stop.set()
        for child in reversed(children):
            procs.stop(child)
        check.show_logs(logs_dir.name)
        logs_dir.cleanup()
    check.finish()


if __name__ == "__main__":
    main()
