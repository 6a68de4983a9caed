"""Stage 5, throughput: wrk on loopback, every request a distinct event, against mailhook (local
HTTP mode, directory archive) and the provider's reference receiver (php -S, 2 workers), on the
disk and on tmpfs; and once against the physical limit, examples/http_floor.rs: the same hyper
connection and tokio runtime answering 200 without storing anything."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import procs
from common import REFERENCE
from local_http import LineCounter, start_mailhook, wrk


def measure(binary, seconds, connections, places):
    """Both receivers on each (directory, description) in `places`: the disk, where mailhook pays
    for making every event durable and the reference does not, and tmpfs, where neither can.
    Then the floor, which touches no file system."""
    if not shutil.which("wrk"):
        return {"skipped": "wrk not found (apt-get install wrk)"}
    runs = [throughput_in(binary, seconds, connections, fs, name) for fs, name in places]
    return {"seconds": seconds, "connections": connections, "runs": runs, "floor": floor(binary, seconds, connections)}


def floor(binary, seconds, connections):
    """examples/http_floor, built with mailhook's profile next to it, under the same wrk run."""
    port = procs.free_port()
    process = procs.start([Path(binary).parent / "examples" / "http_floor", f"127.0.0.1:{port}"])
    try:
        procs.need_port(port, process)
        wrk(port, 1, connections)
        return wrk(port, seconds, connections)
    finally:
        procs.stop(process)


def throughput_in(binary, seconds, connections, fs, fs_name):
    results = {"fs": fs_name}
    # mailhook, local HTTP mode, directory archive
    with tempfile.TemporaryDirectory(dir=fs) as data:
        process, port = start_mailhook(binary, data)
        stored_lines = LineCounter(data)
        try:
            wrk(port, 1, connections)  # warm up
            before = stored_lines()
            results["mailhook"] = wrk(port, seconds, connections)
            results["mailhook"]["stored"] = stored_lines() - before
        finally:
            procs.stop(process, timeout=60)
    # the provider's reference receiver, run in place of a copy in a scratch directory
    if not shutil.which("php"):
        results["reference"] = {"skipped": "php not found (apt-get install php-cli)"}
        return results
    if not REFERENCE.exists():
        results["reference"] = {"skipped": f"{REFERENCE} not found"}
        return results
    with tempfile.TemporaryDirectory(dir=fs) as scratch:
        shutil.copy(REFERENCE, Path(scratch) / "webhook.php")
        port = procs.free_port()
        env = {**os.environ, "PHP_CLI_SERVER_WORKERS": "2"}
        # php -S forks its workers: procs.stop stops them with it.
        process = procs.start(["php", "-S", f"127.0.0.1:{port}", "webhook.php"], cwd=scratch, env=env)
        try:
            procs.need_port(port, process)
            wrk(port, 1, connections)
            log_file = Path(scratch) / "data.log"
            before = sum(1 for _ in log_file.open()) if log_file.exists() else 0
            results["reference"] = wrk(port, seconds, connections)
            results["reference"]["stored"] = sum(1 for _ in log_file.open()) - before
        finally:
            procs.stop(process, timeout=60)
        results["php"] = subprocess.run(["php", "-r", "echo PHP_VERSION;"], capture_output=True, text=True).stdout
    return results
