"""Stage 6, cost per million events: nothing is measured here. The table is computed from the
prices below and what stages 2 and 4 measured: the warm duration, and the bytes of a stored line
and of what a request writes to the log (its log line and its EMF metrics line)."""

import math

# Prices in USD, us-east-1, as published by AWS on the pricing pages for Lambda, S3 and Data
# Firehose (read 2026-11). Change them here if they move; the cost tables are computed from them.
PRICE = {
    "lambda_request": 0.20 / 1e6,
    "lambda_arm64_gb_second": 0.0000133334,
    "s3_put": 0.005 / 1000,
    "s3_gb_month": 0.023,
    "firehose_gb": 0.029,  # Direct PUT ingestion, each record rounded up to 5 KB
    "logs_gb": 0.50,  # CloudWatch Logs ingestion, standard class
    "s3_get": 0.0004 / 1000,
    "s3_list": 0.005 / 1000,  # LIST is priced like PUT
    # DELETE requests are free; DeleteObjects is a POST, priced here like PUT to be safe.
    "s3_delete_objects": 0.005 / 1000,
}

# Used when the memory stage or the cold stage has no figure of its own (an older results.json).
DEFAULT_LINE_BYTES = 700
DEFAULT_LOG_BYTES = 900


def measure(results):
    """The cost columns from the results so far: billed at the measured warm duration (rounded up
    to Lambda's 1 ms unit), and at 20 and 50 ms, which bracket an in-region S3 PUT."""
    warm = results["cold"]["warm_duration_ms"]["median"]
    line_bytes = results.get("memory", {}).get("line_bytes", DEFAULT_LINE_BYTES)
    log_bytes = log_bytes_per_request(results)
    return {
        "line_bytes": line_bytes,
        "cost": [per_million(b, line_bytes, log_bytes) for b in (max(1, math.ceil(warm)), 20, 50)],
    }


def log_bytes_per_request(results):
    return results["cold"].get("log_bytes_per_request") or DEFAULT_LOG_BYTES


def per_million(billed_ms, line_bytes, log_bytes):
    """A million events, each one Lambda request billed `billed_ms` at 128 MB, one S3 PUT and
    `log_bytes` ingested by CloudWatch Logs; Firehose's ingestion for the same events, for the
    comparison."""
    gb_seconds = 0.125 * billed_ms / 1000
    lambda_duration = gb_seconds * PRICE["lambda_arm64_gb_second"] * 1e6
    lambda_requests = PRICE["lambda_request"] * 1e6
    puts = PRICE["s3_put"] * 1e6
    storage = line_bytes * 1e6 / 1e9 * PRICE["s3_gb_month"]
    logs = log_bytes * 1e6 / 1e9 * PRICE["logs_gb"]
    firehose = 5 * 1024 * 1e6 / 1e9 * PRICE["firehose_gb"] if line_bytes <= 5 * 1024 else None
    return {
        "billed_ms": billed_ms,
        "lambda_requests": lambda_requests,
        "lambda_duration": lambda_duration,
        "s3_puts": puts,
        "s3_storage_month": storage,
        "logs": logs,
        "total": lambda_requests + lambda_duration + puts + logs,
        "firehose_ingest": firehose,
    }
