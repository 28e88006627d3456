"""Ctrl-C and `kill` as KeyboardInterrupt, remembered. Libraries sometimes swallow the exception
(JAX's and torch's gc callbacks print "Exception ignored" and go on; Ray Data's iterator turns it into
other errors while shutting down), so the fact of the interrupt is kept: long stages call `check()`,
and the CLI reports any failure after an interrupt as "interrupted" (exit 130), never as an internal
error."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"received": False}


def received() -> bool:
    return _state["received"]


def check() -> None:
    """Raise KeyboardInterrupt again if an interrupt arrived and was swallowed somewhere."""
    if _state["received"]:
        raise KeyboardInterrupt


def _handler(signum, frame):
    _state["received"] = True
    raise KeyboardInterrupt


def reinstall() -> None:
    """Take SIGINT and SIGTERM back from a library that installed its own (Ray's `init` sets a SIGTERM
    handler that exits with code 1)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)


@contextlib.contextmanager
def catching():
    """Within: SIGINT and SIGTERM raise KeyboardInterrupt (so `kill` cleans up as Ctrl-C does) and are
    remembered; a swallowed one prints no traceback. Outside the main thread, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in SIGNALS}
    old_hook = sys.unraisablehook

    def unraisable(info):  # a swallowed interrupt is handled by the next check(): no traceback
        if not issubclass(info.exc_type, KeyboardInterrupt):
            old_hook(info)

    _state["received"] = False
    sys.unraisablehook = unraisable
    reinstall()
    try:
        yield
    finally:
        sys.unraisablehook = old_hook
        for sig, h in old.items():
            signal.signal(sig, h if h is not None else signal.SIG_DFL)
