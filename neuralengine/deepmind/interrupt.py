"""Ctrl-C while ``neuralengine download`` unpacks and converts a checkpoint.

tensorstore (and orbax, its fallback) read the checkpoint on threads of their
own. A ``KeyboardInterrupt`` raised while one of their calls is in flight can
end the process in several ways: an abort from their logging library, a
silent death by the signal, or an exception swallowed in a destructor and an
exit status of 0. Inside :func:`deferred_interrupts` the first Ctrl-C only
sets a flag, and :func:`safe_point` (called between unpacked chunks, between
the checkpoint's arrays and between the conversion's stages, where no native
call is running) raises ``KeyboardInterrupt`` there, so the usual clean-up
runs and the command ends with one line.

For tests, ``NEURALENGINE_HOLD=STAGE:FOLDER`` stops the first
:func:`safe_point` of STAGE (``unpack``: after the first chunk is written;
``convert``: after the first array is read): it writes ``STAGE`` and a newline
to the named pipe ``FOLDER/reached``, then waits for one byte on
``FOLDER/go``. A test can then send SIGINT at a known point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

#: Environment variable naming a hold point for tests (see the module's text).
HOLD_ENV = "NEURALENGINE_HOLD"


class _State:
    pending = False
    held: set[str] = set()


def _note(signum: int, frame: Any) -> None:
    _State.pending = True


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) waits for the next :func:`safe_point`.

    Only the main thread can handle signals; called from another thread, or
    with SIGINT ignored, the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        yield
        return
    _State.pending = False
    signal.signal(signal.SIGINT, _note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _State.pending = False


def safe_point(stage: str) -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed since :func:`deferred_interrupts` began."""
    _hold(stage)
    if _State.pending:
        raise KeyboardInterrupt


def _hold(stage: str) -> None:
    wanted, _, folder = os.environ.get(HOLD_ENV, "").partition(":")
    if wanted != stage or not folder or stage in _State.held:
        return
    _State.held.add(stage)
    with open(os.path.join(folder, "reached"), "w", encoding="utf-8") as reached:
        reached.write(f"{stage}\n")
    with open(os.path.join(folder, "go"), "rb") as go:
        go.read(1)
