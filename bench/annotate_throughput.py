"""Annotation throughput: our annotator against Stockfish on its own.

Every contender searches the same positions with ``MultiPV`` = number of legal
moves, ``Threads 1``, the same hash, and the same depth (or node) limit, on one
core:

* ``stockfish-bench``: Stockfish's built-in ``bench`` command reading the
  positions (with a ``setoption name MultiPV`` line before each) from a file.
  No pipe and no Python: Stockfish's own MultiPV throughput.
* ``raw-pipe``: a minimal driver that sends ``position``/``go`` and reads
  until ``bestmove`` without looking at the lines, one search at a time (so
  Stockfish idles while this process reads and answers).
* ``annotator``: :func:`neuralengine.data.annotation.annotate_lines`, which is
  what each ``neuralengine annotate`` worker runs (searches queued one ahead).
* ``annotate-cli``: ``neuralengine annotate --workers 1`` as a whole: worker
  process start-up, Stockfish start-up and the compressed shard writing
  included.
* ``python-chess``: :meth:`chess.engine.SimpleEngine.analyse` with
  ``multipv=n``, the alternative we did not choose.

The hash is cleared once at the start of each run and never in between (as
``bench`` does). Contenders run in turns, ``--rounds`` times, so that load
from other processes spreads evenly; the best round of each is reported, and
so is the median over rounds of each contender's speed relative to
``stockfish-bench`` run just before it (the ratio least disturbed by load that
comes and goes). Keep ``stockfish-bench`` first in ``--only``.

Two measures: wall-clock time, and CPU time (this process plus every child
process: Stockfish, workers). On a machine shared with other jobs the wall
clock swings with their load, while CPU time stays close to what the same
work costs on an idle core, so it is the fairer comparison there.

Usage (``pytest bench -k annotate_throughput`` runs it once on a few positions)::

    python bench/annotate_throughput.py tests/data/shared/av/d7_s101-000.txt.xz --positions 200 --depth 7
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chess
import chess.engine

from neuralengine.data.annotation import Settings, annotate_lines
from neuralengine.data.positions import parse_position
from neuralengine.data.stockfish import Stockfish, resolve_engine
from neuralengine.data.text import open_text


def load_positions(path: str, count: int, stride: int = 1) -> list[chess.Board]:
    boards = []
    with open_text(path) as fh:
        for number, line in enumerate(fh):
            if number % stride:
                continue
            board, _ = parse_position(line.split("\t")[0])
            if any(board.legal_moves):
                boards.append(board)
            if len(boards) == count:
                break
    return boards


def run_stockfish_bench(command: list[str], boards: list[chess.Board], go: str, hash_mb: int) -> float:
    limit_kind, limit_value = go.split()
    with tempfile.NamedTemporaryFile("w", suffix=".epd", delete=False) as fh:
        for board in boards:
            fh.write(f"setoption name MultiPV value {board.legal_moves.count()}\n{board.fen()}\n")
        name = fh.name
    try:
        proc = subprocess.run([*command, "bench", str(hash_mb), "1", limit_value, name, limit_kind],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
    finally:
        os.unlink(name)
    for line in proc.stderr.splitlines():
        if line.startswith("Total time (ms)"):
            return int(line.split(":")[1]) / 1000.0
    raise RuntimeError(f"no timing in Stockfish bench output:\n{proc.stderr[-500:]}")


def run_raw_pipe(command: list[str], boards: list[chess.Board], go: str, hash_mb: int) -> float:
    with Stockfish(command, {"Threads": 1, "Hash": hash_mb}) as engine:
        engine.new_game()
        start = time.perf_counter()
        for board in boards:
            engine.send(f"setoption name MultiPV value {board.legal_moves.count()}\n"
                        f"position fen {board.fen()}\ngo {go}")
            while not engine.readline().startswith("bestmove"):
                pass
        return time.perf_counter() - start


def run_annotator(command: list[str], boards: list[chess.Board], go: str, hash_mb: int) -> float:
    kind, value = go.split()
    settings = Settings(command=command, out_dir="", hash_mb=hash_mb, clear_hash="shard",
                        **{kind: int(value)})  # type: ignore[arg-type]
    lines = [f"{b.fen()}\tbench\n" for b in boards]
    with Stockfish(command, {"Threads": 1, "Hash": hash_mb}) as engine:
        start = time.perf_counter()
        _, _, stats = annotate_lines(engine, lines, settings)
        elapsed = time.perf_counter() - start
    assert stats.positions == len(boards), stats
    return elapsed


def run_annotate_cli(command: list[str], boards: list[chess.Board], go: str, hash_mb: int) -> float:
    """The whole command with one worker: process start-up, shard writing and all."""
    from neuralengine.data.annotation import main as annotate_main

    kind, value = go.split()
    with tempfile.TemporaryDirectory() as tmp:
        positions = Path(tmp) / "bench.fen"
        positions.write_text("".join(f"{b.fen()}\tbench\n" for b in boards))
        start = time.perf_counter()
        code = annotate_main([str(positions), "--out", str(Path(tmp) / "out"), f"--{kind}", value, "--workers", "1",
                              "--hash", str(hash_mb), "--clear-hash", "shard", "--shard-size", str(len(boards)),
                              "--stockfish", " ".join(command), "--quiet"])
        elapsed = time.perf_counter() - start
    assert code == 0
    return elapsed


def run_python_chess(command: list[str], boards: list[chess.Board], go: str, hash_mb: int) -> float:
    kind, value = go.split()
    limit = chess.engine.Limit(**{kind: int(value)})
    with chess.engine.SimpleEngine.popen_uci(command) as engine:
        engine.configure({"Threads": 1, "Hash": hash_mb})
        engine.ping()
        start = time.perf_counter()
        for board in boards:
            infos = engine.analyse(board, limit, multipv=board.legal_moves.count(), game="bench")
            assert len(infos) == board.legal_moves.count()
        return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and of all its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


CONTENDERS = {
    "stockfish-bench": run_stockfish_bench,
    "raw-pipe": run_raw_pipe,
    "annotator": run_annotator,
    "annotate-cli": run_annotate_cli,
    "python-chess": run_python_chess,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("positions", help="positions or annotated text file (the FEN is the first tab field)")
    p.add_argument("--positions", type=int, default=200, dest="count", help="positions to search (default 200)")
    p.add_argument("--stride", type=int, default=1, help="take every N-th line, for a mix of game phases")
    p.add_argument("--depth", type=int, default=7)
    p.add_argument("--nodes", type=int)
    p.add_argument("--hash", type=int, default=32, dest="hash_mb")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    p.add_argument("--stockfish")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    command = resolve_engine(args.stockfish)
    go = f"nodes {args.nodes}" if args.nodes else f"depth {args.depth}"
    boards = load_positions(args.positions, args.count, args.stride)
    action_values = sum(b.legal_moves.count() for b in boards)
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    ratios: dict[str, list[float]] = {}
    for r in range(args.rounds):
        reference = None
        for name in args.only:
            before = cpu_seconds()
            seconds = CONTENDERS[name](command, boards, go, args.hash_mb)
            cpu = cpu_seconds() - before
            best[name] = min(best.get(name, float("inf")), seconds)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu)
            if name == "stockfish-bench":
                reference = seconds
            elif reference is not None:
                ratios.setdefault(name, []).append(reference / seconds)
            print(f"round {r + 1} {name:>16}: {seconds:7.2f} s wall {cpu:7.2f} s CPU  "
                  f"{len(boards) / seconds:7.1f} positions/s  {action_values / seconds:8.0f} action values/s",
                  file=sys.stderr)
    print(f"\n{len(boards)} positions, {action_values} action values, go {go}, Hash {args.hash_mb}, Threads 1")
    print(f"{'contender':>16} {'wall s':>8} {'pos/s':>8} {'AV/s':>8} {'vs bench':>9} {'CPU s':>8} "
          f"{'AV/CPU-s':>9} {'vs bench':>9}")
    ref, ref_cpu = best.get("stockfish-bench"), best_cpu.get("stockfish-bench")
    for name, seconds in best.items():
        cpu = best_cpu[name]
        ratio = f"{100 * ref / seconds:.1f}%" if ref else "-"
        ratio_cpu = f"{100 * ref_cpu / cpu:.1f}%" if ref_cpu else "-"
        print(f"{name:>16} {seconds:8.2f} {len(boards) / seconds:8.1f} {action_values / seconds:8.0f} {ratio:>9} "
              f"{cpu:8.2f} {action_values / cpu:9.0f} {ratio_cpu:>9}")
    if ratios:
        print("\nthroughput relative to stockfish-bench in the same round (median, min..max over rounds):")
        for name, values in ratios.items():
            values = sorted(values)
            print(f"{name:>16} {100 * values[len(values) // 2]:6.1f}%  ({100 * values[0]:.1f}..{100 * values[-1]:.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps({"positions": len(boards), "action_values": action_values, "go": go,
                                               "wall_seconds": best, "cpu_seconds": best_cpu,
                                               "paired_ratios": ratios}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
