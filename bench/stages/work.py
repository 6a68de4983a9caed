"""Stage 1, work per event: criterion's benches/request.rs, the checks, the record and the key
with the store stubbed out, alone ("pure") and through the whole router."""

import json
import sys

from common import ROOT, run

EVENTS = ("new", "create", "flags-set", "flags-set-deleted", "new-20kb-snippet")


def measure(smoke):
    cmd = ["cargo", "bench", "--locked", "--bench", "request"]
    if smoke:
        cmd += ["--profile", "dev", "--", "--quick", "--noplot"]
    else:
        cmd += ["--", "--noplot"]
    run(cmd, stdout=sys.stderr)
    rows = []
    for group in ("pure", "router"):
        base = ROOT / "target" / "criterion" / group
        for name in EVENTS:
            estimates = json.loads((base / name / "new" / "estimates.json").read_text())
            benchmark = json.loads((base / name / "new" / "benchmark.json").read_text())
            rows.append(
                {
                    "group": group,
                    "event": name,
                    "median_us": estimates["median"]["point_estimate"] / 1000,
                    "bytes": benchmark.get("throughput", {}).get("Bytes"),
                }
            )
    return rows
