"""ONNX Runtime backend: CPU, or the CUDA execution provider when present.

The graph lives next to the weights (``model.safetensors`` →
``model.onnx``) and records the SHA-256 of the weights it was exported from.
That fingerprint is read from the file itself (:func:`graph_weights_sha`,
without ONNX Runtime), so a graph is written into a cache (with NumPy alone)
only when it is missing, stale, or not a whole ONNX file; a current graph
that ONNX Runtime cannot open (a provider, an opset, memory) is reported as
such, naming that graph. On request the session runs the int8 copy of the
graph instead (:func:`open_int8_graph`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

from neuralengine.atomic import file_lock, lock_path
from neuralengine.backends.base import Backend
from neuralengine.backends.graph import WEIGHTS_SHA_KEY
from neuralengine.config import ACTION_VALUE
from neuralengine.paths import cache_dir
from neuralengine.weights import WeightsError, config_from_metadata, file_sha256, read_metadata

__all__ = ["WEIGHTS_SHA_KEY", "OnnxBackend", "cache_dir", "graph_weights_sha", "open_graph", "open_int8_graph"]

#: ModelProto's ``metadata_props`` field, and the key and value fields of its entries.
_METADATA_FIELD, _KEY_FIELD, _VALUE_FIELD = 14, 1, 2

#: The largest metadata entry read (a graph's entries are a few dozen bytes).
_MAX_ENTRY = 1 << 20


class _NotProtobuf(Exception):
    """The bytes are not a whole protobuf message."""


def _varint(read: Any) -> int | None:
    """A base-128 varint from ``read(1)``; None at a clean end of input."""
    value = shift = 0
    while True:
        byte = read(1)
        if not byte:
            if shift:
                raise _NotProtobuf
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise _NotProtobuf


def _fields(fh: IO[bytes], size: int, wanted: int) -> list[bytes]:
    """The length-delimited fields numbered ``wanted`` of the message filling ``fh`` (``size`` bytes);
    every other field is skipped without reading it."""
    found = []
    while True:
        tag = _varint(fh.read)
        if tag is None:
            return found
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _varint(fh.read)
            continue
        if wire == 2:
            length = _varint(fh.read)
            if length is None:
                raise _NotProtobuf
            skip = length
        elif wire in (1, 5):
            skip = 8 if wire == 1 else 4
        else:
            raise _NotProtobuf
        if fh.tell() + skip > size:
            raise _NotProtobuf  # cut short
        if wire == 2 and field == wanted and length <= _MAX_ENTRY:
            found.append(fh.read(length))
        else:
            fh.seek(skip, os.SEEK_CUR)


def _entry(data: bytes) -> tuple[str, str]:
    """The key and value of one metadata entry (a StringStringEntryProto)."""
    key, value = (_fields(io.BytesIO(data), len(data), field)[-1:] for field in (_KEY_FIELD, _VALUE_FIELD))
    return b"".join(key).decode("utf-8", "replace"), b"".join(value).decode("utf-8", "replace")


def graph_weights_sha(path: Path) -> str | None:
    """The weights fingerprint that the ONNX graph at ``path`` records, read without loading the graph.

    None when the file is not a whole ONNX model (unreadable, cut short, not a
    protobuf) or records no fingerprint: either way it is no graph of any
    weights, and is written again.
    """
    try:
        with open(path, "rb") as fh:
            entries = _fields(fh, os.fstat(fh.fileno()).st_size, _METADATA_FIELD)
        metadata = dict(_entry(entry) for entry in entries)
    except (OSError, _NotProtobuf):
        return None
    return metadata.get(WEIGHTS_SHA_KEY)


def _session(path: Path, opts: Any, providers: list[str]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), opts, providers=providers)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _open(path: Path, opts: Any, providers: list[str]) -> Any:
    """A session on a current graph; failing to open it is an error about that file."""
    try:
        return _session(path, opts, providers)
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise WeightsError(f"ONNX Runtime cannot load {path}: {_first_line(exc)} (if that file is damaged, delete "
                           "it and it is exported again)") from None


def open_graph(weights_path: Path, sha: str, opts: Any, providers: list[str]) -> tuple[Any, Path]:
    """An inference session on the ONNX graph of ``weights_path``.

    The graph beside the weights is used when it was exported from exactly
    these weights, then one in the cache; when neither is, the graph is
    written into the cache. Whether a graph is current is read from its file
    (:func:`graph_weights_sha`): a current graph that ONNX Runtime fails to
    open raises :class:`WeightsError` naming it, and nothing is exported.
    """
    cached = cache_dir() / "onnx" / f"{sha[:32]}.onnx"
    for candidate in (weights_path.with_suffix(".onnx"), cached):
        if candidate.is_file() and graph_weights_sha(candidate) == sha:
            return _open(candidate, opts, providers), candidate
    from neuralengine.backends.graph import export_weights_file

    # Engines started together export once: the others wait here, then load
    # the graph the first one wrote.
    with file_lock(lock_path(cached)):
        if not (cached.is_file() and graph_weights_sha(cached) == sha):
            export_weights_file(weights_path, cached)
    return _open(cached, opts, providers), cached


def open_int8_graph(float_graph: Path, weights_path: Path, sha: str, opts: Any,
                    providers: list[str]) -> tuple[Any, Path]:
    """An inference session on the int8 (dynamically quantised) copy of ``float_graph``.

    The copy beside the weights (``model.int8.onnx``, as ``neuralengine
    export --int8`` writes it) is used when it was made from exactly these
    weights, then one in the cache; otherwise the cache gets one. Making it
    needs the ``onnx`` package (the ``torch`` extra).
    """
    cached = cache_dir() / "onnx" / f"{sha[:32]}.int8.onnx"
    for candidate in (weights_path.with_suffix(".int8.onnx"), cached):
        if candidate.is_file() and graph_weights_sha(candidate) == sha:
            return _open(candidate, opts, providers), candidate
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise WeightsError("the int8 graph is made with the onnx package: pip install 'neuralengine[torch]'") from None
    from neuralengine.backends.quantize import quantize_int8

    with file_lock(lock_path(cached)):
        if not (cached.is_file() and graph_weights_sha(cached) == sha):
            quantize_int8(float_graph, cached)
    return _open(cached, opts, providers), cached


class OnnxBackend(Backend):
    name = "onnx"
    #: Whether the session runs the int8 graph.
    int8 = False

    def describe(self) -> str:
        return f"{self.name}{' int8' if self.int8 else ''} ({self.device})"

    @classmethod
    def open(cls, path: Path, threads: int = 1, int8: bool = False) -> "OnnxBackend":
        import onnxruntime as ort

        meta = read_metadata(path)
        cfg = config_from_metadata(meta, str(path))
        sha = file_sha256(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session, graph = open_graph(path, sha, opts, providers)
        if int8:
            session, graph = open_int8_graph(graph, path, sha, opts, providers)
        backend = cls(cfg, path, sha)
        backend.int8 = int8
        backend.session = session
        backend.graph_path = graph
        backend.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        return backend

    def evaluate(self, boards: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        feeds = {"board": np.asarray(boards, dtype=np.int64)}
        if self.config.kind == ACTION_VALUE:
            feeds["actions"] = np.asarray(actions, dtype=np.int64)
        return self.session.run(None, feeds)[0]
