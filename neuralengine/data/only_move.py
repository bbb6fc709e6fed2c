"""Only-move positions: where one move is clearly better than every other.

A position is an *only-move* position when its best move's win probability
beats the second best move's by more than :data:`ONLY_MOVE_MARGIN` (0.2).
Every tactics puzzle is one; self-play by a strong engine rarely reaches
them. Positions with fewer than two scored moves have no second best and are
never only-move positions.

This module is the one definition of the idea: ``prepare`` reports the share
of such positions in every split it writes, and the trainer over-samples them
(``--only-move-oversample``) and splits its held-out accuracy by them.
"""

from __future__ import annotations

import numpy as np

#: Win-probability margin of the best move over the second best.
ONLY_MOVE_MARGIN = 0.2


def is_only_move(win_probs: np.ndarray, margin: float = ONLY_MOVE_MARGIN) -> bool:
    """Whether the moves' win probabilities (one position) make an only-move position."""
    probs = np.asarray(win_probs, dtype=np.float64).ravel()
    if len(probs) < 2:
        return False
    top2 = np.partition(probs, len(probs) - 2)[-2:]
    return bool(top2[1] - top2[0] > margin)


def only_move_flags(offsets: np.ndarray, win_probs: np.ndarray, margin: float = ONLY_MOVE_MARGIN,
                    chunk: int = 1 << 22) -> np.ndarray:
    """Only-move flag of every position of a flat layout: position ``i`` owns
    ``win_probs[offsets[i]:offsets[i+1]]`` (``offsets`` has one more entry than
    there are positions). Works through ``win_probs`` in chunks of about
    ``chunk`` values, so a memory-mapped array is never read whole into memory."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1
    flags = np.zeros(max(n, 0), dtype=bool)
    start = 0
    while start < n:
        # Whole positions only: at least one, then as many as fit in the chunk.
        stop = int(np.searchsorted(offsets, offsets[start] + chunk, side="right")) - 1
        stop = min(n, max(stop, start + 1))
        lo, hi = int(offsets[start]), int(offsets[stop])
        counts = np.diff(offsets[start:stop + 1])
        probs = np.asarray(win_probs[lo:hi], dtype=np.float64)
        flags[start:stop] = _flags(probs, counts, margin)
        start = stop
    return flags


def _flags(probs: np.ndarray, counts: np.ndarray, margin: float) -> np.ndarray:
    out = np.zeros(len(counts), dtype=bool)
    scored = counts > 0
    if not scored.any() or len(probs) == 0:
        return out
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owner = np.repeat(np.arange(len(counts)), counts)
    best = np.full(len(counts), -np.inf)
    best[scored] = np.maximum.reduceat(probs, starts[scored])
    # Drop one copy of each position's best (its first) and take the best of the rest.
    is_best = probs == best[owner]
    first = np.zeros(len(probs), dtype=bool)
    best_at = np.flatnonzero(is_best)
    _, first_of_owner = np.unique(owner[best_at], return_index=True)
    first[best_at[first_of_owner]] = True
    rest = np.where(first, -np.inf, probs)
    second = np.full(len(counts), -np.inf)
    second[scored] = np.maximum.reduceat(rest, starts[scored])
    with np.errstate(invalid="ignore"):  # positions without moves: -inf - -inf
        out[:] = (counts >= 2) & (best - second > margin)
    return out


def share(flags: np.ndarray) -> float:
    """Share of only-move positions (0 for no positions)."""
    return float(np.mean(flags)) if len(flags) else 0.0
