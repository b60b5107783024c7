"""SIGTERM taken like Ctrl-C. Slurm, Kubernetes and `ray job stop` send SIGTERM before they kill; Ray's own
handler would end the driver at once and leave the MLflow runs RUNNING. Forwarded to whatever handles SIGINT
at that moment (Tune's handler during a fit: it saves the experiment state and returns; Python's
KeyboardInterrupt elsewhere), the sweep closes its runs KILLED and prints how to resume, like after Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading

_received: list[int] = []  # the stop signals taken, in order


def _forward_to_sigint(signum: int, frame) -> None:
    _received.append(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored or left to the OS: a stop is still a stop
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_sigint():
    """While the sweep runs, SIGTERM takes the Ctrl-C path. Installed after ray.init (which sets a SIGTERM
    handler of its own) and put back afterwards; signal handlers can only be set from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = signal.signal(signal.SIGTERM, _forward_to_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_status() -> int:
    """The shell's status for a process stopped by a signal: 128 + SIGTERM (143) when SIGTERM stopped the
    sweep, else 128 + SIGINT (130, Ctrl-C)."""
    return 128 + (signal.SIGTERM if signal.SIGTERM in _received else signal.SIGINT)
