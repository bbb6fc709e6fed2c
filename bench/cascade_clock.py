"""How a model too slow for the clock plays real time controls with the cascade: full, partial, fast-model moves.

The script builds a model of DeepMind's shape (``--preset``, default
``270M``: 16 layers x 1024, full attention) with random weights, which cost
exactly what trained ones cost, and measures on this machine what one network
call of ``n`` moves takes (a handful of calls, ONNX Runtime, ``--threads``).
It measures the fast model (default: the shipped model) the same way.

It then replays the engine's time management over the positions of real games
(default: the test suite's 8 Stockfish self-play games) at each time control:
the engine plays every position of a game, each side on its own clock, and
its real :meth:`~neuralengine.engine.Engine.choose_move` runs with the UCI
time budget (:func:`~neuralengine.engine.time_budget`, ``Move Overhead`` 30
ms) on a **simulated clock**: each network call advances it by the measured
cost of a call of that many moves; nothing else takes time. The scores come
from the fast model's network for both (they do not change the time used).
It counts the engine's moves that were

* ``full``: every legal move scored by the big model (no cascade);
* ``partial``: the fast model ranked the moves and the big model scored the
  best ``k`` of them (the mean, median and least ``k`` are reported);
* ``fast``: the fast model's own move (the big model scored none);
* ``static``: the static fallback (no network evaluation at all).

    nice python bench/cascade_clock.py                          # 270M-shaped, 3+2 5+3 10+5 15+10
    nice python bench/cascade_clock.py --preset 9M --tc 1+0 --json
    nice python bench/cascade_clock.py --latency earlier.json     # the replay again, without measuring
    pytest bench -k cascade_clock
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import chess
import numpy as np

from neuralengine.backends import Backend

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from int8_agreement import DEFAULT_POSITIONS  # noqa: E402

#: The time controls of the default run (base seconds + increment seconds).
DEFAULT_TCS = ("3+2", "5+3", "10+5", "15+10")
#: The rows of the timed calls of the big model; each size is timed once after one warm-up call.
BIG_ROWS = (1, 2, 4, 8)
#: The rows of the timed calls of the fast model (five times each, the median kept).
FAST_ROWS = (1, 20, 40)


@dataclass
class Line:
    """Seconds of one network call of ``rows`` moves: ``fixed + per_row * rows``."""

    fixed: float
    per_row: float
    samples: list[tuple[int, float]] = field(default_factory=list)

    def __call__(self, rows: int) -> float:
        return self.fixed + self.per_row * rows


def fit_line(samples: list[tuple[int, float]]) -> Line:
    rows = np.array([r for r, _ in samples], dtype=float)
    secs = np.array([s for _, s in samples], dtype=float)
    per_row, fixed = np.polyfit(rows, secs, 1) if len(set(rows.tolist())) > 1 else (secs.mean() / rows.mean(), 0.0)
    return Line(max(float(fixed), 0.0), max(float(per_row), 0.0), samples)


def measure_latency(backend: Backend, rows_list: tuple[int, ...], repeats: int = 1) -> Line:
    """Time real calls of ``backend`` on the start position (the first call only warms up)."""
    from neuralengine.encoding import legal_actions, tokenize_board

    board = chess.Board("r1bq1rk1/pp2bppp/2n1pn2/3p4/2PP4/2N1PN2/PP3PPP/R2QKB1R w KQ - 0 9")  # 37 legal moves
    actions = legal_actions(board)[1]
    tokens = tokenize_board(board)[None, :]

    def call(rows: int) -> float:
        chosen = np.resize(actions, rows)[None, :].astype(np.int64)
        start = time.perf_counter()
        backend.evaluate(tokens, chosen)
        return time.perf_counter() - start

    call(rows_list[0])
    samples = []
    for rows in rows_list:
        times = [call(rows) for _ in range(repeats)]
        samples.append((rows, statistics.median(times)))
    return fit_line(samples)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StandIn(Backend):
    """The scores of ``inner``; each call advances ``clock`` by ``cost(rows)`` (a model of another size)."""

    name = "simulated"

    def __init__(self, inner: Backend, config, clock: FakeClock, cost: Callable[[int], float]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config, inner.weights_path, inner.weights_sha256)
        self.inner, self.clock, self.cost = inner, clock, cost

    def evaluate(self, boards: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        self.clock.now += self.cost(1 if actions is None else actions.shape[1])
        return self.inner.evaluate(boards, actions)


class Deadline:
    """A search control on the simulated clock."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        import threading

        self.stop = threading.Event()
        self.clock = clock
        self.deadline = clock() + seconds

    def remaining(self) -> float:
        return self.deadline - self.clock()


@dataclass
class Tally:
    tc: str
    games: int = 0
    moves: int = 0
    full: int = 0
    partial: int = 0
    fast: int = 0
    static: int = 0
    #: Big-model evaluations of each partial move.
    scored: list[int] = field(default_factory=list)
    #: Moves of the partial moves' positions.
    legal: list[int] = field(default_factory=list)
    #: Simulated seconds of each move.
    think: list[float] = field(default_factory=list)
    flags: int = 0
    least_clock: float = float("inf")

    def summary(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k not in ("scored", "legal", "think")}
        out["least_clock"] = round(self.least_clock, 2)
        for what in ("full", "partial", "fast", "static"):
            out[f"{what}_share"] = getattr(self, what) / self.moves if self.moves else 0.0
        out["top3_share"] = (self.full + sum(s >= 3 for s in self.scored)) / self.moves if self.moves else 0.0
        if self.scored:
            out.update(scored_mean=statistics.mean(self.scored), scored_median=statistics.median(self.scored),
                       scored_min=min(self.scored), legal_mean=statistics.mean(self.legal))
        out["think_mean"] = statistics.mean(self.think) if self.think else 0.0
        return out


def read_games(paths: list[Path]) -> list[list[str]]:
    """The games of ``FEN<TAB>...`` files: a new game starts at every start position."""
    from int8_agreement import read_fens

    games: list[list[str]] = []
    for fen in read_fens(paths):
        if fen.split()[0] == chess.STARTING_BOARD_FEN or not games:
            games.append([])
        games[-1].append(fen)
    return [g for g in games if g]


def parse_tc(text: str) -> tuple[float, float]:
    base, _, inc = text.partition("+")
    return float(base) * 60.0, float(inc or 0)


def replay(engine, clock: FakeClock, games: list[list[str]], tc: str, overhead: float = 0.03,  # type: ignore[no-untyped-def]
           max_plies: int | None = None) -> Tally:
    """The engine plays every position of ``games`` at ``tc`` on the simulated clock."""
    from neuralengine.engine import time_budget
    from neuralengine.progress import Progress

    base, inc = parse_tc(tc)
    tally = Tally(tc)
    total = sum(len(g[:max_plies]) for g in games)
    with Progress(f"replay {tc}", total=total, unit="move") as bar:
        for game in games:
            tally.games += 1
            left = [base, base]
            for ply, fen in enumerate(game[:max_plies]):
                board = chess.Board(fen)
                side = ply % 2
                budget = time_budget(time_left=left[side], increment=inc, overhead=overhead,
                                     needed=engine.predicted_seconds(board))
                start = clock()
                result = engine.choose_move(board, control=Deadline(clock, budget))
                spent = clock() - start
                left[side] -= spent
                tally.least_clock = min(tally.least_clock, left[side])
                if left[side] < 0:
                    tally.flags += 1
                left[side] += inc
                tally.moves += 1
                tally.think.append(spent)
                if result.fallback:
                    tally.static += 1
                elif result.cascade is None:
                    tally.full += 1
                elif result.cascade.fast_move:
                    tally.fast += 1
                else:
                    tally.partial += 1
                    tally.scored.append(result.cascade.scored)
                    tally.legal.append(result.cascade.ranked)
                bar.update()
    return tally


def build(big_preset: str, fast_weights: Path, threads: int, folder: Path,
          measured: dict | None = None) -> tuple[dict, object, FakeClock]:  # type: ignore[type-arg]
    """Measure both models (or take ``measured``, the ``latency`` of an earlier ``--json`` run); returns the
    measurements and the simulated engine with its clock."""
    from neuralengine.backends.onnx import OnnxBackend
    from neuralengine.benchmarks.speed import write_random_model
    from neuralengine.config import preset
    from neuralengine.engine import Engine

    cfg = preset(big_preset, attention="full")
    fast_backend = OnnxBackend.open(fast_weights, threads)
    if measured is None:
        print(f"writing a random {big_preset} model ({cfg.num_parameters():,} parameters)...", file=sys.stderr)
        big_path = write_random_model(folder, cfg)
        big_backend = OnnxBackend.open(big_path, threads)
        print(f"timing {len(BIG_ROWS) + 1} calls of the {big_preset} model...", file=sys.stderr)
        big_line = measure_latency(big_backend, BIG_ROWS)
        del big_backend
        fast_line = measure_latency(fast_backend, FAST_ROWS, repeats=5)
    else:
        big_line = Line(measured["big_fixed_s"], measured["big_per_move_s"], measured["big_samples"])
        fast_line = Line(measured["fast_fixed_s"], measured["fast_per_move_s"], measured["fast_samples"])
    clock = FakeClock()
    fast = Engine(StandIn(fast_backend, fast_backend.config, clock, fast_line), clock=clock)
    fast.warm_up()
    engine = Engine(StandIn(fast_backend, cfg, clock, big_line), clock=clock, fast=fast)
    engine.warm_up()
    info = {"preset": big_preset, "parameters": cfg.num_parameters(), "threads": threads,
            "big_fixed_s": big_line.fixed, "big_per_move_s": big_line.per_row,
            "big_samples": big_line.samples, "big_30_moves_s": big_line(30),
            "fast_weights": fast_weights.name, "fast_fixed_s": fast_line.fixed,
            "fast_per_move_s": fast_line.per_row, "fast_samples": fast_line.samples}
    return info, engine, clock


def main(argv: list[str] | None = None) -> int:
    from neuralengine.paths import default_weights

    parser = argparse.ArgumentParser(description="Full, partial and fast-model moves of a slow model at real "
                                                 "time controls, on a clock simulated from measured latencies.")
    parser.add_argument("--preset", default="270M", help="size of the random big model (default 270M)")
    parser.add_argument("--fast", type=Path, default=None, help="the fast model (default: the shipped model)")
    parser.add_argument("--tc", action="append", help="time control base+inc in minutes+seconds; repeatable "
                                                      f"(default {' '.join(DEFAULT_TCS)})")
    parser.add_argument("--data", nargs="+", type=Path, default=DEFAULT_POSITIONS, help="FEN<TAB>moves files")
    parser.add_argument("--games", type=int, default=None, help="at most this many games")
    parser.add_argument("--max-plies", type=int, default=None, help="at most this many plies of each game")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    parser.add_argument("--latency", type=Path, help="take the latencies of an earlier --json run instead of "
                                                         "measuring them again")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    games = read_games(args.data)[:args.games]
    measured = json.loads(args.latency.read_text())["latency"] if args.latency else None
    with tempfile.TemporaryDirectory() as tmp:
        info, engine, clock = build(args.preset, args.fast or default_weights(), args.threads, Path(tmp), measured)
    rows = [replay(engine, clock, games, tc, max_plies=args.max_plies).summary() for tc in args.tc or DEFAULT_TCS]
    if args.json:
        print(json.dumps({"latency": info, "tcs": rows}, indent=1))
        return 0
    print(f"{info['preset']} ({info['parameters']:,} parameters), {info['threads']} threads: one call "
          f"{info['big_fixed_s']:.2f} s + {info['big_per_move_s']:.2f} s a move ({info['big_30_moves_s']:.1f} s "
          f"for 30 moves); fast model {info['fast_weights']}: {1000 * info['fast_fixed_s']:.2f} ms + "
          f"{1000 * info['fast_per_move_s']:.3f} ms a move")
    print(f"{'tc':>6} {'moves':>5} {'full':>6} {'partial':>8} {'k mean':>6} {'k min':>5} {'fast':>6} {'static':>6} "
          f"{'top-3+':>6} {'flags':>5}")
    for r in rows:
        print(f"{r['tc']:>6} {r['moves']:>5} {r['full_share']:>6.1%} {r['partial_share']:>8.1%} "
              f"{r.get('scored_mean', 0):>6.1f} {r.get('scored_min', 0):>5} {r['fast_share']:>6.1%} "
              f"{r['static_share']:>6.1%} {r['top3_share']:>6.1%} {r['flags']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
