"""ONNX Runtime backend: CPU, or the CUDA execution provider when present.

The graph lives next to the weights (``model.safetensors`` →
``model.onnx``) and records the SHA-256 of the weights it was exported from.
A missing or stale graph is written into a cache (with NumPy alone).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from neuralengine.atomic import file_lock, lock_path
from neuralengine.backends.base import Backend
from neuralengine.backends.graph import WEIGHTS_SHA_KEY
from neuralengine.config import ACTION_VALUE
from neuralengine.paths import cache_dir
from neuralengine.weights import WeightsError, config_from_metadata, file_sha256, read_metadata

__all__ = ["WEIGHTS_SHA_KEY", "OnnxBackend", "cache_dir", "open_graph"]


def _session(path: Path, opts: Any, providers: list[str]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), opts, providers=providers)


def _matches(session: Any, sha: str) -> bool:
    return session.get_modelmeta().custom_metadata_map.get(WEIGHTS_SHA_KEY) == sha


def open_graph(weights_path: Path, sha: str, opts: Any, providers: list[str]) -> tuple[Any, Path]:
    """An inference session on the ONNX graph of ``weights_path``.

    The graph beside the weights is used when it was exported from exactly
    these weights, then one in the cache; otherwise the graph is written into
    the cache. Each graph is loaded once: the session
    that checks the fingerprint is the one that runs.
    """
    cached = cache_dir() / "onnx" / f"{sha[:32]}.onnx"
    for candidate in (weights_path.with_suffix(".onnx"), cached):
        session = _matching_session(candidate, sha, opts, providers)
        if session is not None:
            return session, candidate
    from neuralengine.backends.graph import export_weights_file

    # Engines started together export once: the others wait here, then load
    # the graph the first one wrote.
    with file_lock(lock_path(cached)):
        session = _matching_session(cached, sha, opts, providers)
        if session is not None:
            return session, cached
        graph = export_weights_file(weights_path, cached)
    try:
        return _session(graph, opts, providers), graph
    except Exception as exc:
        raise WeightsError(f"ONNX Runtime cannot load {graph}: {exc}") from None


def _matching_session(path: Path, sha: str, opts: Any, providers: list[str]) -> Any | None:
    """A session on the graph at ``path`` if it exists and was exported from weights ``sha``."""
    if not path.is_file():
        return None
    try:
        session = _session(path, opts, providers)
    except Exception:  # a corrupt graph counts as absent
        return None
    return session if _matches(session, sha) else None


class OnnxBackend(Backend):
    name = "onnx"

    @classmethod
    def open(cls, path: Path, threads: int = 1) -> "OnnxBackend":
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
        backend = cls(cfg, path, sha)
        backend.session = session
        backend.graph_path = graph
        backend.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        return backend

    def evaluate(self, boards: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        feeds = {"board": np.asarray(boards, dtype=np.int64)}
        if self.config.kind == ACTION_VALUE:
            feeds["actions"] = np.asarray(actions, dtype=np.int64)
        return self.session.run(None, feeds)[0]
