"""Stopping a process like Ctrl-C: SIGTERM raises KeyboardInterrupt in its main thread.

The CLI, the benchmark's worker processes and the model server all unwind this way when they are
stopped (kill, a time box, the parent ending its workers): threads stop at their next line,
profiles are written, stored results stay. One trap: a signal that arrives while a finalizer
(``__del__``) runs raises its KeyboardInterrupt inside it, where Python can only print
"Exception ignored in ..." with a traceback and drop it, so the process neither stopped nor kept
its one-line output. The unraisable hook raises it again in the main thread, outside the finalizer.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading


RETRY_SECONDS = 0.05


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _unraisable(previous):
    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # A moment later, from another thread: by then the finalizer has returned (if not, it
            # lands here again and is re-armed); raised at once it would be dropped again.
            timer = threading.Timer(RETRY_SECONDS, _thread.interrupt_main, args=(signal.SIGTERM,))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)
    return hook


def stop_on_sigterm() -> None:
    """SIGTERM unwinds this process like Ctrl-C (call from the main thread)."""
    signal.signal(signal.SIGTERM, _interrupt)
    if not getattr(sys.unraisablehook, "egcfg_stopping", False):
        hook = _unraisable(sys.unraisablehook)
        hook.egcfg_stopping = True
        sys.unraisablehook = hook


def work_done() -> None:
    """The process's work is over (its results are sent): a SIGTERM from here on ends it at once.
    A KeyboardInterrupt raised in its exit finalizers (multiprocessing joins its queues' feeder
    threads there) would be printed by multiprocessing as a traceback: seen when a run's parent,
    stopping on a worker's error, terminated the other workers while they were exiting."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
