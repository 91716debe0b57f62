"""Stopping on SIGINT/SIGTERM: the one signal handler every program installs around its work.

The handler only sets a :class:`threading.Event` that the engine, capture and
the shard runtime poll; :func:`on_signals` restores the previous handlers when
the work is done.  Only the main thread may install handlers (Python's rule).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import types
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set ``stop`` on SIGINT or SIGTERM while the body runs; the previous handlers come back after it."""

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, interrupt) for sig in SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
