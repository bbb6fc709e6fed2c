"""The int8 graph against the float32 graph: the move each one plays, and how fast.

For every weights file given, the engine opens the same model twice with ONNX
Runtime, once on its float32 graph and once on the dynamically quantised int8
copy (``neuralengine export --int8``), and chooses a move without a time limit
in each position (the engine's rules on, as in play). It reports:

* ``agreement``: the share of positions where both graphs play the same move;
* ``max_delta``: the largest change of a move's win probability;
* ``fp32_pos_s`` / ``int8_pos_s``: positions per second of each graph
  (whole move choices), the two graphs taking turns position by position.

The positions are the first ``--positions`` of the games in the given
text files (``FEN<TAB>move:score ...``; default: the test suite's two cuts of
the seed data, 1,000 positions of 8 Stockfish self-play games). The engine
offers int8 only for the layouts where the agreement was at least 99 %
(:data:`neuralengine.backends.INT8_LAYOUTS`).

    nice python bench/int8_agreement.py weights/neuralengine.safetensors runs/full/model.safetensors
    nice python bench/int8_agreement.py --random 9M --positions 50 --json
    pytest bench -k int8_agreement
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import chess

from neuralengine.progress import Progress

#: The test suite's real positions: two cuts of the seed data (8 complete games).
DEFAULT_POSITIONS = [Path(__file__).resolve().parent.parent / "tests" / "data" / "av" / name
                     for name in ("d7_s101-000-head.txt.xz", "d7_s202-000-head.txt.xz")]


def read_fens(paths: list[Path], limit: int | None = None) -> list[str]:
    """The FENs of ``FEN<TAB>move:score ...`` files (plain or ``.xz``), in file order."""
    fens: list[str] = []
    for path in paths:
        opener = lzma.open if str(path).endswith(".xz") else open
        with opener(path, "rt") as fh:
            for line in fh:
                fen = line.split("\t", 1)[0].strip()
                if fen:
                    fens.append(fen)
                if limit is not None and len(fens) >= limit:
                    return fens
    return fens


@dataclass
class Agreement:
    model: str
    attention: str
    parameters: int
    positions: int
    agreement: float
    max_delta: float
    fp32_pos_s: float
    int8_pos_s: float

    @property
    def speedup(self) -> float:
        return self.int8_pos_s / self.fp32_pos_s if self.fp32_pos_s else 0.0


def _engine(weights: Path, int8: bool, threads: int):  # type: ignore[no-untyped-def]
    from neuralengine.backends.onnx import OnnxBackend
    from neuralengine.engine import Engine

    # Straight to the backend: the measurement is what decides where create_backend offers int8.
    engine = Engine(OnnxBackend.open(weights, threads, int8=int8))
    engine.warm_up()
    return engine


def measure(weights: Path, fens: list[str], threads: int = 1, label: str | None = None) -> Agreement:
    """Play every position with the float32 and the int8 graph of ``weights``."""
    fp32, int8 = _engine(weights, False, threads), _engine(weights, True, threads)
    boards = [chess.Board(fen) for fen in fens]
    results: dict[str, list] = {"fp32": [], "int8": []}  # type: ignore[type-arg]
    seconds = {"fp32": 0.0, "int8": 0.0}
    # Position by position, one graph after the other: a load that comes and goes on the
    # machine slows both alike.
    with Progress(f"{weights.name} fp32/int8", total=len(boards), unit="pos") as bar:
        for board in boards:
            for name, engine in (("fp32", fp32), ("int8", int8)):
                start = time.perf_counter()
                results[name].append(engine.choose_move(board))
                seconds[name] += time.perf_counter() - start
            bar.update()
    same = sum(a.bestmove == b.bestmove for a, b in zip(results["fp32"], results["int8"]))
    delta = 0.0
    for a, b in zip(results["fp32"], results["int8"]):
        theirs = {s.move: s.model_win_prob for s in b.ranked}
        for s in a.ranked:
            if s.model_win_prob is not None and theirs.get(s.move) is not None:
                delta = max(delta, abs(s.model_win_prob - theirs[s.move]))
    cfg = fp32.backend.config
    return Agreement(model=label or weights.name, attention=cfg.attention, parameters=cfg.num_parameters(),
                     positions=len(boards), agreement=same / len(boards), max_delta=delta,
                     fp32_pos_s=len(boards) / seconds["fp32"], int8_pos_s=len(boards) / seconds["int8"])


def random_model(folder: Path, name: str) -> Path:
    """A random full-attention model of the named preset (PyTorch writes it)."""
    from neuralengine.benchmarks.speed import write_random_model
    from neuralengine.config import preset

    return write_random_model(folder, preset(name, attention="full"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Move agreement and speed of the int8 graph against float32.")
    parser.add_argument("weights", nargs="*", type=Path, help="weights files (.safetensors)")
    parser.add_argument("--random", action="append", default=[], metavar="PRESET",
                        help="also a random full-attention model of this preset (e.g. 9M); repeatable")
    parser.add_argument("--data", nargs="+", type=Path, default=DEFAULT_POSITIONS, help="FEN<TAB>moves files")
    parser.add_argument("--positions", type=int, default=300, help="positions (default 300)")
    parser.add_argument("--random-positions", type=int, default=30,
                        help="positions for the random models (default 30: only their speed matters)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if not args.weights and not args.random:
        parser.error("name at least one weights file or --random PRESET")
    fens = read_fens(args.data, args.positions)
    rows: list[Agreement] = []

    def show(row: Agreement) -> None:
        rows.append(row)
        if not args.json:
            if len(rows) == 1:
                print(f"{'model':<34} {'attention':<11} {'params':>11} {'pos':>4} {'agree':>7} {'max dWP':>8} "
                      f"{'fp32 pos/s':>10} {'int8 pos/s':>10} {'speed':>6}")
            print(f"{row.model:<34} {row.attention:<11} {row.parameters:>11,} {row.positions:>4} "
                  f"{row.agreement:>7.1%} {row.max_delta:>8.3f} {row.fp32_pos_s:>10.2f} {row.int8_pos_s:>10.2f} "
                  f"{row.speedup:>5.2f}x", flush=True)

    for path in args.weights:
        show(measure(path, fens, args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.random:
            show(measure(random_model(Path(tmp), name), fens[:args.random_positions], args.threads,
                         label=f"random {name} (full)"))
    if args.json:
        print(json.dumps([dict(asdict(r), speedup=r.speedup) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
