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


EXITING = """
import multiprocessing, os, signal, sys, time
from egcfg.stopping import stop_on_sigterm, work_done


def worker(finish):
    stop_on_sigterm()
    if finish:
        work_done()
    os.kill(os.getpid(), signal.SIGTERM)  # the parent's terminate() while the worker exits
    time.sleep(5)


if __name__ == "__main__":
    p = multiprocessing.get_context("spawn").Process(target=worker, args=(sys.argv[1] == "done",))
    p.start()
    p.join()
    print(p.exitcode)
"""


def test_a_worker_whose_work_is_done_ends_on_sigterm_without_a_traceback(tmp_path):
    """stopping.work_done: after it a SIGTERM ends the process at once. Before it, the same signal
    in an exiting multiprocessing worker is a KeyboardInterrupt that multiprocessing prints as a
    traceback (seen when a run stopping on a worker's error terminated the other workers)."""
    script = tmp_path / "exiting.py"
    script.write_text(EXITING)
    out = {}
    for mode in ("done", "not-done"):
        res = subprocess.run([sys.executable, str(script), mode], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
        out[mode] = res
    assert out["done"].stdout.split() == ["-15"] and "Traceback" not in out["done"].stderr
    assert "KeyboardInterrupt" in out["not-done"].stderr  # (what the test guards against)
