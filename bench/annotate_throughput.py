"""Annotation throughput: our annotator against Stockfish on its own.

Every contender searches the same positions with ``MultiPV`` = number of legal
moves, ``Threads 1``, the same hash, and the same depth (or node) limit, on one
core:

* ``stockfish-bench``: Stockfish's built-in ``bench`` command reading the
  positions (with a ``setoption name MultiPV`` line before each) from a file.
  No pipe and no Python: Stockfish's own MultiPV throughput.
* ``raw-pipe``: a minimal driver that sends ``position``/``go`` and reads
  until ``bestmove`` without looking at the lines.
* ``annotator``: :func:`neuralengine.data.annotate.annotate_lines`, which is
  what each ``neuralengine annotate`` worker runs.
* ``python-chess``: :meth:`chess.engine.SimpleEngine.analyse` with
  ``multipv=n``, the alternative we did not choose.

The hash is cleared once at the start of each run and never in between (as
``bench`` does). Contenders run in turns, ``--rounds`` times, so that load
from other processes spreads evenly; the best round of each is reported.

Usage::

    python bench/annotate_throughput.py ../shared/data/av/d7_s101-000.txt.xz --positions 200 --depth 7
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chess
import chess.engine

from neuralengine.data.annotate import Settings, annotate_lines
from neuralengine.data.positions import parse_position
from neuralengine.data.stockfish import Stockfish, resolve_engine
from neuralengine.data.text import open_text


def load_positions(path: str, count: int) -> list[chess.Board]:
    boards = []
    with open_text(path) as fh:
        for line in fh:
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
        out, _, stats = annotate_lines(engine, lines, settings)
        elapsed = time.perf_counter() - start
    assert stats.positions == len(boards), stats
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


CONTENDERS = {
    "stockfish-bench": run_stockfish_bench,
    "raw-pipe": run_raw_pipe,
    "annotator": run_annotator,
    "python-chess": run_python_chess,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("positions", help="positions or annotated text file (the FEN is the first tab field)")
    p.add_argument("--positions", type=int, default=200, dest="count", help="positions to search (default 200)")
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
    boards = load_positions(args.positions, args.count)
    action_values = sum(b.legal_moves.count() for b in boards)
    best: dict[str, float] = {}
    for r in range(args.rounds):
        for name in args.only:
            seconds = CONTENDERS[name](command, boards, go, args.hash_mb)
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"round {r + 1} {name:>16}: {seconds:7.2f} s  {len(boards) / seconds:7.1f} positions/s  "
                  f"{action_values / seconds:8.0f} action values/s", file=sys.stderr)
    reference = best.get("stockfish-bench")
    print(f"\n{len(boards)} positions, {action_values} action values, go {go}, Hash {args.hash_mb}, Threads 1")
    print(f"{'contender':>16} {'seconds':>8} {'pos/s':>8} {'AV/s':>8} {'vs bench':>9}")
    for name, seconds in best.items():
        ratio = f"{100 * reference / seconds:8.1f}%" if reference else "-"
        print(f"{name:>16} {seconds:8.2f} {len(boards) / seconds:8.1f} {action_values / seconds:8.0f} {ratio:>9}")
    if args.json:
        Path(args.json).write_text(json.dumps({"positions": len(boards), "action_values": action_values, "go": go,
                                               "seconds": best}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
