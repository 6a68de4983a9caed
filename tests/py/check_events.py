#!/usr/bin/env python3
"""Checks the samples in events/ against what AWS sends, as AWS's own SAM CLI generates it.

- Every function URL sample has the shape of `sam local generate-event apigateway http-api-proxy`
  (API Gateway HTTP API, payload format 2.0, which function URLs use): every key path of either
  is in the other, with the same JSON type, but for what a function URL sends differently, as
  the Lambda developer guide's "Invoking Lambda function URLs", Request payload format, documents
  it (FUNCTION_URL below).
- events/compact.json is what EventBridge Scheduler hands the compaction function: the
  template's ScheduleV2 `Input`, passed as the event unchanged, is a JSON object, and
  compact.json is one too, with only the keys the handler reads (src/compact/lambda.rs), each of
  the type it reads; the handler ignores a key of another type without a word.

Usage: tests/py/check_events.py [EVENT.json ...]   (default: every file in events/)
Run by tests/all.sh inside .venv (the SAM CLI, and cfn-lint's template loader).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cfnlint.decode import decode

from checks import Checks

ROOT = Path(__file__).resolve().parents[2]

# How a function URL's event differs from the HTTP API's (AWS Lambda developer guide, "Invoking
# Lambda function URLs", Request payload format; AWS's Powertools LambdaFunctionUrlSchema agrees).
FUNCTION_URL = {
    # "Function URLs don't use this parameter. Lambda sets this to null (or excludes it)."
    "null or absent": {"pathParameters", "stageVariables", "requestContext.authentication"},
    # Only with AuthType AWS_IAM (an `iam` object; the HTTP API's `jwt` never): the template's
    # URL is AuthType NONE, so null or absent.
    "no authorizer": {"requestContext.authorizer"},
    # Sent only when the request has them: no cookie, no query string, no body.
    "optional": {"cookies", "queryStringParameters", "body"},
    # Placeholders the guide gives: a function URL has no routes or stages.
    "constant": {"version": "2.0", "routeKey": "$default", "requestContext.routeKey": "$default",
                 "requestContext.stage": "$default"},
}
# Objects whose keys are the request's own (header names, parameters): each value a string.
MAPS = {"headers", "queryStringParameters", "pathParameters", "stageVariables"}
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}  # the guide's valid values

# What src/compact/lambda.rs reads from the event, and as what.
COMPACT_KEYS = {"through": str, "min_age_seconds": int}


def kind(value):
    """The JSON type of a value, as the event's reader sees it (a bool is no number)."""
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}[type(value)]


def compare(generated, sample, path, problems):
    """Every key path and value type of `sample` against `generated`, recursively."""
    for key in sorted(set(generated) | set(sample)):
        where = f"{path}.{key}" if path else key
        if where in FUNCTION_URL["null or absent"] | FUNCTION_URL["no authorizer"]:
            if sample.get(key) is not None:
                problems.append(f"{where}: a function URL (AuthType NONE) sends null or nothing, the sample has {kind(sample[key])}")
            continue
        if key not in sample:
            if where not in FUNCTION_URL["optional"]:
                problems.append(f"{where}: missing (every function URL event has it)")
            continue
        if key not in generated:
            problems.append(f"{where}: not in an HTTP API payload 2.0 event")
            continue
        want, got = kind(generated[key]), kind(sample[key])
        if want != got:
            problems.append(f"{where}: {got}, where the generated event has {want}")
        elif where in MAPS:
            problems += [f"{where}.{k}: {kind(v)}, not a string" for k, v in sample[key].items() if not isinstance(v, str)]
        elif want == "array":
            element = kind(generated[key][0])
            problems += [f"{where}[{i}]: {kind(v)}, not {element}" for i, v in enumerate(sample[key]) if kind(v) != element]
        elif want == "object":
            compare(generated[key], sample[key], where, problems)


def function_url_problems(generated, sample):
    problems = []
    compare(generated, sample, "", problems)
    for where, value in FUNCTION_URL["constant"].items():
        node = sample
        for part in where.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node != value:
            problems.append(f"{where}: {node!r}, a function URL sends {value!r}")
    http = sample.get("requestContext", {}).get("http", {})
    if http.get("method") not in METHODS:
        problems.append(f"requestContext.http.method: {http.get('method')!r} is none of {sorted(METHODS)}")
    if sample.get("rawPath") != http.get("path"):
        problems.append(f"rawPath {sample.get('rawPath')!r} is not requestContext.http.path {http.get('path')!r}")
    return problems


def compact_problems(sample):
    """compact.json against the schedule's input and the handler's keys."""
    problems = []
    source = (ROOT / "src/compact/lambda.rs").read_text()
    for key in COMPACT_KEYS:
        if f'payload.get("{key}")' not in source:
            problems.append(f"src/compact/lambda.rs no longer reads {key!r}: update COMPACT_KEYS")
    schedules = [e["Properties"] for r in decode(str(ROOT / "template.yaml"))[0]["Resources"].values()
                 if r.get("Type") == "AWS::Serverless::Function"
                 for e in r.get("Properties", {}).get("Events", {}).values() if e.get("Type") == "ScheduleV2"]
    if not schedules:
        problems.append("template.yaml has no ScheduleV2 event")
    for schedule in schedules:
        sent = json.loads(schedule.get("Input", "null"))
        if not isinstance(sent, dict) or not set(sent) <= set(COMPACT_KEYS):
            problems.append(f"the schedule's Input {schedule.get('Input')!r} is not an object of {sorted(COMPACT_KEYS)}")
    if not isinstance(sample, dict):
        return problems + [f"compact.json is {kind(sample)}, the schedule sends an object"]
    for key, value in sample.items():
        want = COMPACT_KEYS.get(key)
        if want is None:
            problems.append(f"{key}: the handler reads only {sorted(COMPACT_KEYS)}")
        elif kind(value) != kind(want()) or (want is int and value < 0):
            problems.append(f"{key}: {kind(value)} {value!r}, the handler reads a {'non-negative integer' if want is int else 'string'}")
    if isinstance(sample.get("through"), str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", sample["through"]):
        problems.append(f"through: {sample['through']!r} is not a date such as 2026-11-26")
    return problems


def main():
    files = [Path(a) for a in sys.argv[1:]] or sorted((ROOT / "events").glob("*.json"))
    generated = json.loads(subprocess.run(
        ["sam", "local", "generate-event", "apigateway", "http-api-proxy"],
        check=True, capture_output=True, text=True, env=dict(os.environ, SAM_CLI_TELEMETRY="0")).stdout)
    check = Checks("check_events")
    for path in files:
        sample = json.loads(path.read_text())
        if path.name == "compact.json":
            problems = compact_problems(sample)
            what = "EventBridge Scheduler's input to the compaction function"
        else:
            problems = function_url_problems(generated, sample)
            what = "a function URL event (sam local generate-event apigateway http-api-proxy)"
        check(not problems, f"{path.name}: {what}" + "".join(f"\n       {p}" for p in problems))
    check.finish()


if __name__ == "__main__":
    main()
