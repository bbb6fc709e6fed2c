"""The one scheduler of the Stockfish workers of ``annotate`` and ``datagen``.

A *work* object (:class:`Work`) says what a worker does with one item:
annotate a shard (:class:`neuralengine.data.annotation.AnnotationWork`) or play
a self-play game (:class:`neuralengine.data.selfplay.SelfPlayWork`). Each
worker owns one Stockfish (an :class:`~neuralengine.data.stockfish.EngineSlot`)
and runs one item at a time.

:class:`Scheduler` is the driver's side, the same for every back end:

* the task feed: items in order, and items of a lost worker first again;
* progress: one bar for all workers; what a worker had counted for an attempt
  that is redone is taken off again;
* back-pressure: in ``ordered`` mode the results are handed on in the order of
  the feed, and new items are handed out only while few finished ones wait
  for an earlier one. An item handed back by a lost worker is always handed
  out again, since the results behind it wait for it;
* faults: a worker that dies is replaced and its item redone; each attempt
  has its own token, so a late message from an attempt that is over is
  ignored and nothing is counted or written twice.

The back ends only move items and messages: :class:`PoolBackend` (processes on
this machine) here, and :class:`neuralengine.data.cluster.RayBackend` (actors
on a Ray cluster, the optional ``cluster`` extra).

:func:`sigterm_interrupts` and :func:`interrupt_exit` give both commands the
same end on Ctrl-C and SIGTERM: the workers are stopped, one line is printed
and the exit status is 130 or 143.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

from neuralengine.data.stockfish import EngineSlot

#: ``emit(kind, **info)``: how a worker reports ``progress`` (``done=`` units of
#: the item finished since the last report, plus counts to add up) and
#: ``restart`` (``reason=``) while it runs an item.
Emit = Callable[..., None]

#: ``on_event(kind, info)``: called on the driver for every ``progress`` and
#: ``restart`` message and every ``lost`` worker. Tests use it to kill
#: processes at chosen moments.
EventHook = Callable[[str, dict[str, Any]], None]


class Work(Protocol):
    """What the workers do; sent to every worker, so it must pickle."""

    def engine_slot(self) -> EngineSlot:
        """The worker's Stockfish (started when first needed)."""

    def run(self, slot: EngineSlot, item: Any, emit: Emit) -> Any:
        """Do one item; the result goes back to the driver (it must pickle)."""

    def describe(self, item: Any) -> str:
        """The item in messages, e.g. ``shard train-00003``."""

    def size(self, item: Any) -> int:
        """The item's units on the progress bar."""


@dataclass
class Message:
    """From a worker (or its back end) to the scheduler."""

    #: ``progress``, ``restart``, ``done``, ``failed`` or ``lost`` (the worker is gone).
    kind: str
    worker: int
    #: The attempt (0 when not known, for ``lost``).
    token: int
    #: ``progress``/``restart``: a dict; ``done``: the result; ``failed``/``lost``: the reason.
    payload: Any = None
    #: Where the worker runs: ``host``, ``pid``, ``engine_pid``.
    where: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """One finished item: its result, or why it failed."""

    item: Any
    result: Any = None
    error: str | None = None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_item(work: Work, slot: EngineSlot, item: Any, emit: Emit) -> tuple[str, Any]:
    """A worker's side of one item, for every back end: ``("done", result)`` or ``("failed", reason)``."""
    try:
        return "done", work.run(slot, item, emit)
    except Exception as exc:  # the driver decides what a failed item means
        slot.drop()
        return "failed", first_line(exc)


def worker_location(slot: EngineSlot) -> dict[str, Any]:
    engine = slot.engine
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "engine_pid": engine.process.pid if engine is not None else None}


class Backend(Protocol):
    """Starts workers and moves items to them and messages back."""

    def start(self, work: Work) -> list[int]:
        """Start the workers; returns their ids."""

    def submit(self, worker: int, token: int, item: Any) -> None:
        """Give ``item`` to the idle ``worker`` as attempt ``token``."""

    def poll(self, timeout: float) -> list[Message]:
        """The messages that arrived, waiting up to ``timeout`` seconds for the first."""

    def replace(self, worker: int) -> int:
        """Start a new worker for the lost ``worker``; returns its id."""

    def close(self) -> None:
        """Stop every worker."""


class Scheduler:
    """Hands the items of ``items`` to the workers of ``backend`` and yields their outcomes.

    :param name: the command, in messages (``annotate``).
    :param ordered: yield the outcomes in the order of ``items`` (self-play
        games), holding back at most ``4 * workers + 8`` finished ones;
        otherwise as they finish.
    :param progress: a :class:`neuralengine.progress.Progress` bar to update
        (its total is the sum of ``work.size`` of the items); the caller closes it.
    :param postfix: the bar's postfix, from the scheduler (see :attr:`totals`).
    """

    def __init__(self, work: Work, backend: Backend, items: Iterable[Any], *, name: str, ordered: bool = False,
                 progress: Any = None, postfix: Callable[["Scheduler"], str] | None = None,
                 on_event: EventHook | None = None) -> None:
        self.work, self.backend, self.items, self.name = work, backend, items, name
        self.ordered, self.progress, self.postfix, self.on_event = ordered, progress, postfix, on_event
        #: Stockfish restarts inside workers plus workers lost.
        self.restarts = 0
        self.lost = 0
        #: Sums of the counts in the workers' progress reports (``action_values``).
        self.totals: dict[str, int] = {}
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> Iterator[Outcome]:
        self.started = time.monotonic()
        try:
            yield from self._loop(self.backend.start(self.work))
        finally:
            self.backend.close()  # also after a start that failed half-way

    def _loop(self, workers: list[int]) -> Iterator[Outcome]:
        backend, work = self.backend, self.work
        limit = 4 * len(workers) + 8
        idle: deque[int] = deque(workers)
        alive = set(workers)
        busy: dict[int, int] = {}                        # worker -> token
        inflight: dict[int, tuple[int, int, Any]] = {}   # token -> worker, place in the feed, item
        counted: dict[int, int] = {}                     # token -> units shown on the bar
        redo: deque[tuple[int, Any]] = deque()
        waiting: dict[int, Outcome] = {}                 # ordered: place -> outcome, until its turn
        feed, places, tokens = iter(self.items), itertools.count(), itertools.count(1)
        exhausted, turn = False, 0
        here = socket.gethostname()

        def forget(token: int) -> None:
            if self.progress is not None:
                self.progress.count -= counted.get(token, 0)
            counted[token] = 0

        while True:
            while idle:
                if redo:  # never held back: later results may be waiting for it
                    place, item = redo.popleft()
                elif exhausted or (self.ordered and len(waiting) >= limit):
                    break
                else:
                    item = next(feed, _END)
                    if item is _END:
                        exhausted = True
                        break
                    place = next(places)
                worker, token = idle.popleft(), next(tokens)
                inflight[token], busy[worker], counted[token] = (worker, place, item), token, 0
                backend.submit(worker, token, item)
            if not inflight:
                if redo or waiting or not exhausted:
                    raise RuntimeError(f"{self.name}: scheduler stalled with work left")  # a bug, never a hang
                return
            finished: list[Outcome] = []
            for msg in backend.poll(0.5):
                if msg.kind == "lost":
                    if msg.worker not in alive:
                        continue  # already replaced
                    alive.discard(msg.worker)
                    token = busy.pop(msg.worker, 0)
                    if msg.worker in idle:
                        idle.remove(msg.worker)
                    entry = inflight.pop(token, None)
                    what = ""
                    if entry is not None:
                        forget(token)
                        counted.pop(token, None)
                        redo.append(entry[1:])
                        what = f"; redoing {work.describe(entry[2])}"
                    self.lost += 1
                    self.restarts += 1
                    if self.on_event is not None:
                        self.on_event("lost", {"token": token, "reason": msg.payload, **msg.where})
                    print(f"\n{self.name}: a worker was lost ({msg.payload}){what}", file=sys.stderr)
                    if self.lost > 10 * len(workers) + 10:
                        raise SystemExit(f"{self.name}: workers keep dying; giving up")
                    new = backend.replace(msg.worker)
                    alive.add(new)
                    idle.append(new)
                    continue
                if self.on_event is not None and msg.kind in ("progress", "restart"):
                    self.on_event(msg.kind, {"token": msg.token, **msg.where, **msg.payload})
                entry = inflight.get(msg.token)
                if entry is None:
                    continue  # from an attempt that is over
                worker, place, item = entry
                if msg.kind == "progress":
                    info = dict(msg.payload)
                    done = info.pop("done", 0)
                    counted[msg.token] += done
                    for key, value in info.items():
                        self.totals[key] = self.totals.get(key, 0) + value
                    if self.progress is not None:
                        self.progress.update(done, postfix=self.postfix(self) if self.postfix else None)
                elif msg.kind == "restart":
                    self.restarts += 1
                    forget(msg.token)
                    host = msg.where.get("host")
                    on = f" on {host}" if host and host != here else ""
                    print(f"\n{self.name}: Stockfish restarted{on}, redoing {work.describe(item)} "
                          f"({msg.payload.get('reason')})", file=sys.stderr)
                elif msg.kind in ("done", "failed"):
                    del inflight[msg.token]
                    busy.pop(worker, None)
                    idle.append(worker)
                    if msg.kind == "done":
                        shown = counted.pop(msg.token, 0)
                        if self.progress is not None:
                            self.progress.update(work.size(item) - shown)
                        outcome = Outcome(item, result=msg.payload)
                    else:
                        forget(msg.token)
                        counted.pop(msg.token, None)
                        outcome = Outcome(item, error=msg.payload)
                    if self.ordered:
                        waiting[place] = outcome
                    else:
                        finished.append(outcome)
            while turn in waiting:
                finished.append(waiting.pop(turn))
                turn += 1
            yield from finished


_END = object()


# ---------------------------------------------------------------------------
# Processes on this machine
# ---------------------------------------------------------------------------


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _pool_worker(wid: int, work: Work, conn: Any) -> None:
    """A worker process: run the items that come through ``conn`` until it gets ``None`` or the
    driver is gone; every message goes back through the same pipe."""
    slot = work.engine_slot()
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                break  # the driver is gone: do not linger
            if task is None:
                break
            token, item = task

            def emit(kind: str, **info: Any) -> None:
                conn.send(Message(kind, wid, token, info, worker_location(slot)))

            kind, payload = run_item(work, slot, item, emit)
            conn.send(Message(kind, wid, token, payload))
    except KeyboardInterrupt:
        pass
    except (BrokenPipeError, ConnectionResetError):
        pass  # the driver is gone
    finally:
        slot.drop()


class PoolBackend:
    """Worker processes on this machine (``workers``, default one per CPU).

    Each worker has a pipe of its own to the driver, so a worker killed in the
    middle of a message breaks only its own pipe, which is dropped with it;
    the driver waits on the pipes and on the processes themselves, so a dead
    worker is noticed at once.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.size = max(1, workers or default_workers())
        self._ctx = mp.get_context("spawn")
        self._workers: dict[int, tuple[Any, Any]] = {}   # id -> process, the driver's end of its pipe
        self._ids = itertools.count()
        self._work: Work | None = None

    def start(self, work: Work) -> list[int]:
        self._work = work
        return [self._spawn() for _ in range(self.size)]

    def _spawn(self) -> int:
        wid = next(self._ids)
        ours, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(target=_pool_worker, args=(wid, self._work, theirs), daemon=True)
        proc.start()
        theirs.close()
        self._workers[wid] = (proc, ours)
        return wid

    def submit(self, worker: int, token: int, item: Any) -> None:
        try:
            self._workers[worker][1].send((token, item))
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            pass  # it died: the next poll says so

    def poll(self, timeout: float) -> list[Message]:
        from multiprocessing.connection import wait

        waitables = {}
        for wid, (proc, conn) in self._workers.items():
            waitables[conn] = waitables[proc.sentinel] = wid
        ready = {waitables[obj] for obj in wait(list(waitables), timeout)}
        out: list[Message] = []
        lost: list[Message] = []
        for wid in sorted(ready):
            proc, conn = self._workers[wid]
            reason = None
            try:
                while conn.poll():
                    out.append(conn.recv())
            except (EOFError, OSError, ValueError):  # the pipe closed, or a message was cut off by a death
                reason = "its pipe broke"
            if reason is not None or not proc.is_alive():
                proc.join(timeout=5)
                lost.append(Message("lost", wid, 0, f"worker process exit code {proc.exitcode}"
                                    if proc.exitcode is not None else reason))
        return out + lost

    def replace(self, worker: int) -> int:
        proc, conn = self._workers.pop(worker)
        conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join()
        return self._spawn()

    def close(self) -> None:
        for _, conn in self._workers.values():
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for proc, conn in self._workers.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
        self._workers.clear()


# ---------------------------------------------------------------------------
# SIGTERM
# ---------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs."""


_sigterm = threading.Event()


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (the commands catch
    it, stop their workers and exit with one line, status 143); the old handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _sigterm.set()
        raise Terminated()

    _sigterm.clear()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_exit(name: str, advice: str) -> int:
    """After Ctrl-C or SIGTERM: one line on stderr, and the exit status (130 or 143).

    Asks the flag rather than the exception's type: Ray turns every
    KeyboardInterrupt raised inside its calls into a plain one.
    """
    what, signum = ("terminated", signal.SIGTERM) if _sigterm.is_set() else ("interrupted", signal.SIGINT)
    print(f"\n{name}: {what}; {advice}", file=sys.stderr)
    return 128 + int(signum)
