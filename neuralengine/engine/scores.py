"""What the engine answers: a score per candidate move and the move chosen.

:class:`MoveScore` is one scored move with its display forms (``cp``,
``mate``, ``wdl``); :class:`MoveChoice` is the result of
:meth:`~neuralengine.engine.Engine.choose_move`. The rule names a score can
carry (:data:`RULE_MATE`, :data:`RULE_DRAW`) are defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import chess

from neuralengine.encoding import win_prob_to_cp

#: Rule names in :attr:`MoveScore.rule`.
RULE_MATE = "mate"
RULE_DRAW = "draw"


def wdl_from_win_prob(win_prob: float) -> tuple[int, int, int]:
    """Win/draw/loss per mille for an expected score ``win_prob``.

    The model predicts one number, the expected score. It is split as if the
    result were the sum of two independent half-point trials each won with
    probability ``p``: ``W = p²``, ``D = 2p(1-p)``, ``L = (1-p)²``. The split
    keeps the expectation (``W + D/2 = p``), is symmetric, and shows the most
    draws (50 %) for a level position. The three numbers add up to 1000.
    """
    p = min(max(float(win_prob), 0.0), 1.0)
    w = int(round(1000 * p * p))
    loss = int(round(1000 * (1 - p) * (1 - p)))
    return w, 1000 - w - loss, loss


@dataclass
class MoveScore:
    """One candidate move and its score for the side to move."""

    move: chess.Move
    #: Index of the move in the 1968-move action table.
    action: int
    #: Score after the rules, in [0, 1].
    win_prob: float
    #: The network's own score, or ``None`` if the move was not evaluated.
    model_win_prob: float | None = None
    #: ``"mate"`` or ``"draw"`` when a rule set :attr:`win_prob`.
    rule: str | None = None

    @property
    def mate(self) -> int | None:
        """``1`` for a move the mate rule plays (mate in one), else ``None``."""
        return 1 if self.rule == RULE_MATE else None

    @property
    def cp(self) -> int:
        """Centipawns from :attr:`win_prob` (Lichess logistic, clamped)."""
        return win_prob_to_cp(self.win_prob)

    @property
    def wdl(self) -> tuple[int, int, int]:
        """Win/draw/loss per mille: certain for a rule, else :func:`wdl_from_win_prob`."""
        if self.rule == RULE_MATE:
            return 1000, 0, 0
        if self.rule == RULE_DRAW:
            return 0, 1000, 0
        return wdl_from_win_prob(self.win_prob)


@dataclass
class MoveChoice:
    """What :meth:`~neuralengine.engine.Engine.choose_move` decided."""

    #: The move to play; ``None`` when the side to move has no legal move.
    bestmove: chess.Move | None
    #: Scored moves, the chosen one first, then by score (ties: lowest action index).
    #: Without a whole evaluation of the candidates, only the mates in one (if any).
    ranked: list[MoveScore] = field(default_factory=list)
    #: Move evaluations done by the network (also those of an evaluation cut short and not used).
    nodes: int = 0
    #: Wall-clock seconds from the call to the answer.
    time_s: float = 0.0
    #: Why a fallback move was played (no whole evaluation of the candidates in time), else ``None``.
    fallback: str | None = None
    #: Expected reply to :attr:`bestmove`, when asked for and affordable.
    ponder: chess.Move | None = None
    #: Temperature used to choose the move.
    temperature: float = 0.0
    #: What the user should be told about this choice (``info string`` lines), e.g. why
    #: a text model handed the position to its fallback model.
    notes: list[str] = field(default_factory=list)

    @property
    def nps(self) -> int:
        """Move evaluations per second."""
        return int(self.nodes / self.time_s) if self.time_s > 0 else 0
