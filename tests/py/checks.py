"""The tally the Python checks keep: one line per check, the logs of what they started when one
failed, and a closing line, `NAME: N passed, N failed`, that CI reads."""

import sys
from pathlib import Path


class Checks:
    def __init__(self, name):
        self.name, self.passed, self.failures = name, [], []

    def __call__(self, ok, message):
        print(("ok   " if ok else "FAIL ") + message, flush=True)
        (self.passed if ok else self.failures).append(message)

    def show_logs(self, folder, lines=60):
        """After a failure, the end of every log in `folder`."""
        if not self.failures:
            return
        for log in sorted(Path(folder).iterdir()):
            print(f"--- {log.name} (last {lines} lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))

    def finish(self, note=""):
        print(f"{self.name}: {len(self.passed)} passed, {len(self.failures)} failed{note}")
        sys.exit(1 if self.failures else 0)
