"""Stage 4, memory: RSS of one mailhook process in local HTTP mode (directory archive, one
partition) after each batch of requests from wrk, and its peak."""

import shutil
import sys
import tempfile
from pathlib import Path

import procs
from local_http import LineCounter, rss_kib, start_mailhook, wrk


def measure(binary, batches, fs):
    """RSS after each batch of requests on one mailhook process, and its peak."""
    if not shutil.which("wrk"):
        return {"skipped": "wrk not found (apt-get install wrk)"}
    with tempfile.TemporaryDirectory(dir=fs) as data:
        process, port = start_mailhook(binary, data)
        stored_lines = LineCounter(data)
        try:
            points = [{"requests": 0, "rss_kib": rss_kib(process.pid)}]
            total = 0
            for batch in batches:
                target = total + batch
                result = wrk(port, 600, 16, until=lambda: stored_lines() >= target)
                if result["non_2xx"] or result["errors"]:
                    sys.exit(f"memory run: {result['non_2xx']} non-200 answers, {result['errors']} socket errors")
                total += result["requests"]
                points.append({"requests": total, "rss_kib": rss_kib(process.pid)})
            peak = rss_kib(process.pid, "VmHWM")
            stored = stored_lines()
        finally:
            procs.stop(process, timeout=60)
        # SIGTERM sealed the segments: the visible files hold every line once.
        line_bytes = sum(p.stat().st_size for p in Path(data).glob("dt=*/*.jsonl")) / max(stored, 1)
    # wrk counts the answers it read; requests in flight when a thread stops are stored but not
    # counted, so there may be more objects than counted answers, never fewer.
    if stored < total:
        sys.exit(f"memory run: {total} requests answered 200 but only {stored} lines stored")
    return {"points": points, "peak_kib": peak, "stored": stored, "line_bytes": line_bytes}
