"""Move choice without search: one network evaluation per position.

The package's public API is exported here:

* :mod:`~neuralengine.engine.core`: :class:`Engine` and its
  :meth:`~Engine.choose_move` (candidates, rule scores, network scores,
  choice, ponder);
* :mod:`~neuralengine.engine.scores`: :class:`MoveChoice` and
  :class:`MoveScore` with their display forms, and :class:`Cascade` (how a
  fast model ranked the moves when the full evaluation did not fit);
* :mod:`~neuralengine.engine.rules`: :func:`mate_in_one`, the draw rules, the
  conversion order, the static fallback move and its score;
* :mod:`~neuralengine.engine.timing`: :class:`SearchControl` (deadline and
  stop flag), the latency model and :func:`time_budget`.

The encoding the network reads (FEN clamp, moves in action-index order) is in
:mod:`neuralengine.encoding`. Nothing here knows the UCI protocol;
:mod:`neuralengine.uci` drives it.
"""

from neuralengine.engine.core import CASCADE_MIN_MOVES, DEFAULT_BATCH_SIZE, LAST_RESORT_GRACE, Engine, sample_softmax
from neuralengine.engine.rules import (
    CONVERT_THRESHOLD,
    DrawRules,
    checkmates,
    conversion_order,
    fallback_score,
    mate_in_one,
    repetition_key,
    static_fallback,
)
from neuralengine.engine.scores import RULE_DRAW, RULE_MATE, Cascade, MoveChoice, MoveScore, wdl_from_win_prob
from neuralengine.engine.timing import (
    FINISH_RESERVE,
    RULE_SECONDS_PER_MOVE,
    SETUP_SECONDS,
    LatencyModel,
    SearchControl,
    time_budget,
)

__all__ = [
    "CASCADE_MIN_MOVES",
    "CONVERT_THRESHOLD",
    "DEFAULT_BATCH_SIZE",
    "FINISH_RESERVE",
    "LAST_RESORT_GRACE",
    "RULE_DRAW",
    "RULE_MATE",
    "RULE_SECONDS_PER_MOVE",
    "SETUP_SECONDS",
    "Cascade",
    "DrawRules",
    "Engine",
    "LatencyModel",
    "MoveChoice",
    "MoveScore",
    "SearchControl",
    "checkmates",
    "conversion_order",
    "fallback_score",
    "mate_in_one",
    "repetition_key",
    "sample_softmax",
    "static_fallback",
    "time_budget",
    "wdl_from_win_prob",
]
