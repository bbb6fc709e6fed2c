"""Time: the deadline of one move choice, the network's latency, the time budget.

* :class:`SearchControl` carries the deadline (a :func:`time.monotonic`
  value) and the stop flag shared with the thread that may cut a move choice
  short.
* :class:`LatencyModel` predicts how long a network call of ``n`` rows takes.
* :func:`time_budget` turns ``go``'s limits into the seconds the engine may
  think about a move.

The constants say how much time the work around the network calls takes;
:meth:`~neuralengine.engine.Engine.predicted_seconds` adds them up.
"""

from __future__ import annotations

import threading
import time

#: Seconds kept free before a deadline for the work after the last inference
#: (ranking, printing).
FINISH_RESERVE = 0.002
#: Seconds a move choice needs before its network call whatever the position:
#: starting the search thread, listing the moves, looking for mates.
SETUP_SECONDS = 0.003
#: A ``movetime`` whose share after ``Move Overhead`` is too short for one
#: search still gets that search when it takes at most this share of it.
MOVETIME_TROUBLE_SHARE = 0.9
#: Seconds per candidate move for the draw rules, worked out before the call
#: (measured: about 8 µs per move with python-chess; this keeps a margin).
RULE_SECONDS_PER_MOVE = 0.00003

#: Moves assumed left in the game when ``movestogo`` is not given.
DEFAULT_MOVES_TO_GO = 30
#: The most seconds of margin for a slow start that time trouble adds to the
#: one search it allows (see :func:`time_budget`).
TROUBLE_SLACK_CAP = 0.1


class SearchControl:
    """Shared between a running move choice and the thread that may cut it short.

    ``stop`` ends the move choice before its next network call. ``deadline``
    (a :func:`time.monotonic` value, or ``None`` for no limit) may be changed
    while it runs, e.g. on ``ponderhit``.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self.stop = threading.Event()
        self.deadline = deadline

    def remaining(self) -> float | None:
        """Seconds until the deadline, or ``None`` without one."""
        deadline = self.deadline
        return None if deadline is None else deadline - time.monotonic()


class LatencyModel:
    """Predicts the seconds of one network call of ``n`` rows.

    The model is ``fixed + n * per_row``, fitted on two warm-up calls, times a
    correction factor that follows the calls actually made (it jumps up at
    once when a call was slower than predicted and decays slowly). A move
    played without evaluation because the prediction did not fit halves the
    factor (:meth:`relax`): otherwise one call slowed by a busy machine would
    keep the engine from evaluating for the rest of a fast game, since only
    calls bring the factor down. Predictions include a safety factor, because
    a call cannot be interrupted.
    """

    SAFETY = 1.3

    def __init__(self) -> None:
        self.fixed: float | None = None
        self.per_row: float = 0.0
        self.scale = 1.0

    @property
    def known(self) -> bool:
        return self.fixed is not None

    def fit(self, n_small: int, t_small: float, n_large: int, t_large: float) -> None:
        """Fit the line through two timed calls."""
        if n_large > n_small:
            self.per_row = max((t_large - t_small) / (n_large - n_small), 0.0)
        else:
            self.per_row = t_large / max(n_large, 1)
        self.fixed = max(t_small - self.per_row * n_small, 0.0)
        self.scale = 1.0

    def _raw(self, rows: int) -> float:
        return (self.fixed or 0.0) + self.per_row * rows

    def predict(self, rows: int) -> float | None:
        """Predicted seconds for ``rows`` rows (with safety margin), ``None`` if unknown."""
        if not self.known:
            return None
        return self.SAFETY * self.scale * self._raw(rows) + 0.0005

    def max_rows(self, seconds: float, limit: int) -> int:
        """The most rows (up to ``limit``) one call can take within ``seconds``."""
        if not self.known:
            return limit
        if seconds <= 0:
            return 0
        budget = (seconds - 0.0005) / (self.SAFETY * self.scale) - (self.fixed or 0.0)
        if budget < 0:
            return 0
        if self.per_row <= 0:
            return limit
        return max(0, min(limit, int(budget / self.per_row)))

    def relax(self) -> None:
        """A move went without evaluation for lack of predicted time: halve the correction (not below 1).
        If the machine really is that slow, the next call raises it again at once."""
        self.scale = max(1.0, self.scale / 2)

    def observe(self, rows: int, seconds: float) -> None:
        """Record a call that took ``seconds`` for ``rows`` rows."""
        if not self.known:
            self.fit(rows, seconds, rows, seconds)
            return
        raw = self._raw(rows)
        if raw <= 0:
            return
        ratio = seconds / raw
        self.scale = ratio if ratio > self.scale else 0.8 * self.scale + 0.2 * ratio
        self.scale = min(max(self.scale, 0.25), 20.0)


def time_budget(*, movetime: float | None = None, time_left: float | None = None, increment: float = 0.0,
                movestogo: int | None = None, overhead: float = 0.03, needed: float | None = None) -> float | None:
    """Seconds the engine may think about a move, or ``None`` for no limit.

    All arguments are in seconds. With ``movetime`` the budget is
    ``movetime - overhead`` (but at least half of ``movetime``); when that is
    shorter than ``needed`` but ``needed`` is at most
    :data:`MOVETIME_TROUBLE_SHARE` of ``movetime``, the budget is ``needed``,
    so a short ``movetime`` that holds one search gets one. With a clock,
    the share is ``time_left / movestogo + 3/4 increment``, at most half the
    clock, and the budget is that share minus ``overhead``. ``needed`` is the
    predicted time of one complete search
    (:meth:`~neuralengine.engine.Engine.predicted_seconds`).
    When the share is shorter than twice that, but the clock minus
    ``overhead`` (the usable clock) still holds twice that, the engine is in
    time trouble but can afford one search: the budget is ``needed`` plus a
    margin for delays before the search starts (a busy machine, a slow thread
    start), the larger of ``needed`` and a tenth of the usable clock, at most
    ``TROUBLE_SLACK_CAP`` (a model slow enough to need more than that uses
    the cascade, which fills its budget). The engine stops after its one evaluation, so the
    margin is rarely spent, and every legal move is evaluated. Below that the
    share stands, and when it is too short the engine answers at
    once with its fallback move. When both limits are given the smaller one
    counts. The result is never negative; 0 means "answer at once".
    """
    budgets: list[float] = []
    if movetime is not None:
        movetime = max(movetime, 0.0)
        fixed = movetime - min(overhead, movetime / 2)
        if needed is not None and fixed < max(needed, 0.0) <= MOVETIME_TROUBLE_SHARE * movetime:
            # A short movetime that still holds one search with a margin: take it.
            fixed = max(needed, 0.0)
        budgets.append(fixed)
    if time_left is not None:
        time_left = max(time_left, 0.0)
        mtg = movestogo if movestogo and movestogo > 0 else DEFAULT_MOVES_TO_GO
        share = min(time_left / mtg + 0.75 * max(increment, 0.0), time_left / 2)
        clock_budget = share - overhead
        usable = time_left - overhead
        if needed is not None and clock_budget < 2 * needed <= usable:
            needed = max(needed, 0.0)
            # The margin is at most TROUBLE_SLACK_CAP: a slow model's cascade fills its
            # budget, and a margin of a whole search would spend two searches a move.
            clock_budget = needed + min(max(needed, usable / 10), TROUBLE_SLACK_CAP)
        budgets.append(clock_budget)
    if not budgets:
        return None
    return max(min(budgets), 0.0)
