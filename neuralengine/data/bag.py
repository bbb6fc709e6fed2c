"""DeepMind's ``.bag`` action-value records, for users who have that data.

A bag file is its records laid end to end, then an index of little-endian
int64 *end* offsets, one per record; the file's last 8 bytes hold the
little-endian offset where that index starts. Record ``i`` is
``data[end[i-1]:end[i]]`` with ``end[-1] = 0``.

An action-value record is an Apache Beam tuple ``(fen, move, win_prob)``:

* ``fen`` and ``move``: a varint (unsigned LEB128) byte length, then UTF-8;
* ``win_prob``: an 8-byte big-endian IEEE double, the win probability of the
  move for the side to move in ``fen``.

Compressed ``.bagz`` files (zstd per record) are not supported.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from neuralengine.atomic import atomic_path
from neuralengine.varint import encode_varint


class BagError(ValueError):
    """A file that is not a valid bag, or a record that is not an action value."""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise BagError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def encode_action_value(fen: str, move: str, win_prob: float) -> bytes:
    """One record in the Beam tuple layout."""
    out = bytearray()
    for text in (fen, move):
        raw = text.encode("utf-8")
        out += encode_varint(len(raw)) + raw
    return bytes(out + struct.pack(">d", win_prob))


def decode_action_value(record: bytes) -> tuple[str, str, float]:
    """Split one record into ``(fen, move, win_prob)``.

    :raises BagError: if the bytes do not hold exactly two strings and a double.
    """
    pos = 0
    texts = []
    for _ in range(2):
        length, pos = _read_varint(record, pos)
        if pos + length > len(record):
            raise BagError("string runs past the end of the record")
        try:
            texts.append(record[pos : pos + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise BagError("string is not UTF-8") from None
        pos += length
    if len(record) - pos != 8:
        raise BagError(f"expected an 8-byte double after the strings, found {len(record) - pos} bytes")
    (win_prob,) = struct.unpack(">d", record[pos:])
    return texts[0], texts[1], win_prob


def write_bag(path: str | os.PathLike[str], records: Iterable[bytes]) -> Path:
    """Write records as a bag file (atomically, through :func:`neuralengine.atomic.atomic_path`)."""
    path = Path(path)
    ends = []
    offset = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for record in records:
            fh.write(record)
            offset += len(record)
            ends.append(offset)
        fh.write(np.asarray(ends, dtype="<i8").tobytes())
        fh.write(struct.pack("<q", offset))
    return path


class BagReader:
    """Random access to the records of a bag file (memory-mapped)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.suffix == ".bagz":
            raise BagError(f"{self.path}: compressed .bagz files are not supported (DeepMind's data is .bag)")
        try:
            size = self.path.stat().st_size
            if size < 8:
                raise BagError(f"{self.path} is too short to be a bag file")
            with open(self.path, "rb") as fh:
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise BagError(f"cannot read {self.path}: {exc}") from None
        (index_start,) = struct.unpack("<q", self._mmap[size - 8 :])
        if not 0 <= index_start <= size - 8 or (size - 8 - index_start) % 8:
            raise BagError(f"{self.path} is not a bag file (bad index offset {index_start})")
        self._ends = np.frombuffer(self._mmap, dtype="<i8", count=(size - 8 - index_start) // 8, offset=index_start)
        if len(self._ends) and (np.any(np.diff(self._ends) < 0) or self._ends[0] < 0
                                or self._ends[-1] > index_start):
            raise BagError(f"{self.path} is not a bag file (record offsets out of order)")

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> bytes:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        start = int(self._ends[i - 1]) if i else 0
        return self._mmap[start : int(self._ends[i])]

    def __iter__(self) -> Iterator[bytes]:
        start = 0
        for end in self._ends.tolist():
            yield self._mmap[start:end]
            start = end


def iter_bag_positions(path: str | os.PathLike[str],
                       skipped: dict[str, int] | None = None) -> Iterator[tuple[str, list[str], np.ndarray]]:
    """Group a bag's action values by position: yield ``(fen, moves, win_probs)``.

    Records of one FEN need not be adjacent; positions come out in the order
    of their first record. Records that cannot be decoded, moves outside the
    action table and win probabilities outside [0, 1] are counted in
    ``skipped`` and left out.
    """
    from neuralengine.encoding import MOVE_TO_ACTION

    skipped = skipped if skipped is not None else {}
    grouped: dict[str, tuple[list[str], list[float]]] = {}
    for record in BagReader(path):
        try:
            fen, move, win_prob = decode_action_value(record)
        except BagError:
            skipped["undecodable record"] = skipped.get("undecodable record", 0) + 1
            continue
        if move not in MOVE_TO_ACTION:
            skipped["unknown move"] = skipped.get("unknown move", 0) + 1
            continue
        if not 0.0 <= win_prob <= 1.0:
            skipped["win probability out of range"] = skipped.get("win probability out of range", 0) + 1
            continue
        moves, probs = grouped.setdefault(fen, ([], []))
        if move in moves:
            skipped["repeated move"] = skipped.get("repeated move", 0) + 1
            continue
        moves.append(move)
        probs.append(win_prob)
    for fen, (moves, probs) in grouped.items():
        yield fen, moves, np.asarray(probs, dtype=np.float32)
