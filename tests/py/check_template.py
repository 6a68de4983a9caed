#!/usr/bin/env python3
"""Checks what can be checked of template.yaml and the README's Athena SQL without AWS.

- The template keeps its promises: retained, private, encrypted, TLS-only bucket; a create-only
  role; NoEcho token without default; JSON logs with retention; a projected dt partition.
- The Glue table's columns are the fields of docs/schema.json, with its types, and they fit the
  values (checked on lines written by the real binary from every sample event); its
  timestamp.formats read every form of time mailhook has written.
- Every Athena ```sql block of the README and of docs/querying.md parses as Athena (Trino) SQL and names only columns and
  struct fields the table has.

Run by tests/all.sh inside .venv (cfn-lint for the CloudFormation loader, sqlglot).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path

import sqlglot
from cfnlint.decode import decode
from sqlglot import exp

import procs

ROOT = Path(__file__).resolve().parents[2]
failures, passed = [], []


def check(ok, message):
    print(("ok   " if ok else "FAIL ") + message, flush=True)
    (passed if ok else failures).append(message)


def parse_hive_type(text):
    """'struct<a:string,b:array<string>>' -> {'a': 'string', 'b': 'array<string>'}, or the type."""
    if not text.startswith("struct<"):
        return text
    body, fields, depth, current = text[len("struct<") : -1], {}, 0, ""
    for ch in body + ",":
        if ch == "," and depth == 0:
            name, _, kind = current.partition(":")
            fields[name] = parse_hive_type(kind)
            current = ""
            continue
        depth += ch == "<"
        depth -= ch == ">"
        current += ch
    return fields


def joda_regex(pattern):
    """A regex of the text a Joda pattern of the SerDe's `timestamp.formats` reads whole, for the
    letters mailhook's table uses. Joda's parser reads 1 to N fraction digits for N S's."""
    fields = {"yyyy": r"\d{4}", "MM": r"\d{2}", "dd": r"\d{2}", "HH": r"\d{2}", "mm": r"\d{2}", "ss": r"\d{2}"}
    out = ""
    for token in re.finditer(r"'(?P<q>[^']*)'|(?P<l>([A-Za-z])\3*)|(?P<o>.)", pattern):
        if token["q"] is not None:
            out += re.escape(token["q"])
        elif token["l"]:
            if token["l"].startswith("S"):
                out += rf"\d{{1,{len(token['l'])}}}"
            elif token["l"] in fields:
                out += fields[token["l"]]
            else:
                raise ValueError(f"no regex for {token['l']} in {pattern}")
        else:
            out += re.escape(token["o"])
    return re.compile(out)


def fits(value, hive_type, timestamp_formats=()):
    """Whether the Hive JSON SerDe can read this JSON value as this column type. A timestamp is a
    string that one of the table's `timestamp.formats` reads whole."""
    if value is None:
        return True
    if isinstance(hive_type, dict):
        return isinstance(value, dict) and all(fits(value.get(k), t, timestamp_formats) for k, t in hive_type.items())
    if hive_type == "timestamp":
        return isinstance(value, str) and any(f.fullmatch(value) for f in timestamp_formats)
    if hive_type == "string":
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if hive_type == "array<string>":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return False


def build(resource):
    """What sam build reads of a function's Metadata (the checkov key holds the scan's skips)."""
    return {k: v for k, v in resource["Metadata"].items() if k != "checkov"}


def resolve(node, true):
    """The node as CloudFormation sees it when exactly the conditions in `true` hold: each Fn::If
    taken, AWS::NoValue dropped."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return resolve(yes if name in true else no, true)
        return {k: resolve(v, true) for k, v in node.items() if v != {"Ref": "AWS::NoValue"}}
    if isinstance(node, list):
        items = [resolve(v, true) for v in node]
        return [v for v in items if v != {"Ref": "AWS::NoValue"}]
    return node


def hive_type_of(prop):
    """The column type a docs/schema.json property needs: timestamp for a time, a struct (dict)
    for an object, array<string> or string."""
    refs = [prop.get("$ref")] + [p.get("$ref") for p in prop.get("oneOf", [])]
    if "#/$defs/utc_millis" in refs:
        return "timestamp"
    kinds = prop.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "object" in kinds:
        return dict
    if "array" in kinds and prop.get("items") == {"type": "string"}:
        return "array<string>"
    if "#/$defs/text_or_null" in refs or "string" in kinds:
        return "string"
    return None


def lines_from_the_binary():
    """Runs the real binary on every accepted sample and returns the stored lines."""
    subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    port = procs.free_port()
    archive = tempfile.mkdtemp()
    env = dict(os.environ, WEBHOOK_TOKENS="example-token", ARCHIVE_URI=archive, LISTEN_ADDR=f"127.0.0.1:{port}")
    server = procs.start([ROOT / "target/debug/mailhook"], env=env, stderr=None)  # stdout dropped, stderr shown
    try:
        procs.need_port(port, server, 30)
        expected = json.loads((ROOT / "tests/data/expected.json").read_text())
        for name, e in expected.items():
            event = json.loads((ROOT / "events" / name).read_text())
            if e["status"] != 200 or not e["event"]:
                continue
            body = event["body"]
            if event.get("isBase64Encoded"):
                import base64

                body = base64.b64decode(body)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/",
                data=body if isinstance(body, bytes) else body.encode(),
                headers={"X-Webhook-Token": "example-token", "X-Webhook-Id": "1187"},
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                assert reply.status == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
    # SIGTERM above sealed the segments: every line is in a visible dt=*/*.jsonl file.
    return [json.loads(line) for p in sorted(Path(archive).glob("dt=*/*.jsonl")) for line in p.read_text().splitlines()]


def main():
    template = decode(str(ROOT / "template.yaml"))[0]
    resources, params = template["Resources"], template["Parameters"]

    bucket = resources["ArchiveBucket"]
    props = bucket["Properties"]
    check(bucket.get("DeletionPolicy") == "Retain", "bucket is retained on stack deletion")
    block = props["PublicAccessBlockConfiguration"]
    check(all(block[k] is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")), "all four public access blocks")
    for kms in (False, True):
        rule = resolve(props["BucketEncryption"], {"HasKmsKey"} if kms else set())["ServerSideEncryptionConfiguration"]
        wanted = ([{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "ArchiveKmsKeyArn"}},
                    "BucketKeyEnabled": True}] if kms else [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}])
        check(rule == wanted, f"default encryption: {'SSE-KMS with ArchiveKmsKeyArn and a Bucket Key' if kms else 'SSE-S3'}")
    kms_arn = params["ArchiveKmsKeyArn"]
    check(kms_arn["Default"] == "" and template["Conditions"]["HasKmsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ArchiveKmsKeyArn"}, ""]}]}
          and re.fullmatch(kms_arn["AllowedPattern"], "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
          and not re.fullmatch(kms_arn["AllowedPattern"], "alias/mailhook"), "ArchiveKmsKeyArn: empty (SSE-S3) or a key ARN")
    expiry = params["ArchiveExpirationDays"]
    check(expiry["Default"] == 365 and expiry["MinValue"] == 0,
          "retention: events expire after a year by default (personal data); 0 keeps them")
    check(props["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced", "BucketOwnerEnforced")
    check(props["VersioningConfiguration"] == {"Status": "Enabled"}, "versioning on: a deleted object can be restored")
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"] if isinstance(r, dict) and "Id" in r}
    noncurrent = rules.get("expire-noncurrent-versions", {})
    check(noncurrent.get("Status") == "Enabled"
          and noncurrent.get("NoncurrentVersionExpiration") == {"NoncurrentDays": {"Ref": "NoncurrentVersionDays"}}
          and params["NoncurrentVersionDays"]["Default"] == 7 and params["NoncurrentVersionDays"]["MinValue"] >= 1,
          "old versions expire after NoncurrentVersionDays, 7 by default")
    check(rules.get("remove-expired-delete-markers", {}).get("ExpiredObjectDeleteMarker") is True,
          "delete markers are removed once their versions have expired")
    deny = resources["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    check(deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, "TLS-only bucket policy")

    function = resources["MailhookFunction"]["Properties"]
    check(function["Architectures"] == ["arm64"] and function["Runtime"] == "provided.al2023", "arm64 on provided.al2023")
    check(function["MemorySize"] == 128 and function["Handler"] == "bootstrap", "128 MB, bootstrap")
    store_ms = int(function["Environment"]["Variables"]["STORE_TIMEOUT_MS"])
    # A request may read the token parameter (at most TOKEN_READ_BUDGET) before it stores.
    read_s = [int(m) for f in (ROOT / "src").rglob("*.rs")
              for m in re.findall(r"TOKEN_READ_BUDGET: Duration = Duration::from_secs\((\d+)\)", f.read_text())]
    check(len(read_s) == 1 and function["Timeout"] * 1000 > store_ms + read_s[0] * 1000,
          f"timeout {function['Timeout']} s above the token read ({read_s} s) plus the store budget {store_ms} ms")
    deploy = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["metadata"]["lambda"]["deploy"]
    env = function["Environment"]["Variables"]
    check(env.get("SSL_CERT_FILE") == deploy["env"].get("SSL_CERT_FILE") == "/etc/pki/tls/certs/ca-bundle.crt",
          "SSL_CERT_FILE names Amazon Linux 2023's CA bundle, in the template and for cargo lambda deploy")
    check(env["STORE_TIMEOUT_MS"] == deploy["env"]["STORE_TIMEOUT_MS"] and function["Timeout"] == deploy["timeout"]
          and function["MemorySize"] == deploy["memory"], "template and cargo lambda deploy agree on budget, timeout, memory")
    check(function["FunctionUrlConfig"]["AuthType"] == "NONE", "function URL, token as the authentication")
    check(function["LoggingConfig"]["LogFormat"] == "JSON", "JSON logs")
    check("RetentionInDays" in resources["MailhookLogGroup"]["Properties"], "log retention")
    kms_statements = [s for policy in resolve(function["Policies"], {"HasKmsKey"}) for s in policy["Statement"]][1:]
    check(kms_statements == [{"Sid": "EncryptWithArchiveKey", "Effect": "Allow", "Action": "kms:GenerateDataKey",
                              "Resource": {"Ref": "ArchiveKmsKeyArn"}}],
          "with SSE-KMS the receiver may also get data keys from the archive's key, nothing more")
    statements = [s for policy in resolve(function["Policies"], set()) for s in policy["Statement"]]
    check(len(statements) == 1, "one permission statement")
    put = statements[0]
    check(put["Action"] == "s3:PutObject" and put["Effect"] == "Allow", "only s3:PutObject")
    check(put["Resource"] == {"Fn::Sub": "${ArchiveBucket.Arn}/${ArchivePrefix}dt=*"},
          "only into the archive's dt= partitions, not compaction's lease")
    check(put["Condition"] == {"Null": {"s3:if-none-match": "false"}}, "only with If-None-Match (create-only)")
    tokens = params["WebhookTokens"]
    check(tokens.get("NoEcho") is True and tokens.get("Default") == ""
          and all(re.fullmatch(tokens["AllowedPattern"], v) for v in ("", "tok", "old,new"))
          and not any(re.fullmatch(tokens["AllowedPattern"], v) for v in (",", "a b", "a,", " a")),
          "token NoEcho, empty by default for the first deploy (503 until set), a comma-separated list otherwise")
    # Where the tokens come from, at each value of TokenStore: the SSM parameter's name is the same
    # in the environment, the one permission and the SetTokenCommand output.
    store = params["TokenStore"]
    check(store["Default"] == "SsmParameter" and store["AllowedValues"] == ["SsmParameter", "TemplateParameter"]
          and template["Conditions"]["TokensInSsm"] == {"Fn::Equals": [{"Ref": "TokenStore"}, "SsmParameter"]},
          "tokens from an SSM parameter by default, or from WebhookTokens")
    name = "/${AWS::StackName}/webhook-tokens"
    arn = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter" + name
    for value in store["AllowedValues"]:
        ssm = value == "SsmParameter"
        true = {"TokensInSsm"} if ssm else set()
        variables = resolve(function["Environment"]["Variables"], true)
        reads = [s for policy in resolve(function["Policies"], true) for s in policy["Statement"] if "ssm:" in str(s["Action"])]
        command = resolve(template["Outputs"]["SetTokenCommand"]["Value"], true)["Fn::Sub"]
        if ssm:
            check(variables["WEBHOOK_TOKENS"] == "" and variables["WEBHOOK_TOKENS_PARAMETER"] == {"Fn::Sub": name}
                  and reads == [{"Sid": "ReadTokenParameter", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": {"Fn::Sub": arn}}]
                  and f"--name {name} --type SecureString --overwrite" in command,
                  f"TokenStore={value}: the function reads {name} (GetParameter on it alone), which SetTokenCommand puts")
        else:
            check(variables["WEBHOOK_TOKENS"] == {"Ref": "WebhookTokens"} and variables["WEBHOOK_TOKENS_PARAMETER"] == ""
                  and reads == [] and "WebhookTokens=" in command,
                  f"TokenStore={value}: tokens from WebhookTokens, no SSM permission")
    check(variables.get("AWS_ENDPOINT_URL_SSM") == "", "AWS_ENDPOINT_URL_SSM declared empty (SSM itself), for --env-vars")
    rule = template.get("Rules", {}).get("TokensInOnePlace", {})
    check(rule.get("RuleCondition") == {"Fn::Equals": [{"Ref": "TokenStore"}, "SsmParameter"]}
          and [a["Assert"] for a in rule.get("Assertions", [])] == [{"Fn::Equals": [{"Ref": "WebhookTokens"}, ""]}],
          "a WebhookTokens given with TokenStore=SsmParameter (an update of an older stack) stops the deploy instead of being ignored")
    check(resources["MailhookFunction"]["Metadata"]["BuildMethod"] == "rust-cargolambda", "built by cargo-lambda")

    # The compaction function: the same code, its own role, a schedule, a switch.
    compact = resources["CompactFunction"]
    cprops = compact["Properties"]
    check(compact["Condition"] == "CompactionEnabled" and template["Conditions"]["CompactionEnabled"] == {"Fn::Equals": [{"Ref": "Compaction"}, "true"]}
          and params["Compaction"]["AllowedValues"] == ["true", "false"], "compaction can be turned off with the Compaction parameter")
    check(cprops["Handler"] == "compact" and cprops["CodeUri"] == function["CodeUri"]
          and build(compact) == build(resources["MailhookFunction"]), "the same code, dispatched by Handler (_HANDLER) = compact")
    check(cprops["Timeout"] == 900 and cprops["ReservedConcurrentExecutions"] == 1 and cprops["EventInvokeConfig"]["MaximumRetryAttempts"] == 0,
          "compaction: 15 minutes, one run at a time, no automatic retry")
    check(cprops["MemorySize"] == 1024, "compaction: 1,024 MB, sized from its CPU per event (BENCHMARKS.md)")
    events = list(cprops["Events"].values())
    check(len(events) == 1 and events[0]["Type"] == "ScheduleV2" and events[0]["Properties"]["ScheduleExpression"].startswith("cron(")
          and events[0]["Properties"]["ScheduleExpressionTimezone"] == "UTC", "compaction runs on a schedule from EventBridge Scheduler, in UTC")
    hours = events[0]["Properties"]["ScheduleExpression"].split()[1]
    check(hours == "1/6", f"compaction runs four times a day (hours {hours})")
    ckms = [s for policy in resolve(cprops["Policies"], {"HasKmsKey"}) for s in policy["Statement"]
            if any(a.startswith("kms:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    check(len(ckms) == 1 and sorted(ckms[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"] and ckms[0]["Resource"] == {"Ref": "ArchiveKmsKeyArn"},
          "with SSE-KMS compaction may decrypt and get data keys from the archive's key, nothing more")
    cstatements = [s for policy in resolve(cprops["Policies"], set()) for s in policy["Statement"]]
    listing = [s for s in cstatements if s["Action"] == "s3:ListBucket"]
    check(len(listing) == 1 and listing[0]["Resource"] == {"Fn::GetAtt": ["ArchiveBucket", "Arn"]}
          and listing[0]["Condition"] == {"StringLike": {"s3:prefix": [{"Ref": "ArchivePrefix"}, {"Fn::Sub": "${ArchivePrefix}*"}]}},
          "compaction lists the bucket under the archive prefix only")
    objects = [s for s in cstatements if s is not listing[0]]
    check(len(objects) == 1 and sorted(objects[0]["Action"]) == ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
          and objects[0]["Resource"] == {"Fn::Sub": "${ArchiveBucket.Arn}/${ArchivePrefix}*"},
          "compaction gets, puts and deletes objects under the archive prefix only")
    check("WEBHOOK_TOKENS" not in cprops["Environment"]["Variables"], "the compaction function is not given the webhook token")
    # Another S3-compatible endpoint: declared on both functions (so --env-vars can set it), and
    # by default nothing that changes S3 on AWS: an empty endpoint (which mailhook drops at start)
    # and virtual-hosted addressing.
    for name, props_ in (("MailhookFunction", function), ("CompactFunction", cprops)):
        variables = props_["Environment"]["Variables"]
        check(variables.get("AWS_ENDPOINT_URL_S3") == {"Ref": "S3Endpoint"} and variables.get("S3_FORCE_PATH_STYLE") == {"Ref": "S3ForcePathStyle"},
              f"{name} declares AWS_ENDPOINT_URL_S3 and S3_FORCE_PATH_STYLE from the parameters")
    check(params["S3Endpoint"]["Default"] == "" and params["S3ForcePathStyle"]["Default"] == "false",
          "by default the functions use S3 itself: S3Endpoint empty, S3ForcePathStyle false")
    check(re.fullmatch(params["S3Endpoint"]["AllowedPattern"], "") and re.fullmatch(params["S3Endpoint"]["AllowedPattern"], "https://acc.r2.cloudflarestorage.com")
          and not re.fullmatch(params["S3Endpoint"]["AllowedPattern"], "acc.r2.cloudflarestorage.com"),
          "S3Endpoint takes an http(s) URL or nothing")
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {(a["Namespace"], a["MetricName"], a["Dimensions"][0]["Value"]["Ref"]) for a in alarms}
    check({("mailhook", "CompactionFailed", "CompactFunction"), ("AWS/Lambda", "Errors", "CompactFunction")} <= watched,
          "a failed compaction alarms: its CompactionFailed metric, and its Lambda errors (timeouts write no metric)")
    blocked = resources["CompactionBlockedAlarm"]["Properties"]
    runs_a_day = 24 // int(hours.split("/")[1])
    check(blocked["MetricName"] == "CompactionLeaseHeld" and blocked["Period"] == 86400
          and blocked["Threshold"] == runs_a_day and blocked["ComparisonOperator"] == "GreaterThanOrEqualToThreshold",
          f"a lease held through all {runs_a_day} scheduled runs of a day alarms (CompactionLeaseHeld)")

    # The silence alarm, at every value SilenceAlarmHours allows: off at 0; otherwise one-hour
    # periods over at most the day CloudWatch evaluates, missing data counted as silence, on a
    # metric only an accepted request (valid token) sets.
    silence = params["SilenceAlarmHours"]
    alarm = resources["SilenceAlarm"]
    check(silence["Default"] == 0 and alarm["Condition"] == "HasSilenceAlarm"
          and template["Conditions"]["HasSilenceAlarm"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SilenceAlarmHours"}, 0]}]},
          "the silence alarm is off by default and exists only when SilenceAlarmHours is not 0")
    a = alarm["Properties"]
    for hours in range(silence["MinValue"], silence["MaxValue"] + 1):
        if hours == 0:
            continue
        check(a["Period"] * hours <= 86400 and a["EvaluationPeriods"] == {"Ref": "SilenceAlarmHours"},
              f"SilenceAlarmHours={hours}: {hours} periods of {a['Period']} s fit CloudWatch's one-day window")
    check(a["MetricName"] == "Accepted" and a["ComparisonOperator"] == "LessThanThreshold" and a["Threshold"] == 1
          and a["TreatMissingData"] == "breaching", "silence: fewer than one accepted event, no data counts as silence")

    # The dashboard shows only metrics the function writes (src/telemetry/metrics.rs), in their namespace and
    # dimension, for the receiver function.
    emitted = set(re.findall(r'\("(\w+)", (?:COUNT|"Milliseconds")', (ROOT / "src" / "telemetry" / "metrics.rs").read_text()))
    body = json.loads(re.sub(r"\$\{[^}]+\}", "x", resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]))
    shown = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    check({"StoreFailed", "SenderRefused", "StoreLatency"} <= emitted, f"the metrics src/telemetry/metrics.rs writes: {sorted(emitted)}")
    check(all(m[0] == "mailhook" and m[1] in emitted or m[0] == "AWS/Lambda" for m in shown)
          and all(m[2] == "FunctionName" for m in shown),
          f"the dashboard shows metrics the function writes, by FunctionName: {sorted({m[1] for m in shown})}")
    check("${MailhookFunction}" in resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"], "the dashboard is the receiver's")

    table = resources["EventsTable"]["Properties"]["TableInput"]
    tp = table["Parameters"]
    check(tp["projection.enabled"] == "true" and tp["projection.dt.type"] == "date", "dt is projected as a date")
    check(tp["projection.dt.format"] == "yyyy-MM-dd" and tp["projection.dt.range"]["Fn::Sub"].endswith(",NOW+1DAYS"),
          "yyyy-MM-dd up to NOW+1DAYS: mailhook files an event up to a day ahead")
    levels = params["LogLevel"]["AllowedValues"]
    check("TRACE" not in levels and params["LogLevel"]["Default"] in levels,
          f"LogLevel cannot be TRACE, where the runtime logs raw invocations: {levels}")
    check(tp["storage.location.template"]["Fn::Sub"].endswith("${ArchivePrefix}dt=${!dt}/"), "location template matches the key layout")
    check(table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.apache.hive.hcatalog.data.JsonSerDe", "Hive JSON SerDe")
    columns = {c["Name"]: parse_hive_type(c["Type"]) for c in table["StorageDescriptor"]["Columns"]}
    partitions = {c["Name"]: c["Type"] for c in table["PartitionKeys"]}

    # The columns are docs/schema.json's fields, in its order, each typed as its values are.
    schema = json.loads((ROOT / "docs/schema.json").read_text())
    check(list(columns) == list(schema["properties"]) == schema["required"], f"the columns are the schema's fields: {list(columns)}")
    for name, prop in schema["properties"].items():
        check(hive_type_of(prop) == (dict if isinstance(columns.get(name), dict) else columns.get(name)),
              f"column {name} is {columns.get(name)}, as the schema has it ({hive_type_of(prop)})")
    formats = table["StorageDescriptor"]["SerdeInfo"].get("Parameters", {}).get("timestamp.formats", "")
    formats = [joda_regex(f) for f in formats.split(",") if f]
    for old in ("2026-11-26T16:46:12Z", "2026-11-26T16:46:12.97Z", "2026-11-26T16:46:12.123456789Z"):
        check(fits(old, "timestamp", formats), f"timestamp.formats reads an older line's time too: {old}")

    lines = lines_from_the_binary()
    check(len(lines) >= 5, f"{len(lines)} lines written by the binary")
    for line in lines:
        check(set(line) == set(columns), f"columns are the line's fields: {sorted(set(line) ^ set(columns)) or 'same'}")
        for name, hive_type in columns.items():
            check(fits(line.get(name), hive_type, formats), f"{line['data'].get('event')} uid {line['data'].get('uid')}: {name} fits {hive_type}")

    # The Athena SQL of the README and of docs/querying.md.
    sql_blocks = [s for doc in ("README.md", "docs/querying.md") for s in re.findall(r"```sql\n(.*?)```", (ROOT / doc).read_text(), re.S)]
    athena = [s for s in sql_blocks if "mailhook.events" in s]
    check(len(athena) >= 4, f"{len(athena)} Athena queries in README.md and docs/querying.md")
    known = set(columns) | set(partitions)
    for sql in athena:
        try:
            tree = sqlglot.parse_one(sql, read="trino")
        except sqlglot.errors.ParseError as e:
            check(False, f"Athena SQL parses: {e}")
            continue
        aliases = {a.alias for a in tree.find_all(exp.Alias)}
        for column in tree.find_all(exp.Column):
            parts = [p.name for p in column.parts]
            if parts[0] == "data":
                ok = len(parts) == 2 and parts[1] in columns["data"]
            else:
                ok = (len(parts) == 1 and (parts[0] in known or parts[0] in aliases))
            check(ok, f"Athena SQL names a real column: {'.'.join(parts)}")
        for table_ref in tree.find_all(exp.Table):
            check(f"{table_ref.db}.{table_ref.name}" == "mailhook.events", f"Athena SQL reads mailhook.events: {table_ref.sql()}")

    print(f"check_template: {len(passed)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
