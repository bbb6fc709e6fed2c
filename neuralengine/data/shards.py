"""Action-value shards: a compact binary format with a memory-mapped reader.

One shard holds P positions and all their scored moves, in CSR layout::

    offset  size   content
    0       4      magic b"NEAV"
    4       4      format version, uint32 little-endian (1)
    8       8      header length H, uint64 little-endian
    16      H      UTF-8 JSON header: {"arrays": {name: {"dtype", "shape", "offset"}},
                   "metadata": {...}}
    ...            the arrays, each starting at a 64-byte aligned absolute offset

Arrays:

* ``boards``     uint8  [P, 77]  FEN tokens (:func:`neuralengine.encoding.tokenize`)
* ``offsets``    int64  [P + 1]  moves of position i are ``offsets[i]:offsets[i+1]``
* ``actions``    int16  [M]      action indices
* ``win_probs``  float32 [M]     win probability of each move for the side to move
* ``game_ids``   int64  [P]      the game a position came from (train/test splits by game)

The metadata records how the data was made (engine, depth or nodes, source).
Files are written through :mod:`neuralengine.atomic` (a temporary name, then
a rename), so a shard on disk is always complete.

A :class:`Shard` maps its file once and reads every array from that one
mapping, so it holds one file descriptor at most (none on Python 3.13+).
Where thousands of shards would pass the soft limit on open files, opening
one more raises that limit as far as the hard limit allows, and a
:class:`ShardError` says so clearly when even that is too low.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from neuralengine.atomic import atomic_path

MAGIC = b"NEAV"
VERSION = 1
SUFFIX = ".neav"
_ALIGN = 64
_DTYPES = {"boards": np.uint8, "offsets": np.int64, "actions": np.int16, "win_probs": np.float32, "game_ids": np.int64}


class ShardError(ValueError):
    """A file that is not a valid shard."""


@dataclass
class Position:
    """One annotated position: tokens, scored actions and its game."""

    board: np.ndarray
    actions: np.ndarray
    win_probs: np.ndarray
    game_id: int


def write_shard(path: str | os.PathLike[str], positions: Iterable[Position], metadata: Mapping[str, Any] | None = None) -> Path:
    positions = list(positions)
    counts = np.array([len(p.actions) for p in positions], dtype=np.int64)
    arrays = {
        "boards": np.stack([p.board for p in positions]).astype(np.uint8) if positions else np.zeros((0, 77), np.uint8),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "actions": np.concatenate([p.actions for p in positions]).astype(np.int16) if positions else np.zeros(0, np.int16),
        "win_probs": np.concatenate([p.win_probs for p in positions]).astype(np.float32) if positions else np.zeros(0, np.float32),
        "game_ids": np.array([p.game_id for p in positions], dtype=np.int64),
    }
    return write_arrays(path, arrays, metadata)


def write_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    missing = set(_DTYPES) - set(arrays)
    if missing:
        raise ShardError(f"missing arrays: {sorted(missing)}")
    specs: dict[str, dict[str, Any]] = {}
    cursor = 0
    for name in _DTYPES:
        arr = np.ascontiguousarray(arrays[name], dtype=_DTYPES[name])
        specs[name] = {"dtype": np.dtype(_DTYPES[name]).str, "shape": list(arr.shape), "offset": cursor}
        cursor += -(-arr.nbytes // _ALIGN) * _ALIGN
    # Offsets above are relative to the data start; make them absolute.
    header = {"arrays": specs, "metadata": dict(metadata or {})}
    for _ in range(2):
        raw = json.dumps(header, sort_keys=True).encode()
        start = -(-(16 + len(raw)) // _ALIGN) * _ALIGN
        header["data_start"] = start
    raw = json.dumps(header, sort_keys=True).encode()
    start = header["data_start"]
    if 16 + len(raw) > start:
        raise ShardError("internal error: header grew past its slot")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(MAGIC + struct.pack("<IQ", VERSION, len(raw)) + raw)
        for name in _DTYPES:
            fh.seek(start + specs[name]["offset"])
            fh.write(np.ascontiguousarray(arrays[name], dtype=_DTYPES[name]).tobytes())
    return path


def _map_file(path: Path) -> mmap.mmap:
    """Map the whole file read-only. Where the file descriptor limit is reached,
    raise the soft limit to the hard limit once and try again."""
    # Python 3.13 can map without keeping a duplicate of the file descriptor.
    extra = {"trackfd": False} if sys.version_info >= (3, 13) and os.name == "posix" else {}
    for attempt in range(2):
        try:
            with open(path, "rb") as fh:
                return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ, **extra)
        except OSError as exc:
            if exc.errno != errno.EMFILE or attempt or not _raise_open_file_limit():
                raise
    raise AssertionError("unreachable")


def _raise_open_file_limit() -> bool:
    """Raise the soft limit on open files to the hard limit; whether it grew."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return False
    # An unlimited hard limit still has a ceiling (Linux's nr_open, macOS's OPEN_MAX): try common ones.
    for wanted in ([hard] if hard != resource.RLIM_INFINITY else [1 << 20, 1 << 16, 10240]):
        if wanted <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            continue
        return True
    return False


def _open_file_limit() -> str:
    try:
        import resource
    except ImportError:
        return "the limit on open files"
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return f"the limit of {soft} open files"


class Shard:
    """Memory-mapped view of one shard file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(16)
                if len(head) < 16 or head[:4] != MAGIC:
                    raise ShardError(f"{self.path} is not an action-value shard")
                version, length = struct.unpack("<IQ", head[4:])
                if version != VERSION:
                    raise ShardError(f"{self.path} has shard version {version}; expected {VERSION}")
                raw = fh.read(length)
                if len(raw) < length:
                    raise ShardError(f"{self.path} is truncated (inside its header)")
                header = json.loads(raw.decode())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShardError(f"cannot read shard {self.path}: {exc}") from None
        if not isinstance(header, dict) or not isinstance(header.get("arrays"), dict) or set(_DTYPES) - set(header["arrays"]):
            raise ShardError(f"{self.path} has a corrupt header (arrays missing)")
        self.metadata: dict[str, Any] = header.get("metadata", {})
        size = self.path.stat().st_size
        self._mmap: mmap.mmap | None = None
        self._arrays: dict[str, np.ndarray] = {}
        for name, spec in header["arrays"].items():
            try:
                shape = tuple(int(n) for n in spec["shape"])
                dtype = np.dtype(spec["dtype"])
                offset = int(header["data_start"]) + int(spec["offset"])
            except (KeyError, TypeError, ValueError):
                raise ShardError(f"{self.path} has a corrupt header (array {name!r})") from None
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if nbytes and offset + nbytes > size:  # an empty array may start past the end
                raise ShardError(f"{self.path} is truncated")
            if not nbytes:
                self._arrays[name] = np.zeros(shape, dtype)
                continue
            if self._mmap is None:
                try:
                    self._mmap = _map_file(self.path)
                except OSError as exc:
                    if exc.errno == errno.EMFILE:
                        raise ShardError(f"cannot open shard {self.path}: {_open_file_limit()} is reached "
                                         "(every shard keeps its file open); raise it with 'ulimit -n', or "
                                         "write fewer, larger shards (prepare --shard-size)") from None
                    raise ShardError(f"cannot read shard {self.path}: {exc}") from None
            self._arrays[name] = np.frombuffer(self._mmap, dtype=dtype, count=int(np.prod(shape)),
                                               offset=offset).reshape(shape)
        self.boards = self._arrays["boards"]
        self.offsets = self._arrays["offsets"]
        self.actions = self._arrays["actions"]
        self.win_probs = self._arrays["win_probs"]
        self.game_ids = self._arrays["game_ids"]

    def __len__(self) -> int:
        return len(self.boards)

    @property
    def num_actions(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> Position:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return Position(np.asarray(self.boards[i]), np.asarray(self.actions[lo:hi]),
                        np.asarray(self.win_probs[lo:hi]), int(self.game_ids[i]))


class StackedRows:
    """Several arrays read as one along their first axis, without copying them.

    Indexing with an integer array (any shape) or a slice reads only those
    rows; over memory-mapped shards that means only their pages, so several
    training processes reading one data set share the page cache instead of
    each holding a copy. ``dtype`` converts the rows read (e.g. int16 actions
    to int64); ``length`` hides rows past it.
    """

    def __init__(self, parts: Sequence[np.ndarray], dtype: Any = None, length: int | None = None) -> None:
        if not parts:
            raise ValueError("no arrays to stack")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.dtype = np.dtype(dtype) if dtype is not None else self.parts[0].dtype
        total = int(self.starts[-1])
        self.shape = (total if length is None else min(int(length), total),) + tuple(self.parts[0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index)
        if index.dtype.kind not in "iu":
            raise TypeError(f"rows are read by integer arrays or slices, not {index.dtype}")
        flat = index.reshape(-1).astype(np.int64)
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((flat.size,) + self.shape[1:], dtype=self.dtype)
        part = np.searchsorted(self.starts, flat, side="right") - 1
        for k in np.unique(part):
            chosen = part == k
            out[chosen] = self.parts[k][flat[chosen] - self.starts[k]]
        return out.reshape(index.shape + self.shape[1:])


def open_shards(paths: Sequence[str | os.PathLike[str]]) -> list[Shard]:
    """Open shard files, expanding folders to the ``*.neav`` files inside."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob(f"*{SUFFIX}")) if p.is_dir() else [p])
    if not files:
        raise ShardError(f"no shards found in {', '.join(map(str, paths))}")
    return [Shard(f) for f in files]
