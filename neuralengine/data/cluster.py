"""The Ray back end of the scheduler (``annotate --ray``, ``datagen --ray``).

Needs the ``cluster`` extra (``pip install 'neuralengine[cluster]'``, which
brings Ray); nothing imports this module unless ``--ray`` is given.

* :class:`RayBackend` runs the workers of :class:`~neuralengine.data.scheduler.Scheduler`
  as Ray actors, one CPU and one Stockfish each, with exactly the code of the
  process pool (:func:`~neuralengine.data.scheduler.run_item`). The driver
  (the machine running the command) gets every result back and writes the
  files itself, so the output is the same as the pool's.
* Progress streams from the actors to the driver through a Ray queue, so one
  bar shows the whole cluster.
* An actor that dies (its process killed, its node lost) shows up as a failed
  call; the scheduler replaces it and redoes its item.
* A local cluster (``--ray`` without an address) is started with the least
  Ray allows (no dashboard, no usage stats, logs kept out of the terminal),
  and is shut down at the end, on Ctrl-C and on SIGTERM. Should the driver be
  killed outright, a small watcher process ends the cluster's processes
  (Ray's own agents would linger for a minute or more).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from neuralengine.data.scheduler import Message, Work, first_line, run_item, worker_location

#: ``--ray`` without an address: start a local cluster on this machine.
LOCAL = "local"
INSTALL_HINT = "pip install 'neuralengine[cluster]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SystemExit(f"neuralengine: --ray needs Ray: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None, cpus: int | None = None) -> tuple[Any, bool]:
    """Ray, connected to the cluster at ``address`` (``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``), or to a new local cluster for ``local``/None.
    Returns the module and whether this call started the connection."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True, "logging_level": "ERROR"}
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    if address in (None, "", LOCAL):
        ray.init(num_cpus=cpus or os.cpu_count() or 1, object_store_memory=200 * 2**20, **quiet)
    else:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SystemExit(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    if callable(sigterm):
        # ray.init puts its own SIGTERM handlers in place (one dumps a stack trace and aborts);
        # the command's own handler shuts the cluster down and says so in one line.
        signal.signal(signal.SIGTERM, sigterm)
    return ray, True


def cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def actor_count(ray: Any, workers: int | None) -> int:
    """One actor per CPU of the cluster by default. More actors than CPUs would never be scheduled
    (each takes one CPU for good), so a larger ``workers`` is capped, with a note."""
    cpus = cluster_cpus(ray)
    if workers and workers > cpus:
        print(f"neuralengine: the Ray cluster has {cpus} CPUs; using {cpus} actors, not {workers}", file=sys.stderr)
    return min(workers or cpus, cpus)


# ---------------------------------------------------------------------------
# The actor
# ---------------------------------------------------------------------------


class _StockfishActor:
    """One worker on one CPU of the cluster (the body of the Ray actor)."""

    def __init__(self, work: Work, events: Any, wid: int) -> None:
        self.work, self.events, self.wid = work, events, wid
        self.slot = work.engine_slot()

    def run(self, token: int, item: Any) -> tuple[str, Any]:
        def emit(kind: str, **info: Any) -> None:
            self.events.put_nowait(Message(kind, self.wid, token, info, worker_location(self.slot)))

        return run_item(self.work, self.slot, item, emit)

    def close(self) -> None:
        self.slot.drop()


_ACTOR_CLASS: Any = None


def actor_class(ray: Any) -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = ray.remote(num_cpus=1, max_restarts=0)(_StockfishActor)
    return _ACTOR_CLASS


# ---------------------------------------------------------------------------
# The back end
# ---------------------------------------------------------------------------


class RayBackend:
    """Scheduler workers as Ray actors on the cluster at ``address`` (see :func:`connect`);
    ``workers`` actors, default one per CPU of the cluster."""

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        self.address, self.workers = address, workers
        self.ray: Any = None
        self._started = False
        self._watcher: _Watcher | None = None
        self._actors: dict[int, Any] = {}
        self._calls: dict[Any, tuple[int, int]] = {}   # result ref -> worker, token
        self._ids = itertools.count()
        self._events: Any = None
        self._work: Work | None = None

    def start(self, work: Work) -> list[int]:
        self.ray, self._started = connect(self.address, self.workers)
        if self._started and self.address in (None, "", LOCAL):
            self._watcher = _Watcher.start(self.ray)
        from ray.util.queue import Queue

        self._work, self._events = work, Queue()
        return [self._new() for _ in range(actor_count(self.ray, self.workers))]

    def _new(self) -> int:
        wid = next(self._ids)
        self._actors[wid] = actor_class(self.ray).remote(self._work, self._events, wid)
        return wid

    def submit(self, worker: int, token: int, item: Any) -> None:
        self._calls[self._actors[worker].run.remote(token, item)] = (worker, token)

    def poll(self, timeout: float) -> list[Message]:
        from ray.util.queue import Empty

        ray = self.ray
        ready: list[Any] = []
        if self._calls:
            ready, _ = ray.wait(list(self._calls), num_returns=1, timeout=timeout)
            if ready:
                ready, _ = ray.wait(list(self._calls), num_returns=len(self._calls), timeout=0)
        out: list[Message] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except Empty:
                break
        for ref in ready:
            worker, token = self._calls.pop(ref)
            try:
                kind, payload = ray.get(ref)
            except Exception as exc:  # the actor is gone (its process, its node): not the item's fault
                out.append(Message("lost", worker, token, first_line(exc)))
                continue
            out.append(Message(kind, worker, token, payload))
        return out

    def replace(self, worker: int) -> int:
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(self._actors.pop(worker), no_restart=True)
        return self._new()

    def close(self) -> None:
        if self.ray is None:
            return
        try:
            for actor in self._actors.values():
                with contextlib.suppress(Exception):
                    self.ray.kill(actor, no_restart=True)
            if self._events is not None:
                with contextlib.suppress(Exception):
                    self.ray.kill(self._events.actor, no_restart=True)
            self._actors.clear()
            self._calls.clear()
        finally:
            if self._started:
                self.ray.shutdown()
            if self._watcher is not None:
                self._watcher.release()


# ---------------------------------------------------------------------------
# The local cluster's watcher
# ---------------------------------------------------------------------------

#: The watcher process: it reads its standard input, a pipe whose other end
#: only the driver holds, so the read ends when the driver ends, however it
#: ends. Then it stops the processes named on its command line (``PID:START``,
#: START being the start time in /proc, so that a reused pid is left alone):
#: SIGTERM, and SIGKILL for those still there after three seconds.
_WATCHER_CODE = r"""
import os, signal, sys, time

def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]

signal.signal(signal.SIGINT, signal.SIG_IGN)
watched = [arg.split(":") for arg in sys.argv[1:]]
sys.stdin.buffer.read()
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid, start in watched:
        if started(pid) == start:
            try:
                os.kill(int(pid), sig)
            except OSError:
                pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(started(pid) == start for pid, start in watched):
        time.sleep(0.1)
"""


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                found.append(int(name))
    return found


class _Watcher:
    """Ends the processes of a local cluster once the driver is gone (Linux)."""

    def __init__(self, pipe: int, process: subprocess.Popen[bytes]) -> None:
        self.pipe, self.process = pipe, process

    @classmethod
    def start(cls, ray: Any) -> "_Watcher | None":
        if not sys.platform.startswith("linux"):
            return None
        try:  # Ray's own record of the processes it started for this node
            node = ray._private.worker._global_node
            pids = [info.process.pid for infos in node.all_processes.values() for info in infos]
        except Exception:
            return None
        # The raylet's children: its agents (and idle workers), which do not die with the driver.
        pids += [child for pid in list(pids) for child in _children(pid)]
        watched = [f"{pid}:{start}" for pid in pids if (start := _start_time(pid)) is not None]
        read, write = os.pipe()
        try:
            process = subprocess.Popen([sys.executable, "-c", _WATCHER_CODE, *watched], stdin=read,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            os.close(write)
            return None
        finally:
            os.close(read)
        return cls(write, process)

    def release(self) -> None:
        """The driver is done: the watcher stops what is left and exits."""
        with contextlib.suppress(OSError):
            os.close(self.pipe)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
