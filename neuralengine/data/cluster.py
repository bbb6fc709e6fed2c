"""Annotation and self-play on a Ray cluster (``annotate --ray``, ``datagen --ray``).

Needs the ``cluster`` extra (``pip install 'neuralengine[cluster]'``, which
brings Ray); nothing else in the package imports this module.

* Each Ray actor (:class:`StockfishActor`, one CPU) owns one Stockfish
  process. It annotates whole shards with exactly the code and settings of the
  one-machine annotator (:func:`~neuralengine.data.annotate.annotate_lines`),
  or plays self-play games (:func:`~neuralengine.data.selfplay.play_game`).
* The driver (the machine running the command) hands out the work, gathers
  the results and writes the shards itself, text first and JSON last, as the
  process pool does. So the output is the same, a finished shard is never
  redone and a rerun picks up where a crash stopped.
* Progress streams from the actors to the driver through a Ray queue, so the
  driver shows one bar for the whole cluster (positions, action values/s,
  time left).
* Faults: a Stockfish that dies inside an actor is restarted there and the
  shard is redone from its start; an actor that dies (its process killed, its
  node lost) is replaced and its shard or game goes to the next free actor.
  The driver accepts one result per shard, from the attempt it is waiting
  for, so nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from neuralengine.data.annotation import Settings, ShardStats, Summary, Task, TaskFeed, annotate_shard, \
    iter_tasks, prepare_output, write_shard_files
from neuralengine.data.selfplay import GameRecord, SelfPlayConfig, game_id, play_with_restarts
from neuralengine.data.stockfish import EngineError, EngineSlot

#: ``--ray`` without an address: start a local cluster on this machine.
LOCAL = "local"
INSTALL_HINT = "pip install 'neuralengine[cluster]'"

#: ``on_event(kind, info)``: called by the driver for every message from the actors
#: (``progress``, ``restart``) and for every actor replaced (``actor_lost``). Tests use it
#: to kill processes at chosen moments.
EventHook = Callable[[str, dict[str, Any]], None]


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
    if address in (None, "", LOCAL):
        ray.init(num_cpus=cpus or os.cpu_count() or 1, object_store_memory=200 * 2**20, **quiet)
    else:
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SystemExit(f"cannot connect to the Ray cluster at {address}: {exc}") from None
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
    """One Stockfish on one CPU of the cluster (the body of the Ray actor)."""

    def __init__(self, command: list[str], hash_mb: int, events: Any) -> None:
        self.slot, self.events = EngineSlot(command, hash_mb), events

    def where(self) -> dict[str, Any]:
        engine = self.slot.engine
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "engine_pid": engine.process.pid if engine is not None else None}

    def _emit(self, kind: str, token: int, **info: Any) -> None:
        self.events.put_nowait((kind, token, {**self.where(), **info}))

    def annotate(self, task: Task, settings: Settings, token: int) -> tuple[list[str], list[list[Any]], dict]:
        """Annotate one shard; a Stockfish that dies is restarted and the shard redone."""
        def report(positions: int, action_values: int) -> None:
            self._emit("progress", token, shard=task.name, positions=positions, action_values=action_values)

        def restarted(exc: EngineError) -> None:
            self._emit("restart", token, shard=task.name, reason=str(exc))

        lines, games, stats = annotate_shard(self.slot, task, settings, report, restarted)
        return lines, games, asdict(stats)

    def play(self, cfg: SelfPlayConfig, index: int) -> GameRecord:
        """Play one self-play game; a Stockfish that dies is restarted and the game replayed."""
        return play_with_restarts(self.slot, cfg, index)

    def close(self) -> None:
        self.slot.drop()


_ACTOR_CLASS: Any = None


def actor_class(ray: Any) -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = ray.remote(num_cpus=1, max_restarts=0)(_StockfishActor)
    return _ACTOR_CLASS


class _Farm:
    """The actors of one run, their event queue, and their replacement."""

    def __init__(self, ray: Any, size: int, command: list[str], hash_mb: int, on_event: EventHook | None) -> None:
        from ray.util.queue import Queue

        self.ray, self.command, self.hash_mb, self.on_event = ray, command, hash_mb, on_event
        self.events = Queue()
        self.idle: deque[Any] = deque(self._new() for _ in range(size))
        self.replaced = 0

    def _new(self) -> Any:
        return actor_class(self.ray).remote(self.command, self.hash_mb, self.events)

    def replace(self, actor: Any, why: str) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        self.replaced += 1
        if self.on_event is not None:
            self.on_event("actor_lost", {"reason": why})
        self.idle.append(self._new())

    def drain(self) -> list[tuple[str, int, dict[str, Any]]]:
        from ray.util.queue import Empty

        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except Empty:
                return out

    def lost(self, exc: BaseException) -> bool:
        """Whether ``exc`` (from ``ray.get``) means the actor itself is gone."""
        errors = self.ray.exceptions
        return isinstance(exc, (errors.RayActorError, getattr(errors, "ActorUnavailableError", errors.RayActorError)))

    def close(self) -> None:
        actors = list(self.idle)
        for actor in actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:
                pass
        try:
            self.ray.kill(self.events.actor, no_restart=True)
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Annotation
# ---------------------------------------------------------------------------

def annotate_on_ray(inputs: Sequence[Path], settings: Settings, workers: int | None, split: str = "auto",
                    progress: bool = True, address: str | None = None,
                    on_event: EventHook | None = None) -> Summary:
    """Annotate all shards of ``inputs`` not yet done on a Ray cluster; ``workers`` actors
    (default: one per CPU of the cluster)."""
    from neuralengine.progress import Progress

    todo_lines = prepare_output(inputs, settings)
    ray, started = connect(address, workers)
    summary = Summary()
    farm = _Farm(ray, actor_count(ray, workers), settings.command, settings.hash_mb, on_event)
    bar = Progress("annotate (ray)", total=todo_lines, unit="pos", enabled=progress)
    feed = TaskFeed(iter_tasks(inputs, settings, split), settings, summary)
    inflight: dict[Any, tuple[Any, Task, int]] = {}   # result ref -> actor, shard, token
    counted: dict[int, int] = {}                       # token -> positions shown on the bar
    tokens = iter(range(1, 2**62))
    start = time.monotonic()
    av_total = 0

    def uncount(token: int) -> None:
        bar.count -= counted.pop(token, 0)

    try:
        while True:
            while farm.idle:
                task = feed.next()
                if task is None:
                    break
                actor, token = farm.idle.popleft(), next(tokens)
                inflight[actor.annotate.remote(task, settings, token)] = (actor, task, token)
                counted[token] = 0
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for kind, token, info in farm.drain():
                if on_event is not None:
                    on_event(kind, {"token": token, **info})
                if token not in counted:
                    continue  # from an attempt that is over
                if kind == "progress":
                    counted[token] += info["positions"]
                    av_total += info["action_values"]
                    bar.update(info["positions"], postfix=f"{av_total / max(time.monotonic() - start, 1e-9):.0f} AV/s")
                elif kind == "restart":
                    summary.restarts += 1
                    uncount(token)
                    counted[token] = 0
                    print(f"\nannotate: {info['shard']}: Stockfish restarted on {info['host']}, redoing the shard "
                          f"({info['reason']})", file=sys.stderr)
            for ref in ready:
                actor, task, token = inflight.pop(ref)
                try:
                    lines, games, stats = ray.get(ref)
                except Exception as exc:
                    uncount(token)
                    if farm.lost(exc):
                        summary.restarts += 1
                        feed.redo(task)
                        farm.replace(actor, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                        print(f"\nannotate: an actor was lost; redoing {task.name} elsewhere", file=sys.stderr)
                    else:
                        summary.shards_failed += 1
                        farm.idle.append(actor)
                        print(f"\nannotate: {task.name}: giving up after {settings.max_retries} restarts "
                              f"({str(exc).splitlines()[-1] if str(exc) else exc})", file=sys.stderr)
                    continue
                shard = ShardStats(**stats)
                write_shard_files(settings, task, lines, games, shard)
                bar.update(len(task.lines) - counted.pop(token, 0))
                summary.positions += shard.positions
                summary.action_values += shard.action_values
                summary.shards_done += 1
                for key, value in shard.skipped.items():
                    summary.skipped[key] = summary.skipped.get(key, 0) + value
                farm.idle.append(actor)
            if farm.replaced > 10 * max(1, len(farm.idle) + len(inflight)) + 10:
                raise SystemExit("annotate: Ray actors keep dying; giving up")
    finally:
        bar.close()
        for actor, _, _ in inflight.values():
            farm.idle.append(actor)
        farm.close()
        if started:
            ray.shutdown()
    summary.seconds = time.monotonic() - start
    return summary


# ---------------------------------------------------------------------------
# Self-play
# ---------------------------------------------------------------------------

def selfplay_on_ray(command: list[str], cfg: SelfPlayConfig, games: int, workers: int | None, skip: set[str],
                    address: str | None = None, on_event: EventHook | None = None) -> Iterator[GameRecord]:
    """Play games ``0..games-1`` (minus ``skip``) on Ray actors; yield them in order, as
    :func:`~neuralengine.data.datagen.run_selfplay` does."""
    todo = deque(i for i in range(games) if game_id(cfg.seed, i) not in skip)
    if not todo:
        return
    ray, started = connect(address, workers)
    farm = _Farm(ray, actor_count(ray, workers), command, cfg.hash_mb, on_event)
    inflight: dict[Any, tuple[Any, int]] = {}
    finished: dict[int, GameRecord] = {}
    order = sorted(todo)
    position = 0
    try:
        while position < len(order):
            while farm.idle and todo and len(finished) < 4 * (len(farm.idle) + len(inflight)) + 8:
                index, actor = todo.popleft(), farm.idle.popleft()
                inflight[actor.play.remote(cfg, index)] = (actor, index)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5) if inflight else ([], [])
            farm.drain()
            for ref in ready:
                actor, index = inflight.pop(ref)
                try:
                    finished[index] = ray.get(ref)
                except Exception as exc:
                    if not farm.lost(exc):
                        raise EngineError(f"self-play game {index} failed: {str(exc).splitlines()[-1]}") from None
                    todo.appendleft(index)
                    farm.replace(actor, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                    continue
                farm.idle.append(actor)
            while position < len(order) and order[position] in finished:
                yield finished.pop(order[position])
                position += 1
    finally:
        for actor, _ in inflight.values():
            farm.idle.append(actor)
        farm.close()
        if started:
            ray.shutdown()
