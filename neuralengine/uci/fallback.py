"""The move played without the network, and how that is announced.

One route for every case where no network evaluation can be had: the
engine's modules are not imported yet (or cannot be), the weights are still
loading or failed to load, or the search failed. :func:`unevaluated_move`
picks the move: the engine's fallback (a mate in one, else its static
choice), or the first legal move when even that cannot be had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import chess

#: The start of the ``info string`` of a move played without the network
#: (``neuralengine puzzles`` looks for it to fail a run whose model did not load).
NO_NETWORK = "no network available"


def unevaluated_move(board: chess.Board) -> tuple[chess.Move, str]:
    """A legal move of ``board`` (which has one) chosen without the network, and its UCI score.

    The engine's rules choose (:func:`neuralengine.engine.mate_in_one`, else
    the static fallback) and score the move by material. Their modules are
    imported here if the loader has not imported them yet (the same import,
    made once); should that or the choice fail, the first legal move is
    played with ``cp 0``.
    """
    try:
        from neuralengine.engine import Engine, fallback_score

        move = Engine.fallback(board)
        if move is not None:
            return move, fallback_score(board, move)
    except Exception:  # the route of last resort must not fail
        pass
    return next(iter(board.legal_moves)), "cp 0"
