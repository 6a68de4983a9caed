"""What bench/run's stages share: where the repository is, running a build step, and the
percentile the tables use."""

import math
import subprocess
from http.server import ThreadingHTTPServer
from pathlib import Path

import procs

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
# The provider's reference receiver, next to this repository, and its built-in token; mailhook is
# given the same token so that both receivers get the same bytes.
REFERENCE = ROOT.parent / "shared" / "reference" / "webhook.php"
REFERENCE_TOKEN = "your_webhook_secret_token_here"


def run(cmd, **kw):
    """A build or measuring step, echoed to stderr and run in the repository; raises if it fails."""
    procs.log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, cwd=ROOT, check=True, **kw)


def percentile(values, p):
    """The nearest-rank percentile: a value that was measured, never one interpolated."""
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]


class QuietServer(ThreadingHTTPServer):
    """A stand-in server (the Lambda Runtime API, S3) that stays quiet about clients it loses."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a process killed mid-poll resets its connection; that is expected here
