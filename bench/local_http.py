"""mailhook's local HTTP mode under wrk, shared by the memory and throughput stages: the request
body bench/wrk.lua sends, a wrk run, a mailhook started on a directory archive, its RSS, and a
count of the lines it has stored."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import procs
from common import REFERENCE_TOKEN, ROOT


def sample_body():
    """The body of events/new.json, a real adm.tools event."""
    return json.loads((ROOT / "events" / "new.json").read_text())["body"]


def body_format():
    body = json.loads(sample_body())
    body["uid"] = "UID-PLACEHOLDER"
    body["tstamp"] = int(time.time())
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return text.replace("%", "%%").replace('"UID-PLACEHOLDER"', "%d")


# Each wrk run numbers its events from a block of its own (threads add 1e8 apart within it).
UID_BLOCKS = itertools.count(10**12, 10**10)


def wrk(port, seconds, connections, until=None, threads=2):
    """Runs wrk for `seconds`, or until `until()` is true (then stops it with SIGINT, after which
    wrk still prints its summary). Returns the summary from bench/wrk.lua's done()."""
    cmd = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(ROOT / "bench" / "wrk.lua"), f"http://127.0.0.1:{port}/",
        "--", REFERENCE_TOKEN, body_format(), str(next(UID_BLOCKS)),
    ]
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if until is not None:
        while process.poll() is None and not until():
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate()
    line = next((l for l in stdout.splitlines() if l.startswith("WRK_JSON ")), None)
    if line is None:
        sys.exit(f"wrk printed no summary:\n{stdout}\n{stderr}")
    result = json.loads(line[len("WRK_JSON "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def rss_kib(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_mailhook(binary, data_dir):
    """mailhook in local HTTP mode on a directory archive, with the reference receiver's token;
    returns (process, port) once it listens. Stop it with procs.stop, which seals its segments."""
    port = procs.free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "WEBHOOK_TOKENS": REFERENCE_TOKEN,
        "ACCOUNT_ID": "123456",
        "ARCHIVE_URI": str(data_dir),
        "LISTEN_ADDR": f"127.0.0.1:{port}",
        "RUST_LOG": "warn",
    }
    process = procs.start([binary], env=env)
    procs.need_port(port, process)
    return process, port


class LineCounter:
    """Counts the lines mailhook has stored under a directory archive: each segment's, the live
    ones included (a live segment's published snapshot repeats its lines, so it is skipped), and
    the per-event files of older versions. Segments only grow and keep their inode when sealed,
    so each file is read once, from where the last count stopped."""

    def __init__(self, root):
        self.root, self.read = Path(root), {}  # inode -> (bytes read, lines in them)

    def __call__(self):
        total, counted = 0, set()
        for path in self.root.glob("*/*"):
            name = path.name
            visible = name.endswith(".jsonl") and not name.startswith(".")
            if not (name.endswith(".live") or (visible and not (path.parent / f".{name[:-6]}.live").exists())):
                continue
            try:
                size, inode = (lambda st: (st.st_size, st.st_ino))(path.stat())
                if inode in counted:
                    continue
                offset, lines = self.read.get(inode, (0, 0))
                if size > offset:
                    with path.open("rb") as f:
                        f.seek(offset)
                        chunk = f.read(size - offset)
                    whole = chunk.rfind(b"\n") + 1  # a batch being written may be half there
                    offset, lines = offset + whole, lines + chunk.count(b"\n", 0, whole)
                    self.read[inode] = (offset, lines)
            except FileNotFoundError:  # sealed or replaced since the listing
                continue
            counted.add(inode)
            total += lines
        return total


