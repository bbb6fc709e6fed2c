"""What the engine answers: a score per candidate move and the move chosen.

:class:`MoveScore` is one scored move with its display forms (``cp``,
``mate``, ``wdl``); :class:`MoveChoice` is the result of
:meth:`~neuralengine.engine.Engine.choose_move`, and :class:`Cascade` says
how the fast model helped when the full evaluation did not fit the time. The rule names a score can
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
    #: The model whose score this is: ``None`` for the engine's own network (or
    #: a rule), else the name of the fast model (:attr:`Cascade.ranker`).
    source: str | None = None

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
class Cascade:
    """How a move was chosen when the full evaluation did not fit the time.

    The fast model (:attr:`ranker`) scored all :attr:`ranked` candidates; the
    engine's own network then scored :attr:`scored` of them, best of the fast
    model's ranking first. With ``scored > 0`` the move is the best the
    engine's network scored; with ``scored == 0`` the fast model's best move
    was played (the last resort while a network is loaded).
    """

    #: Name of the fast model (its weights file).
    ranker: str
    #: Candidates the fast model scored.
    ranked: int
    #: Candidates the engine's own network scored (in the fast model's order).
    scored: int
    #: Why not every move was scored by the engine's network.
    reason: str

    @property
    def partial(self) -> bool:
        """Whether the engine's network scored some, but not all, of the moves and chose among them."""
        return 0 < self.scored < self.ranked

    @property
    def fast_move(self) -> bool:
        """Whether the fast model's best move was played (the engine's network scored none)."""
        return self.scored == 0


@dataclass
class MoveChoice:
    """What :meth:`~neuralengine.engine.Engine.choose_move` decided."""

    #: The move to play; ``None`` when the side to move has no legal move.
    bestmove: chess.Move | None
    #: Scored moves, the chosen one first, then by score (ties: lowest action index). After a cascade, the
    #: moves the engine's network scored come first, then the others in the fast model's order with its scores
    #: (:attr:`MoveScore.source`). After the static fallback, only the mates in one (if any).
    ranked: list[MoveScore] = field(default_factory=list)
    #: Move evaluations done by the engine's network (also those of an evaluation cut short and not used;
    #: not those of the fast model, see :attr:`cascade`).
    nodes: int = 0
    #: Wall-clock seconds from the call to the answer.
    time_s: float = 0.0
    #: Why the static fallback move was played (no network evaluation in time, no fast network), else ``None``.
    fallback: str | None = None
    #: Expected reply to :attr:`bestmove`, when asked for and affordable.
    ponder: chess.Move | None = None
    #: Temperature used to choose the move.
    temperature: float = 0.0
    #: What the user should be told about this choice (``info string`` lines), e.g. why
    #: a text model handed the position to its fallback model.
    notes: list[str] = field(default_factory=list)
    #: Set when the fast model ranked the candidates (the full evaluation did not fit), else ``None``.
    cascade: Cascade | None = None
    #: Set when the engine, its own fast network, evaluated every move although the evaluation was predicted
    #: not to fit the time (the last resort, a few milliseconds late at most): why it did not fit.
    late: str | None = None

    @property
    def nps(self) -> int:
        """Move evaluations per second."""
        return int(self.nodes / self.time_s) if self.time_s > 0 else 0
