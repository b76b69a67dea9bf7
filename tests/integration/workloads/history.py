# Recording client histories for the checkers of tests/lib (JSON lines, the
# formats of tkv-check-lin and tkv-check-si), and running the checkers.
#
# Inputs (set by ctest): TKV_CHECK_LIN, TKV_CHECK_SI = paths of the tools.
import json
import os
import subprocess
import threading
import time


def now():
    """The history clock: monotonic nanoseconds, shared by all threads."""
    return time.monotonic_ns()


def tool(name):
    p = os.environ.get(name)
    if not p or not os.access(p, os.X_OK):
        raise RuntimeError("%s must name the checker binary (got %r)" % (name, p))
    return p


def text(b):
    """Bytes as a JSON string that round-trips byte-exactly (latin-1)."""
    return b.decode("latin-1") if isinstance(b, bytes) else b


class History:
    """Thread-safe list of JSON-able records."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []

    def add(self, rec):
        with self.lock:
            self.records.append(rec)

    def write(self, path):
        with self.lock, open(path, "w") as f:
            for r in self.records:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        return path


def run_checker(env_name, path, args=()):
    """Runs a checker; returns (exit code, report)."""
    p = subprocess.run([tool(env_name)] + list(args) + [path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    return p.returncode, p.stdout.decode("utf-8", "replace")
