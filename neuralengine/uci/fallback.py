"""The move played without the network, and how that is announced.

One route for every case where no network evaluation can be had: the
engine's modules are not imported yet (or cannot be), the weights are still
loading or failed to load, or the search failed. :func:`unevaluated_move`
picks the move: the engine's fallback when its modules are there, else a
mate in one or the first legal move from python-chess alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import chess

#: The start of the ``info string`` of a move played without the network
#: (``neuralengine puzzles`` looks for it to fail a run whose model did not load).
NO_NETWORK = "no network available"


def mate_in_one(board: chess.Board) -> chess.Move | None:
    """A move of ``board`` that mates at once, from python-chess alone; ``board`` is left as it was."""
    for move in board.legal_moves:
        board.push(move)
        mate = board.is_checkmate()
        board.pop()
        if mate:
            return move
    return None


def unevaluated_move(board: chess.Board, engine_imported: bool) -> tuple[chess.Move, str]:
    """A legal move of ``board`` (which has one) chosen without the network, and its UCI score.

    With the engine's modules imported (``engine_imported``) the engine
    chooses (a mate in one, else its static fallback) and scores the move by
    material; otherwise, or should that fail, a mate in one scores ``mate 1``
    and the first legal move ``cp 0``.
    """
    if engine_imported:
        try:
            from neuralengine.engine import Engine, fallback_score

            move = Engine.fallback(board)
            if move is not None:
                return move, fallback_score(board, move)
        except Exception:  # the route of last resort must not fail
            pass
    move = mate_in_one(board)
    if move is not None:
        return move, "mate 1"
    return next(iter(board.legal_moves)), "cp 0"
