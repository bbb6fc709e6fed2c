"""How often the engine plays a move the network did not choose, at bullet time controls.

The engine answers a ``go`` with one batched evaluation of every legal move.
When the clock is too short for that it plays a fallback move (material
sense, no network); so it does when an evaluation split into several calls
(``BatchSize`` below the number of moves) is cut short, and it never plays
the best of a part of the moves. This script plays games of ``neuralengine``
against Stockfish at very short time controls (1+0 and 0.5+0 by default) and
counts, for the engine's moves:

* ``network``: every legal move was evaluated (``info nodes`` = legal moves);
* ``partial``: some but not all were evaluated (then dropped: a fallback move);
* ``fallback``: none was (``nodes 0``).

Both clocks run as a GUI runs them (the time from ``go`` to ``bestmove``
seen by this process), and a game ends by the rules, on time, or after
``--max-plies``. The printed table gives the ratios per time control and the
clock at which the first non-network move came. It is a measurement, not a
test: the ratios depend on the machine and its load.

    python bench/fallback_ratio.py                         # shipped weights, 4 games per time control
    python bench/fallback_ratio.py --games 10 --tc 1+0 --tc 0.5+0 --tc 0.2+0 --json
    pytest bench -k fallback_ratio                          # one short game
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import chess
import chess.engine

from neuralengine.benchmarks.match import our_engine_command
from neuralengine.benchmarks.runner import TimeControl
from neuralengine.paths import find_stockfish


@dataclass
class Tally:
    tc: str
    games: int = 0
    moves: int = 0
    network: int = 0
    partial: int = 0
    fallback: int = 0
    time_losses: int = 0
    #: Clock (ms) before the first move of each game that was not a full evaluation.
    first_non_network_ms: list[int] = field(default_factory=list)
    #: Milliseconds from go to bestmove of each of the engine's moves, as this process saw them.
    think_ms: list[float] = field(default_factory=list)

    def ratio(self, what: str) -> float:
        return getattr(self, what) / self.moves if self.moves else 0.0


def play_game(ours: chess.engine.SimpleEngine, theirs: chess.engine.SimpleEngine, tc: TimeControl,
              ours_white: bool, tally: Tally, max_plies: int) -> None:
    base, inc = tc.base, tc.increment
    board = chess.Board()
    clocks = {chess.WHITE: base, chess.BLACK: base}
    our_color = chess.WHITE if ours_white else chess.BLACK
    first_bad: int | None = None
    while not board.is_game_over(claim_draw=True) and len(board.move_stack) < max_plies:
        mover = board.turn
        limit = chess.engine.Limit(white_clock=max(clocks[chess.WHITE], 0.001),
                                   black_clock=max(clocks[chess.BLACK], 0.001), white_inc=inc, black_inc=inc)
        engine = ours if mover == our_color else theirs
        legal = board.legal_moves.count()
        start = time.monotonic()
        played = engine.play(board, limit, info=chess.engine.INFO_BASIC)
        elapsed = time.monotonic() - start
        clock_before = clocks[mover]
        clocks[mover] -= elapsed
        if mover == our_color:
            nodes = int(played.info.get("nodes", 0))
            tally.moves += 1
            tally.think_ms.append(1000 * elapsed)
            if nodes >= legal:
                tally.network += 1
            else:
                tally.partial += nodes > 0
                tally.fallback += nodes == 0
                if first_bad is None:
                    first_bad = int(1000 * clock_before)
        if clocks[mover] < 0:
            tally.time_losses += mover == our_color
            break
        clocks[mover] += inc
        if played.move is None:
            break
        board.push(played.move)
    tally.games += 1
    if first_bad is not None:
        tally.first_non_network_ms.append(first_bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="weights file (default: the shipped model)")
    parser.add_argument("--tc", action="append", help="time control base+inc in seconds (repeatable)")
    parser.add_argument("--games", type=int, default=4, help="games per time control (colours alternate)")
    parser.add_argument("--max-plies", type=int, default=200)
    parser.add_argument("--stockfish", default=find_stockfish() or "stockfish")
    parser.add_argument("--stockfish-skill", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    tcs = args.tc or ["1+0", "0.5+0"]
    ours = chess.engine.SimpleEngine.popen_uci(our_engine_command())
    theirs = chess.engine.SimpleEngine.popen_uci(args.stockfish)
    try:
        if args.weights:
            ours.configure({"WeightsFile": args.weights})
        ours.ping()  # waits until the weights are loaded
        theirs.configure({"Skill Level": args.stockfish_skill, "Threads": 1})
        tallies = []
        for tc in tcs:
            tally = Tally(tc)
            for game in range(args.games):
                play_game(ours, theirs, TimeControl.parse(tc), game % 2 == 0, tally, args.max_plies)
            tallies.append(tally)
    finally:
        ours.quit()
        theirs.quit()
    if args.json:
        print(json.dumps([dict(asdict(t), network_ratio=t.ratio("network"), fallback_ratio=t.ratio("fallback"),
                               partial_ratio=t.ratio("partial")) for t in tallies], indent=2))
    else:
        print(f"{'tc':>7} {'games':>5} {'moves':>5} {'network':>8} {'partial':>8} {'fallback':>8} {'flags':>5} "
              f"{'think ms (median/max)':>22}  clock at first non-network move (ms)")
        for t in tallies:
            think = f"{statistics.median(t.think_ms):.1f}/{max(t.think_ms):.0f}" if t.think_ms else "-"
            print(f"{t.tc:>7} {t.games:>5} {t.moves:>5} {t.ratio('network'):>8.1%} {t.ratio('partial'):>8.1%} "
                  f"{t.ratio('fallback'):>8.1%} {t.time_losses:>5} {think:>22}  {t.first_non_network_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
