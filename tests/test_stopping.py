"""SIGTERM stops a process like Ctrl-C even when it lands in a finalizer (stopping.py)."""

import subprocess
import sys

from conftest import ROOT

PROGRAM = """
import os, signal
from egcfg.stopping import stop_on_sigterm

stop_on_sigterm()

class Slow:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the signal arrives while this finalizer runs
        for _ in range(100000):
            pass

try:
    Slow()
    for _ in range(10 ** 7):
        pass
    print("not stopped")
except KeyboardInterrupt:
    print("stopped")
"""


def test_sigterm_in_a_finalizer_still_stops_the_process_and_prints_nothing():
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "stopped", (done.stdout, done.stderr)
    assert done.stderr == ""  # no "Exception ignored in ... KeyboardInterrupt" traceback
