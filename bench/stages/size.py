"""Stage 3, package size: `cargo lambda build --release --arm64 --output-format zip`, the zip and
the binary inside it. bench/levers measures what each build setting does to it."""

import shutil
import sys
import zipfile

from common import ROOT, run


def measure():
    if not shutil.which("cargo-lambda"):
        return {"skipped": "cargo-lambda not found (pip install -r tests/requirements.txt)"}
    run(["cargo", "lambda", "build", "--release", "--arm64", "--output-format", "zip"], stdout=sys.stderr)
    zip_path = ROOT / "target" / "lambda" / "mailhook" / "bootstrap.zip"
    with zipfile.ZipFile(zip_path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    return {"zip_bytes": zip_path.stat().st_size, "bootstrap_bytes": unpacked}
