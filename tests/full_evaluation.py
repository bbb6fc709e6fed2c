"""The reference of the search-limit tests: every candidate move scored by the network, outside the engine.

The engine promises that one evaluation of every legal move is the smallest
unit of work, so that any ``go nodes`` or ``go depth`` plays the move of a full
evaluation. :func:`full_evaluation` computes that move without the engine:
the network's scores through PyTorch (the engine under test plays through
ONNX Runtime), the best score winning and ties going to the lowest action
index. The engine's rules (mate in one, draws, conversion of won positions)
may override the network; :attr:`FullEvaluation.plain` says that none of them
can in a position, and the tests use only such positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import chess

from neuralengine.backends import Backend, create_backend
from neuralengine.encoding import expected_win_prob, legal_actions, tokenize_board, win_prob_to_cp
from neuralengine.engine import CONVERT_THRESHOLD


def torch_reference(weights: Path) -> Backend:
    """The ``torch-cpu`` backend of ``weights``, leaving PyTorch's thread count as it is."""
    import torch

    return create_backend(weights, "torch-cpu", threads=torch.get_num_threads())


@dataclass
class FullEvaluation:
    """The candidate moves in action order and the network's win probability of each."""

    board: chess.Board
    moves: list[chess.Move]
    scores: list[float]

    @property
    def best(self) -> chess.Move:
        """The best score; among equal ones the lowest action index (the first in :attr:`moves`)."""
        top = max(self.scores)
        return self.moves[self.scores.index(top)]

    @property
    def position(self) -> int:
        """Where the best move stands in action order (0: first)."""
        return self.moves.index(self.best)

    @property
    def gap(self) -> float:
        """How far the best score is above the second (1.0 with one candidate)."""
        ranked = sorted(self.scores, reverse=True)
        return ranked[0] - ranked[1] if len(ranked) > 1 else 1.0

    def cp(self, move: chess.Move) -> int:
        return win_prob_to_cp(self.scores[self.moves.index(move)])

    @property
    def plain(self) -> bool:
        """No rule of the engine can override the network: no candidate mates or draws at once or can
        claim a draw, and the best score is below the conversion threshold."""
        if max(self.scores) >= CONVERT_THRESHOLD:
            return False
        board = self.board.copy()
        for move in self.moves:
            board.push(move)
            try:
                if (board.is_checkmate() or board.is_stalemate() or board.is_insufficient_material()
                        or board.is_fivefold_repetition() or board.can_claim_draw() or board.halfmove_clock >= 100):
                    return False
            finally:
                board.pop()
        return True


def full_evaluation(backend: Backend, board: chess.Board,
                    searchmoves: Iterable[chess.Move] | None = None) -> FullEvaluation:
    """Every legal move of ``board`` (or those of ``searchmoves``) scored in one batch by ``backend``."""
    moves, actions = legal_actions(board)
    if searchmoves is not None:
        wanted = set(searchmoves)
        keep = [i for i, move in enumerate(moves) if move in wanted]
        moves, actions = [moves[i] for i in keep], actions[keep]
    log_probs = backend.evaluate(tokenize_board(board)[None], actions[None])
    return FullEvaluation(board.copy(), list(moves), [float(v) for v in expected_win_prob(log_probs[0])])
