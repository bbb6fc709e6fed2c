"""``neuralengine analyse``: the legal moves of a position, ranked by the network.

Example::

    neuralengine analyse --fen "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"

prints every legal move with its win probability (for the side to move), the
matching centipawns and, where a rule decided the score, the rule.
"""

from __future__ import annotations

import argparse
import sys

from neuralengine.uci import BACKEND_CHOICES


def threads_arg(text: str) -> int:
    """``--threads``: an integer in the range of the engine's UCI ``Threads`` option."""
    from neuralengine.uci import make_options

    try:
        return int(make_options(weights="")["threads"].parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuralengine analyse",
        description="Rank the legal moves of a position with win % and centipawns (one network evaluation).")
    parser.add_argument("--fen", help="the position (default: the start position)")
    parser.add_argument("--moves", nargs="*", default=[], metavar="MOVE",
                        help="moves played from the position, in UCI notation (e2e4 e7e5 ...)")
    parser.add_argument("--weights", help="weights file, DeepMind checkpoint folder or downloaded model name such as 9M (default: the shipped weights)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="inference backend")
    parser.add_argument("--threads", type=threads_arg, default=1, help="CPU threads of the backend")
    parser.add_argument("--top", type=int, default=0, metavar="K", help="show only the best K moves (0: all)")
    parser.add_argument("--no-mate-rule", action="store_true",
                        help="score mate-in-one moves with the network too, instead of always ranking them first")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the ranked moves; returns 0, 1 (weights problem) or 2 (bad position)."""
    args = build_parser().parse_args([] if argv is None else argv)
    import chess

    try:
        board = chess.Board() if args.fen is None else chess.Board(args.fen)
    except ValueError as exc:
        print(f"neuralengine analyse: invalid FEN: {exc}", file=sys.stderr)
        return 2
    if board.status() & (chess.STATUS_EMPTY | chess.STATUS_NO_WHITE_KING | chess.STATUS_NO_BLACK_KING
                         | chess.STATUS_TOO_MANY_KINGS | chess.STATUS_OPPOSITE_CHECK):
        print(f"neuralengine analyse: invalid position: {board.fen()} (kings missing or misplaced)", file=sys.stderr)
        return 2
    for text in args.moves:
        try:
            board.push(board.parse_uci(text))
        except ValueError:
            print(f"neuralengine analyse: illegal move {text!r} in {board.fen()}", file=sys.stderr)
            return 2

    from neuralengine.engine import Engine
    from neuralengine.weights import WeightsError

    weights = args.weights
    if weights is None:
        from neuralengine.paths import default_weights

        weights = str(default_weights())
    try:
        engine = Engine.open(weights, args.backend, args.threads, warm_up=False,
                             mate_rule=not args.no_mate_rule)
    except (WeightsError, ValueError, OSError) as exc:
        print(f"neuralengine analyse: cannot load the weights: {exc}", file=sys.stderr)
        return 1

    print(f"position  {board.fen()}")
    print(f"model     {engine.describe()}")
    result = engine.choose_move(board)
    if result.bestmove is None:
        print("game over: " + ("checkmate" if board.is_checkmate() else "stalemate") + "; no legal moves")
        return 0
    # A policy (behavioural cloning) or a text model's move probabilities are not win probabilities.
    label = "policy %" if engine.kind in ("behavioral_cloning", "pgn_lm") else "win %"
    for note in result.notes:
        print(f"note      {note}")
    if result.fallback:
        print(f"note      {result.fallback}")
    print(f"time      {result.time_s * 1000:.1f} ms for {result.nodes} move evaluations")
    print()
    print(f"{'rank':>4}  {'move':<6} {'san':<8} {label:>8} {'cp':>6}  note")
    ranked = result.ranked[:args.top] if args.top > 0 else result.ranked
    for rank, scored in enumerate(ranked, start=1):
        note = {"mate": "mate in 1", "draw": "draw (rule)"}.get(scored.rule or "", "")
        if scored.rule == "draw" and scored.model_win_prob is not None:
            note += f", network {scored.model_win_prob * 100:.1f} %"
        cp = "#1" if scored.mate else f"{scored.cp:+d}"
        print(f"{rank:>4}  {board.uci(scored.move):<6} {board.san(scored.move):<8} "
              f"{scored.win_prob * 100:>8.2f} {cp:>6}  {note}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
