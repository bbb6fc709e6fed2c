"""Game review: the network's view of every position of a game, and the moves that lost most.

Each position before a move gets one batched evaluation
(:meth:`~neuralengine.engine.Engine.choose_move`, temperature 0): a win
probability for every legal move at once. Its best win probability is the
position's value for the side to move; the played move's own win probability
is the value after it. No second evaluation is needed to judge a move.

A move is judged as Lichess judges one (lila's ``Advice``): on the
*winning chances* scale ``2·p − 1`` (from −1 to +1), a drop of at least 0.3
from the best move to the played move is a **blunder**, 0.2 a **mistake** and
0.1 an **inaccuracy**; that is 15, 10 and 5 points of win probability. The
network's preferred move (the engine's choice) is given with each.

The graph shows White's win probability at every position: one point per
position, from the start to the position after the last move (which is
evaluated too, unless the game is over on the board).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import chess

from neuralengine.engine.scores import MoveScore
from neuralengine.picture import arrow_specs

if TYPE_CHECKING:
    from neuralengine.engine import Engine

#: (drop in winning chances, judgement), largest first: Lichess's thresholds.
JUDGEMENTS = ((0.3, "blunder"), (0.2, "mistake"), (0.1, "inaccuracy"))


def winning_chances(win_prob: float) -> float:
    """Lichess's winning chances, from −1 (lost) to +1 (won), of a win probability."""
    return 2.0 * win_prob - 1.0


def judge(best: float, played: float) -> str | None:
    """The judgement of a move whose win probability is ``played`` where the best move's is ``best``."""
    drop = winning_chances(best) - winning_chances(played)
    for threshold, name in JUDGEMENTS:
        if drop >= threshold - 1e-12:
            return name
    return None


def _move(board: chess.Board, scored: MoveScore) -> dict[str, Any]:
    return {"uci": board.uci(scored.move), "san": board.san(scored.move), "win_prob": scored.win_prob,
            "rule": scored.rule}


def terminal_point(board: chess.Board) -> dict[str, Any] | None:
    """The point of a position without legal moves (checkmate, stalemate), which needs no evaluation."""
    if any(True for _ in board.legal_moves):
        return None
    if board.is_checkmate():
        white_win = 0.0 if board.turn == chess.WHITE else 1.0
    else:
        white_win = 0.5
    return {"fen": board.fen(), "turn": "w" if board.turn else "b", "white_win": white_win, "best": None,
            "played": None, "drop": None, "mark": None, "arrows": [],
            "terminal": "checkmate" if board.is_checkmate() else "stalemate"}


def review_position(engine: "Engine", board: chess.Board, played: chess.Move | None) -> dict[str, Any]:
    """One point of the review: ``board`` (with its history) evaluated once, and ``played`` judged.

    Runs on the evaluation worker. The engine's temperature is set to 0 for the call.
    """
    point = terminal_point(board)
    if point is not None:
        return point
    saved, engine.temperature = engine.temperature, 0.0
    try:
        choice = engine.choose_move(board)
    finally:
        engine.temperature = saved
    ranked = choice.ranked
    top = max(s.win_prob for s in ranked)
    point = {"fen": board.fen(), "turn": "w" if board.turn else "b",
             "white_win": top if board.turn == chess.WHITE else 1.0 - top,
             "best": _move(board, ranked[0]), "played": None, "drop": None, "mark": None,
             "time_ms": round(choice.time_s * 1000, 2)}
    shown = [ranked[0]]
    if played is not None:
        scored = next(s for s in ranked if s.move == played)
        point["played"] = _move(board, scored)
        point["drop"] = round(winning_chances(top) - winning_chances(scored.win_prob), 6)
        point["mark"] = judge(top, scored.win_prob)
        if scored is not ranked[0]:
            shown.append(scored)
    # The picture of the point: the network's move and the move played, drawn as the analysis draws arrows.
    point["arrows"] = [a.as_dict() for a in arrow_specs(board, shown, len(shown))]
    return point


def summary(points: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Inaccuracies, mistakes and blunders of each side."""
    counts = {side: {name: 0 for _, name in JUDGEMENTS} for side in ("white", "black")}
    for point in points:
        if point.get("mark"):
            counts["white" if point["turn"] == "w" else "black"][point["mark"]] += 1
    return counts


def review_game(engine: "Engine", board: chess.Board) -> list[dict[str, Any]]:
    """Every point of the game that ends at ``board`` (in one thread; the server queues each point on its own)."""
    root = board.root()
    points = []
    for move in board.move_stack:
        points.append(review_position(engine, root, move))
        root.push(move)
    points.append(review_position(engine, root, None))
    for ply, point in enumerate(points):
        point["ply"] = ply
    return points
