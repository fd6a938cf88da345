"""Ctrl-C during `model.fit`, raised where Python cannot lose it.

Python raises KeyboardInterrupt wherever the main thread happens to be when
SIGINT arrives; inside a garbage-collector callback or a `__del__` (JAX and
TensorFlow both register some) the exception is printed as "Exception
ignored" and dropped, and the run trains on to the end as if no key had been
pressed. Within `deferred_interrupt()` the first Ctrl-C is only noted, and
`raise_if_interrupted()` (called by a callback at every batch end) raises
it; a second Ctrl-C raises at once, for a step that never ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_pending = threading.Event()


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt a Ctrl-C left pending, once."""
    if _pending.is_set():
        _pending.clear()
        raise KeyboardInterrupt


def _note(signum, frame) -> None:
    if _pending.is_set():  # the second Ctrl-C: do not wait for the batch to end
        _pending.clear()
        raise KeyboardInterrupt
    _pending.set()


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C for `raise_if_interrupted` within the block (main thread
    only; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _pending.clear()
    previous = signal.signal(signal.SIGINT, _note)
    try:
        yield
        raise_if_interrupted()  # pressed after the last batch
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending.clear()
