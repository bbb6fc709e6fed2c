"""ONNX Runtime backend: CPU, or the CUDA execution provider when present.

The graph lives next to the weights (``model.safetensors`` →
``model.onnx``) and records the SHA-256 of the weights it was exported from.
A missing or stale graph is re-exported into a cache when PyTorch is
installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from neuralengine.backends import Backend, torch_available
from neuralengine.config import ACTION_VALUE
from neuralengine.weights import WeightsError, config_from_metadata, file_sha256, read_metadata

WEIGHTS_SHA_KEY = "neuralengine.weights_sha256"


def cache_dir() -> Path:
    base = os.environ.get("NEURALENGINE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "neuralengine")
    return Path(base)


def _session(path: Path, opts: Any, providers: list[str]) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), opts, providers=providers)


def _matches(session: Any, sha: str) -> bool:
    return session.get_modelmeta().custom_metadata_map.get(WEIGHTS_SHA_KEY) == sha


def open_graph(weights_path: Path, sha: str, opts: Any, providers: list[str]) -> tuple[Any, Path]:
    """An inference session on the ONNX graph of ``weights_path``.

    The graph beside the weights is used when it was exported from exactly
    these weights, then one in the cache; otherwise the graph is exported into
    the cache (which needs PyTorch). Each graph is loaded once: the session
    that checks the fingerprint is the one that runs.
    """
    candidates = [weights_path.with_suffix(".onnx"), cache_dir() / "onnx" / f"{sha[:32]}.onnx"]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            session = _session(candidate, opts, providers)
        except Exception:  # a corrupt graph counts as absent
            continue
        if _matches(session, sha):
            return session, candidate
    if not torch_available():
        raise WeightsError(
            f"no ONNX graph matches {weights_path.name}; run 'neuralengine export {weights_path}' "
            "or install neuralengine[torch] so that the engine can export it")
    from neuralengine.export import export_weights_file

    graph = export_weights_file(weights_path, candidates[1])
    try:
        return _session(graph, opts, providers), graph
    except Exception as exc:
        raise WeightsError(f"ONNX Runtime cannot load {graph}: {exc}") from None


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
