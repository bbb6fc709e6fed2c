"""``neuralengine analyse``: the legal moves of a position, ranked by the network.

Example::

    neuralengine analyse --fen "r1bqkbnr/pppp1ppp/2n5/4p3/4P3/5N2/PPPP1PPP/RNBQKB1R w KQkq - 2 3"

prints every legal move with its win probability (for the side to move), the
matching centipawns and, where a rule decided the score, the rule; ``--svg
FILE`` also draws the board with arrows for the best moves
(:mod:`neuralengine.picture`). With ``--movetime`` a model too slow for that
time works as in a game: a fast model ranks the moves and the model scores
the best of them (the cascade); each move's note names the fast model when
its score is that model's.

The position checks (:func:`read_position`) and the rows of the ranking
(:func:`move_rows`) are shared with the web board (``neuralengine serve``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from neuralengine.uci import BACKEND_CHOICES

if TYPE_CHECKING:
    import chess

    from neuralengine.engine import MoveChoice


class PositionError(ValueError):
    """A position that cannot be analysed: an invalid FEN, kings missing, an illegal move."""


def read_position(fen: str | None, moves: list[str] | tuple[str, ...] = ()) -> "chess.Board":
    """The board of ``fen`` (default: the start position) after ``moves`` (UCI), with its move stack.

    Raises :class:`PositionError` with a one-line message.
    """
    import chess

    try:
        board = chess.Board() if fen is None else chess.Board(fen)
    except ValueError as exc:
        raise PositionError(f"invalid FEN: {exc}") from None
    if board.status() & (chess.STATUS_EMPTY | chess.STATUS_NO_WHITE_KING | chess.STATUS_NO_BLACK_KING
                         | chess.STATUS_TOO_MANY_KINGS | chess.STATUS_OPPOSITE_CHECK):
        raise PositionError(f"invalid position: {board.fen()} (kings missing or misplaced)")
    for text in moves:
        try:
            board.push(board.parse_uci(text))
        except ValueError:
            raise PositionError(f"illegal move {text!r} in {board.fen()}") from None
    return board


def value_label(kind: str) -> str:
    """What the model's score is: ``win %``, or ``policy %`` for a behavioural-cloning
    or text model (their scores are move probabilities, not win probabilities)."""
    return "policy %" if kind in ("behavioral_cloning", "pgn_lm", "llm_http") else "win %"


def move_rows(board: "chess.Board", choice: "MoveChoice") -> list[dict[str, object]]:
    """The ranked moves of ``choice`` as rows: rank, move (UCI and SAN), win probability, cp, W/D/L, rule, note.

    ``cp`` is ``None`` for a mate in one (shown as ``#1``); ``note`` is what the
    text table prints in its last column.
    """
    rows = []
    for rank, scored in enumerate(choice.ranked, start=1):
        note = {"mate": "mate in 1", "draw": "draw (rule)"}.get(scored.rule or "", "")
        if scored.rule == "draw" and scored.model_win_prob is not None:
            note += f", network {scored.model_win_prob * 100:.1f} %"
        if scored.source is not None:  # the cascade: a move the slow model did not score
            note = (note + ", " if note else "") + f"scored by {scored.source}"
        rows.append({"rank": rank, "uci": board.uci(scored.move), "san": board.san(scored.move),
                     "win_prob": scored.win_prob, "model_win_prob": scored.model_win_prob,
                     "cp": None if scored.mate else scored.cp, "wdl": list(scored.wdl), "rule": scored.rule,
                     "note": note})
    return rows


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
    parser.add_argument("--svg", metavar="FILE",
                        help="also write the board as an SVG picture, with arrows for the best moves "
                             "coloured and weighted by win %%")
    parser.add_argument("--arrows", type=int, default=5, metavar="K", help="arrows in the --svg picture (default 5)")
    parser.add_argument("--flip", action="store_true", help="draw the --svg picture from Black's side")
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

    try:
        board = read_position(args.fen, args.moves)
    except PositionError as exc:
        print(f"neuralengine analyse: {exc}", file=sys.stderr)
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
    notice = getattr(getattr(engine, "backend", None), "notice", None)  # players of other kinds have no backend
    if notice:
        print(f"neuralengine analyse: {notice}", file=sys.stderr)
    control = None
    if timed:
        import time

        from neuralengine.engine import SearchControl

        if isinstance(engine, Engine) and not engine.is_fast():
            from neuralengine.paths import default_weights

            try:
                engine.fast = Engine.open(args.candidate_model or str(default_weights()), args.backend, args.threads)
            except (WeightsError, ValueError, OSError) as exc:
                print(f"neuralengine analyse: cannot load the candidate model: {exc}", file=sys.stderr)
                return 1
        control = SearchControl(time.monotonic() + max(args.movetime, 0.0) / 1000.0)

    print(f"position  {board.fen()}")
    print(f"model     {engine.describe()}")
    if getattr(engine, "fast", None) is not None and engine.fast is not engine:
        print(f"fast      {engine.fast.describe()}")
    result = engine.choose_move(board, control=control)
    if args.svg and not write_svg(args.svg, board, result, args.arrows, args.flip):
        return 1
    if result.bestmove is None:
        print("game over: " + ("checkmate" if board.is_checkmate() else "stalemate") + "; no legal moves")
        return 0
    for note in result.notes:
        print(f"note      {note}")
    print(f"time      {result.time_s * 1000:.1f} ms for {result.nodes} move evaluations")
    if result.cascade is not None:
        c = result.cascade
        print(f"cascade   {c.reason}: {c.ranker} ranked the {c.ranked} moves, the model scored {c.scored}")
    elif result.fallback or result.late:
        print(f"note      {result.fallback or result.late}")
    print()
    print(f"{'rank':>4}  {'move':<6} {'san':<8} {value_label(engine.kind):>8} {'cp':>6}  note")
    rows = move_rows(board, result)
    for row in rows[:args.top] if args.top > 0 else rows:
        cp = "#1" if row["cp"] is None else f"{row['cp']:+d}"
        print(f"{row['rank']:>4}  {row['uci']:<6} {row['san']:<8} "
              f"{row['win_prob'] * 100:>8.2f} {cp:>6}  {row['note']}".rstrip())
    return 0


def write_svg(path: str, board: "chess.Board", result: "MoveChoice", arrows: int, flipped: bool) -> bool:
    """Write the picture of ``--svg``; False (with a one-line message) when the file cannot be written."""
    from neuralengine.atomic import write_text
    from neuralengine.picture import board_svg

    try:
        write_text(path, board_svg(board, result.ranked, arrows=arrows, flipped=flipped) + "\n")
    except OSError as exc:
        print(f"neuralengine analyse: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return False
    print(f"picture   {path}")
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
