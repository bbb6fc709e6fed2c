"""Training data: the positions of some shards, and the batches drawn from them.

One training sample is one position with all its scored moves. The
shared-board layouts read the board once and score every move of a batch row;
the full-attention layout reads one sequence per move, so its batches are
single action values drawn across all positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuralengine.config import BOARD_ONCE
from neuralengine.data.augment import mirror_actions, mirror_boards
from neuralengine.data.only_move import only_move_flags
from neuralengine.data.shards import SUFFIX, Shard, StackedRows

#: One batch: boards [B, 77], actions [B, N], target win probabilities [B, N], mask [B, N].
Batch = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class ActionValueData:
    """The positions of some shards as flat arrays: boards [P, 77], and per
    action value its action and win probability, position i owning
    ``offsets[i]:offsets[i+1]``.

    Boards, actions and win probabilities stay in the memory-mapped shards
    (:class:`~neuralengine.data.shards.StackedRows`): a batch reads just its
    rows, and the processes of a distributed run share one page cache. Only
    the per-position move counts and offsets are held in memory.
    """

    def __init__(self, shards: list[Shard], max_positions: int | None = None) -> None:
        self.counts = np.concatenate([np.diff(np.asarray(s.offsets)) for s in shards])
        if max_positions is not None and max_positions < len(self.counts):
            self.counts = self.counts[:max_positions]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.boards = StackedRows([s.boards for s in shards], length=len(self.counts))
        self.actions = StackedRows([s.actions for s in shards], dtype=np.int64)
        self.win_probs = StackedRows([s.win_probs for s in shards], dtype=np.float32)
        self.sources = [dict(s.metadata) for s in shards]
        self._only_move: np.ndarray | None = None

    @property
    def only_move(self) -> np.ndarray:
        """Indices of the only-move positions (:mod:`neuralengine.data.only_move`), found on first use."""
        if self._only_move is None:
            self._only_move = np.flatnonzero(only_move_flags(self.offsets, self.win_probs))
        return self._only_move

    def __len__(self) -> int:
        return len(self.boards)

    @property
    def num_actions(self) -> int:
        return int(self.offsets[-1])

    def position_batch(self, idx: np.ndarray, max_moves: int, rng: np.random.Generator) -> Batch:
        """Boards [B,77], actions [B,N], targets [B,N], mask [B,N] for whole positions.

        Positions with more than ``max_moves`` moves contribute a random subset.
        """
        counts = self.counts[idx]
        widest = int(counts.max())
        n = int(min(widest, max_moves))
        column = np.arange(widest)
        valid = column[None, :] < counts[:, None]
        # Rows with more than n moves keep a random n of them; the others
        # keep all their moves in order. Sorting keys picks both at once.
        keys = np.where(valid, column[None, :] / widest, 2.0)
        crowded = counts > n
        if crowded.any():
            keys[crowded] = np.where(valid[crowded], rng.random((int(crowded.sum()), widest)), 2.0)
        order = np.argsort(keys, axis=1, kind="stable")[:, :n]
        mask = order < counts[:, None]
        flat = np.where(mask, self.offsets[idx][:, None] + order, 0)
        acts = np.where(mask, self.actions[flat], 0)
        probs = np.where(mask, self.win_probs[flat], 0.0).astype(np.float32)
        return self.boards[idx], acts, probs, mask

    def action_batch(self, count: int, rng: np.random.Generator) -> Batch:
        """``count`` action values drawn uniformly, as one move per row."""
        flat = rng.integers(0, self.num_actions, count)
        pos = np.searchsorted(self.offsets, flat, side="right") - 1
        return (self.boards[pos], self.actions[flat][:, None], self.win_probs[flat][:, None],
                np.ones((count, 1), bool))


def sample_positions(data: ActionValueData, count: int, rng: np.random.Generator,
                     only_move_oversample: float = 1.0) -> np.ndarray:
    """``count`` position indices drawn uniformly, or with every only-move position
    ``only_move_oversample`` times as likely as any other position."""
    if only_move_oversample == 1.0:
        return rng.integers(0, len(data), count)
    special = data.only_move
    others = len(data) - len(special)
    if not len(special) or not others:
        return rng.integers(0, len(data), count)
    weight = only_move_oversample * len(special)
    pick_special = rng.random(count) < weight / (weight + others)
    drawn_special = special[rng.integers(0, len(special), count)]
    # The other positions: the k-th non-only-move index is k plus the only-move indices at or below it.
    k = rng.integers(0, others, count)
    drawn_other = k + np.searchsorted(special - np.arange(len(special)), k, side="right")
    return np.where(pick_special, drawn_special, drawn_other)


def training_batch(data: ActionValueData, attention: str, batch_size: int, max_moves: int, flip: float,
                   seed: int, step: int, only_move_oversample: float = 1.0) -> Batch:
    """The global batch of ``step``: drawn from ``seed`` and the step number
    alone, so a resumed run, or a run with any number of processes, draws
    exactly the batches an uninterrupted single process would have drawn.

    The shared-board layouts take ``batch_size`` whole positions, a share
    ``flip`` of them colour-flipped; the full-attention layout takes the same
    number of action values as single moves. ``only_move_oversample`` makes
    only-move positions that many times as likely to be drawn (shared-board
    layouts; 1 draws every position alike).
    """
    rng = np.random.default_rng([seed, step])
    if attention not in BOARD_ONCE:
        return data.action_batch(batch_size, rng)
    idx = sample_positions(data, batch_size, rng, only_move_oversample)
    boards, acts, probs, mask = data.position_batch(idx, max_moves, rng)
    if flip:
        rows = rng.random(len(idx)) < flip
        boards = boards.copy()
        boards[rows] = mirror_boards(boards[rows])
        acts[rows] = mirror_actions(acts[rows])
    return boards, acts, probs, mask


def split_shard_paths(data: list[str], test_data: list[str] | None) -> tuple[list[str], list[str]]:
    """Training and held-out shard files. A folder's ``test-*`` shards are
    never trained on; they are the default held-out set."""
    train_files: list[str] = []
    default_test: list[str] = []
    for d in map(Path, data):
        if d.is_dir():
            for f in sorted(d.glob(f"*{SUFFIX}")):
                (default_test if f.name.startswith("test-") else train_files).append(str(f))
        else:
            train_files.append(str(d))
    return train_files, (default_test if test_data is None else list(test_data))
