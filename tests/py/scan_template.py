#!/usr/bin/env python3
"""Scans template.yaml with checkov, a security scanner for CloudFormation and SAM that nobody here
wrote. Every finding is either fixed or skipped in the resource's Metadata, checkov's own
mechanism, with the reason:

    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_116
            comment: why this check does not apply, or what covers it instead

Fails on any finding not skipped, on a skip without a reason, and on a scan that read nothing.
checkov lives in its own venv (.venv-checkov, tests/requirements-checkov.txt, which tests/all.sh
installs): it pins a boto3 older than .venv's. --skip-download keeps it off the network.

Usage: tests/py/scan_template.py [TEMPLATE]   (default: template.yaml)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from checks import Checks

ROOT = Path(__file__).resolve().parents[2]
CHECKOV = ROOT / ".venv-checkov/bin/checkov"


def main():
    template = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "template.yaml")
    scan = subprocess.run(
        [CHECKOV, "--file", template, "--framework", "cloudformation", "--skip-download", "--output", "json"],
        capture_output=True, text=True, env=dict(os.environ, BC_SKIP_MAPPING="TRUE"))
    try:
        report = json.loads(scan.stdout)
    except json.JSONDecodeError:
        sys.exit(f"checkov gave no report (exit {scan.returncode}):\n{scan.stdout[-2000:]}{scan.stderr[-2000:]}")
    results, summary = report["results"], report["summary"]
    check = Checks("scan_template")
    check(not summary["parsing_errors"] and summary["passed"] > 0,
          f"checkov {summary['checkov_version']} read {template.name}: {summary['resource_count']} resources,"
          f" {summary['passed']} checks passed, {summary['parsing_errors']} parsing errors")
    for f in results["failed_checks"]:
        check(False, f"{f['check_id']} {f['resource']} (lines {f['file_line_range']}): {f['check_name']}"
              " -- fix it, or skip it in the resource's Metadata with the reason")
    for s in results["skipped_checks"]:
        reason = (s["check_result"].get("suppress_comment") or "").strip()
        check(reason not in ("", "No comment provided"), f"{s['check_id']} {s['resource']}, skipped: {reason or 'NO REASON GIVEN'}")
    check.finish()


if __name__ == "__main__":
    main()
