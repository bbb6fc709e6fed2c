"""Compact sets of positions for de-duplication: 8-byte digests in one NumPy table.

``prepare`` must remember every position it has written to tell repeats
apart, and DeepMind's data holds hundreds of millions of them: a Python set
of FEN strings needs about 200 bytes a position. :class:`DigestSet` keeps the
64-bit BLAKE2b digest of each key (:func:`digest`) in an open-addressing
table (linear probing) of unsigned 64-bit slots that is at most half full:
16 to 32 bytes a position, and briefly about 40 while the table doubles.

Two different positions share a digest with a probability of about
``n**2 / 2**65`` for ``n`` positions (under 1 % for 500 million); such a
pair would count as one position.
"""

from __future__ import annotations

import hashlib

import numpy as np

_EMPTY = 0  # a digest of 0 is stored as 1
_CHUNK = 1 << 16  # values placed at once while the table grows


def digest(key: str) -> int:
    """The 64-bit digest of a de-duplication key (never 0)."""
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return value or 1


class DigestSet:
    """A set of 64-bit digests (see :func:`digest`) with 16 to 32 bytes an entry."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        size = 1 << max(4, (2 * max(1, capacity) - 1).bit_length())
        self._table = np.zeros(size, dtype=np.uint64)
        self._slots = memoryview(self._table)  # indexing a memoryview gives plain ints, much faster
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes held by the table."""
        return self._table.nbytes

    def _find(self, value: int) -> int:
        """The slot holding ``value``, or the empty slot where it would go."""
        slots, mask = self._slots, self._mask
        i = value & mask
        while True:
            found = slots[i]
            if found == value or found == _EMPTY:
                return i
            i = (i + 1) & mask

    def __contains__(self, value: int) -> bool:
        return self._slots[self._find(value or 1)] != _EMPTY

    def add(self, value: int) -> bool:
        """Add ``value``; whether it was new."""
        value = value or 1
        i = self._find(value)
        if self._slots[i] != _EMPTY:
            return False
        self._slots[i] = value
        self._count += 1
        if 2 * self._count > len(self._table):
            self._grow()
        return True

    def _grow(self) -> None:
        values = self._table[self._table != _EMPTY]
        size = 2 * len(self._table)
        self._slots.release()
        del self._table  # freed before the bigger table is made
        self._table = np.zeros(size, dtype=np.uint64)
        self._mask = len(self._table) - 1
        for start in range(0, len(values), _CHUNK):  # in chunks, so the work arrays stay small
            _place(self._table, values[start : start + _CHUNK])
        self._slots = memoryview(self._table)


def _place(table: np.ndarray, values: np.ndarray) -> None:
    """Insert distinct ``values`` into an empty-enough linear-probing ``table``, all at once.

    Each round puts, for every free slot that some waiting values point at,
    the first of them there; the others move one slot on, as they would one
    at a time. No value ever passes an empty slot, so lookups stay correct.
    """
    mask = np.uint64(len(table) - 1)
    slot = values & mask
    while values.size:
        free = np.flatnonzero(table[slot] == _EMPTY)
        _, first = np.unique(slot[free], return_index=True)
        chosen = free[first]
        table[slot[chosen]] = values[chosen]
        waiting = np.ones(values.size, dtype=bool)
        waiting[chosen] = False
        values = values[waiting]
        slot = (slot[waiting] + np.uint64(1)) & mask
