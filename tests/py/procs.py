"""Process helpers shared by the Python checks (tests/py/) and the benchmarks (bench/): a free
loopback port, a process started in its own session, waiting for its port, stopping it with
whatever it started, and a log line on stderr.

Every child gets its own session so that stopping it reaches its own children (cargo lambda watch
runs the function under it, php -S forks its workers) and never the caller's process group."""

import os
import signal
import socket
import subprocess
import sys
import time


def log(message):
    """A progress line on stderr, so stdout keeps only what a check or a report prints."""
    print(message, file=sys.stderr, flush=True)


def free_port():
    """A loopback port that was free a moment ago (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=60, process=None, host="127.0.0.1"):
    """True once something accepts connections on `host`:`port`. False after `seconds`, or as
    soon as `process` (if given) has exited: then nothing is coming."""
    end = time.monotonic() + seconds
    while True:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        if process is not None and process.poll() is not None:
            return False
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def need_port(port, process, seconds=20):
    """wait_port, or exit saying why: the process died, or it never listened."""
    if wait_port(port, seconds, process):
        return
    if process.poll() is not None:
        sys.exit(f"server on port {port} exited with {process.returncode}")
    sys.exit(f"nothing listened on port {port} within {seconds} s")


def start(cmd, output=subprocess.DEVNULL, **popen):
    """Starts `cmd` in a session of its own, its stdout and stderr into `output` (an open file;
    nowhere by default). Other keyword arguments (env, cwd, stdout, stderr) go to Popen."""
    popen.setdefault("stdout", output)
    popen.setdefault("stderr", output)
    return subprocess.Popen([str(c) for c in cmd], start_new_session=True, **popen)


def stop(process, timeout=10):
    """SIGTERM to the process's session (as started by `start`), SIGKILL if it has not exited
    within `timeout` seconds; returns its exit code. A process already waited for is left alone:
    its id may belong to another process by now."""
    if process.returncode is not None:
        return process.returncode
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass  # exited, and the whole group with it
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()
