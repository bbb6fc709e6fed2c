"""``neuralengine analyse``: the legal moves of a position, ranked by the network.

Example::

    neuralengine analyse --fen "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"

prints every legal move with its win probability (for the side to move), the
matching centipawns and, where a rule decided the score, the rule. With
``--movetime`` a model too slow for that time works as in a game: a fast
model ranks the moves and the model scores the best of them (the cascade);
each move's note names the fast model when its score is that model's.
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
    parser.add_argument("--movetime", type=float, metavar="MS",
                        help="think at most this long; a model too slow to score every move in that time scores "
                             "the best moves of the fast model's ranking (the cascade)")
    parser.add_argument("--candidate-model", metavar="WEIGHTS",
                        help="the fast model that ranks the moves for the cascade (default: the shipped weights)")
    parser.add_argument("--int8", action="store_true",
                        help="run the int8 (dynamically quantised) graph; full-attention models only")
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
    timed = args.movetime is not None
    try:
        engine = Engine.open(weights, args.backend, args.threads, warm_up=timed, int8=args.int8,
                             mate_rule=not args.no_mate_rule)
    except (WeightsError, ValueError, OSError) as exc:
        print(f"neuralengine analyse: cannot load the weights: {exc}", file=sys.stderr)
        return 1
    if engine.backend.notice:
        print(f"neuralengine analyse: {engine.backend.notice}", file=sys.stderr)
    control = None
    if timed:
        import time

        from neuralengine.engine import SearchControl

        if not engine.is_fast():
            from neuralengine.paths import default_weights

            try:
                engine.fast = Engine.open(args.candidate_model or str(default_weights()), args.backend, args.threads)
            except (WeightsError, ValueError, OSError) as exc:
                print(f"neuralengine analyse: cannot load the candidate model: {exc}", file=sys.stderr)
                return 1
        control = SearchControl(time.monotonic() + max(args.movetime, 0.0) / 1000.0)

    print(f"position  {board.fen()}")
    print(f"model     {engine.describe()}")
    if engine.fast is not None and engine.fast is not engine:
        print(f"fast      {engine.fast.describe()}")
    result = engine.choose_move(board, control=control)
    if result.bestmove is None:
        print("game over: " + ("checkmate" if board.is_checkmate() else "stalemate") + "; no legal moves")
        return 0
    label = "policy %" if engine.kind == "behavioral_cloning" else "win %"
    print(f"time      {result.time_s * 1000:.1f} ms for {result.nodes} move evaluations")
    if result.cascade is not None:
        c = result.cascade
        print(f"cascade   {c.reason}: {c.ranker} ranked the {c.ranked} moves, the model scored {c.scored}")
    elif result.fallback or result.late:
        print(f"note      {result.fallback or result.late}")
    print()
    print(f"{'rank':>4}  {'move':<6} {'san':<8} {label:>8} {'cp':>6}  note")
    ranked = result.ranked[:args.top] if args.top > 0 else result.ranked
    for rank, scored in enumerate(ranked, start=1):
        note = {"mate": "mate in 1", "draw": "draw (rule)"}.get(scored.rule or "", "")
        if scored.rule == "draw" and scored.model_win_prob is not None:
            note += f", network {scored.model_win_prob * 100:.1f} %"
        if scored.source is not None:
            note = (note + ", " if note else "") + f"scored by {scored.source}"
        cp = "#1" if scored.mate else f"{scored.cp:+d}"
        print(f"{rank:>4}  {board.uci(scored.move):<6} {board.san(scored.move):<8} "
              f"{scored.win_prob * 100:>8.2f} {cp:>6}  {note}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
