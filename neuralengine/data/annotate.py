"""``neuralengine annotate``: Stockfish scores every legal move of each position.

Each position is searched once with a ``MultiPV`` that covers all its legal
moves, at a fixed depth (``go depth D``) or node count (``go nodes N``), so
one search yields an action value for every move. A move's score is the last
exact (not lower/upper bound) score Stockfish reported for it; with a depth
limit that is its score at the final depth. A position where some move got
only a bound is left out and counted as ``bound_only`` in ``skipped``.

The input (positions files, see :mod:`neuralengine.data.positions`) is cut into
fixed shards of ``--shard-size`` lines. Each of ``--workers`` processes runs
one Stockfish (``Threads 1``) and annotates whole shards, writing

* ``OUT/<stem>-<k>.txt.gz``: the text format of :mod:`neuralengine.data.text`
  (``FEN<TAB>move:score ...``, moves in python-chess ``legal_moves`` order,
  scores from the side to move: centipawns or ``#N``), and
* ``OUT/<stem>-<k>.json``: the settings, counts and game ids of the shard.

Both files are written under a temporary name and renamed, the JSON last: a
shard whose JSON exists is complete, and a rerun skips it. Each shard starts
with ``ucinewgame``, so its result does not depend on what ran before. If a
Stockfish or a worker process dies, it is restarted and the shard is redone
from its first line, so nothing is lost or written twice.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

# The work itself lives in annotation.py; its names are also available from here.
from neuralengine.data.annotation import (ALL_MOVES_MULTIPV, FORMAT, EngineSlot, Settings, ShardStats, Summary, Task,
                                          TaskFeed, annotate_lines, annotate_shard, count_lines, infer_split,
                                          is_done, iter_tasks, prepare_output, shard_metadata, shard_paths,
                                          write_shard_files)
from neuralengine.data.stockfish import EngineError, Stockfish, resolve_engine

__all__ = ["ALL_MOVES_MULTIPV", "FORMAT", "EngineSlot", "Settings", "ShardStats", "Summary", "Task", "TaskFeed",
           "annotate", "annotate_lines", "annotate_shard", "count_lines", "default_workers", "infer_split", "is_done",
           "iter_tasks", "main", "prepare_output", "shard_metadata", "shard_paths", "write_shard_files"]


# ---------------------------------------------------------------------------
# The worker processes
# ---------------------------------------------------------------------------


def _worker(wid: int, settings: Settings, tasks: Any, results: Any) -> None:
    """Worker loop: annotate the shards it is handed until it gets ``None``."""
    slot = EngineSlot(settings.command, settings.hash_mb)
    parent = os.getppid()
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:
                    break  # the coordinator was killed: do not linger
                continue
            if task is None:
                break
            def report(positions: int, action_values: int) -> None:
                results.put(("progress", wid, task.name, positions, action_values))

            def restarted(exc: EngineError) -> None:
                results.put(("restart", wid, task.name, str(exc)))

            try:
                lines, games, stats = annotate_shard(slot, task, settings, report, restarted)
            except EngineError as exc:
                results.put(("failed", wid, task.name, str(exc)))
                continue
            write_shard_files(settings, task, lines, games, stats)
            results.put(("done", wid, task.name, stats.positions, stats.action_values, asdict(stats)))
    except KeyboardInterrupt:
        pass
    finally:
        slot.drop()


# ---------------------------------------------------------------------------
# The coordinator (main process)
# ---------------------------------------------------------------------------


def annotate(inputs: Sequence[Path], settings: Settings, workers: int, split: str = "auto",
             progress: bool = True) -> Summary:
    """Annotate all shards of ``inputs`` not yet done, with ``workers`` processes."""
    from neuralengine.progress import Progress

    todo_lines = prepare_output(inputs, settings)
    summary = Summary()
    bar = Progress("annotate", total=todo_lines, unit="pos", enabled=progress)

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    pool: dict[int, tuple[Any, Any]] = {}
    current: dict[int, Task | None] = {}
    shard_progress: dict[str, int] = {}
    feed = TaskFeed(iter_tasks(inputs, settings, split), settings, summary)
    next_wid = 0
    start = time.monotonic()
    av_total = 0

    def spawn() -> None:
        nonlocal next_wid
        tasks = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(next_wid, settings, tasks, results), daemon=True)
        proc.start()
        pool[next_wid] = (proc, tasks)
        current[next_wid] = None
        next_wid += 1

    def forget_progress(name: str) -> None:
        lost = shard_progress.pop(name, 0)
        bar.count -= lost

    for _ in range(max(1, workers)):
        spawn()
    exhausted = False
    try:
        while True:
            for wid in list(pool):
                if current[wid] is None and not exhausted:
                    task = feed.next()
                    if task is None:
                        exhausted = True
                        break
                    current[wid] = task
                    pool[wid][1].put(task)
            if exhausted and all(t is None for t in current.values()):
                break
            msgs: list[tuple[Any, ...]] = []
            try:
                msgs.append(results.get(timeout=0.5))
                while True:
                    msgs.append(results.get_nowait())
            except queue.Empty:
                pass
            for msg in msgs:
                kind, wid, name = msg[0], msg[1], msg[2]
                task = current.get(wid)
                if task is None or task.name != name:
                    continue  # from a worker whose shard was already handed elsewhere
                if kind == "progress":
                    shard_progress[name] = shard_progress.get(name, 0) + msg[3]
                    av_total += msg[4]
                    bar.update(msg[3], postfix=f"{av_total / max(time.monotonic() - start, 1e-9):.0f} AV/s")
                elif kind == "done":
                    stats = msg[5]
                    # Lines that were not positions (skipped) still count as done work.
                    extra = len(task.lines) - shard_progress.pop(name, 0)
                    bar.update(extra)
                    summary.positions += msg[3]
                    summary.action_values += msg[4]
                    summary.shards_done += 1
                    for k, v in stats["skipped"].items():
                        summary.skipped[k] = summary.skipped.get(k, 0) + v
                    current[wid] = None
                elif kind == "restart":
                    summary.restarts += 1
                    forget_progress(name)
                    print(f"\nannotate: {name}: engine restarted, redoing the shard ({msg[3]})", file=sys.stderr)
                elif kind == "failed":
                    summary.shards_failed += 1
                    forget_progress(name)
                    print(f"\nannotate: {name}: giving up after {settings.max_retries} restarts ({msg[3]})",
                          file=sys.stderr)
                    current[wid] = None
            for wid in list(pool):
                proc, _ = pool[wid]
                if proc.is_alive():
                    continue
                task = current.pop(wid)
                del pool[wid]
                summary.restarts += 1
                if summary.restarts > 10 * max(1, workers) + 10:
                    raise SystemExit("annotate: workers keep dying; giving up")
                if task is not None:
                    forget_progress(task.name)
                    feed.redo(task)
                    print(f"\nannotate: worker died (exit code {proc.exitcode}); redoing {task.name}",
                          file=sys.stderr)
                spawn()
                exhausted = exhausted and not feed.redone
    finally:
        for proc, tasks in pool.values():
            try:
                tasks.put(None)
            except (OSError, ValueError):
                pass
        for proc, _ in pool.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        bar.close()
    summary.seconds = time.monotonic() - start
    return summary


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuralengine annotate",
        description="Score every legal move of each position with Stockfish (MultiPV over all moves). "
                    "Writes text shards FEN<TAB>move:score ... with a JSON sidecar each; reruns skip "
                    "finished shards.")
    p.add_argument("inputs", nargs="+", metavar="POSITIONS",
                   help="positions files (FEN<TAB>game_id per line, as written by datagen; FEN or EPD lines work "
                        "too), or folders: their *.fen files")
    p.add_argument("--out", required=True, help="output folder for the annotated shards")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--depth", type=int, help="search depth per position (default 7)")
    limit.add_argument("--nodes", type=int, help="node budget per position, for all moves together")
    p.add_argument("--workers", type=int,
                   help=f"worker processes (or Ray actors), one Stockfish each (default: CPU count, {default_workers()} "
                        "here; with --ray, the cluster's CPU count)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the workers as actors on a Ray cluster: 'auto' or an address (HOST:PORT, "
                        "ray://HOST:PORT) joins a running cluster; without ADDRESS a local one is started. "
                        "Needs: pip install 'neuralengine[cluster]'")
    p.add_argument("--stockfish", help="Stockfish binary or command (default: stockfish on PATH or /usr/games)")
    p.add_argument("--hash", type=int, default=32, dest="hash_mb", help="Stockfish hash per worker, MB (default 32)")
    p.add_argument("--clear-hash", choices=["game", "position", "shard"], default="game",
                   help="when to send ucinewgame: at each new game id (default), each position, or only at the "
                        "start of each shard")
    p.add_argument("--shard-size", type=int, default=2000, help="input lines per shard (default 2000)")
    p.add_argument("--compress", choices=["gz", "xz", "none"], default="gz", help="shard compression (default gz)")
    p.add_argument("--split", choices=["auto", "train", "test", "none"], default="auto",
                   help="split recorded for prepare: auto = from file names train*/test* (default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``neuralengine annotate``."""
    args = build_parser().parse_args(argv)
    inputs: list[Path] = []
    for name in args.inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(path.glob("*.fen"))
            if not found:
                print(f"annotate: no *.fen files in {path}", file=sys.stderr)
                return 2
            inputs.extend(found)
        elif path.is_file():
            inputs.append(path)
        else:
            print(f"annotate: no such file: {path}", file=sys.stderr)
            return 2
    for name in ("depth", "nodes", "workers", "hash_mb", "shard_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"annotate: --{name.replace('_mb', '').replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if args.ray is not None:
        from neuralengine.data.cluster import import_ray

        import_ray()  # before anything is written
    try:
        command = resolve_engine(args.stockfish)
        with Stockfish(command) as probe:
            engine_name = probe.name
            if not probe.has_option("MultiPV"):
                print(f"annotate: {engine_name} has no MultiPV option", file=sys.stderr)
                return 2
    except EngineError as exc:
        print(f"annotate: {exc}", file=sys.stderr)
        return 2
    settings = Settings(command=command, out_dir=args.out, depth=args.depth if args.nodes is None else None,
                        nodes=args.nodes, hash_mb=args.hash_mb, clear_hash=args.clear_hash,
                        shard_size=args.shard_size, compress=args.compress, engine=engine_name)
    if settings.nodes is None and settings.depth is None:
        settings.depth = 7
    try:
        if args.ray is not None:
            from neuralengine.data.cluster import annotate_on_ray

            summary = annotate_on_ray(inputs, settings, args.workers, args.split, progress=not args.quiet,
                                      address=args.ray)
        else:
            summary = annotate(inputs, settings, args.workers or default_workers(), args.split,
                               progress=not args.quiet)
    except KeyboardInterrupt:
        print("\nannotate: interrupted; finished shards are kept, rerun to continue", file=sys.stderr)
        return 130
    rate = summary.positions / max(summary.seconds, 1e-9)
    print(f"annotate: {summary.positions} positions, {summary.action_values} action values in "
          f"{summary.seconds:.1f} s ({rate:.1f} positions/s, {summary.action_values / max(summary.seconds, 1e-9):.0f} "
          f"action values/s); {summary.shards_done} shards written, {summary.shards_skipped} already done, "
          f"{summary.restarts} restarts" + (f", skipped {summary.skipped}" if summary.skipped else ""),
          file=sys.stderr)
    if summary.shards_failed:
        print(f"annotate: {summary.shards_failed} shards failed; rerun to retry them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
