"""Writing the ONNX graph that the ``onnx`` backend runs.

The graph of ``model.safetensors`` is ``model.onnx``; its metadata records
the SHA-256 of the weights it was made from (:data:`WEIGHTS_SHA_KEY`), so a
stale graph is never used. The ``onnx`` backend writes a missing graph into
the cache with :func:`export_weights_file`; ``neuralengine export``
(:mod:`neuralengine.export`) is the command around it.

The graph is written with NumPy alone (:mod:`neuralengine.backends.onnx_writer`),
so a plain install exports graphs; PyTorch is needed only for
:func:`model_from_weights` (the ``torch`` backends, training and probes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from neuralengine.atomic import atomic_path
from neuralengine.backends.onnx_writer import write_graph
from neuralengine.config import ModelConfig
from neuralengine.weights import Weights, load_weights

if TYPE_CHECKING:
    import numpy as np
    import torch

    from neuralengine.model import Transformer

#: ONNX metadata key holding the SHA-256 of the weights a graph was exported from.
WEIGHTS_SHA_KEY = "neuralengine.weights_sha256"


def model_from_weights(weights: Weights, device: str | torch.device = "cpu") -> Transformer:
    """A PyTorch :class:`~neuralengine.model.Transformer` holding ``weights``, in eval mode."""
    import numpy as np
    import torch

    from neuralengine.model import Transformer

    model = Transformer(weights.config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.tensors.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def set_graph_metadata(path: Path, entries: dict[str, str]) -> None:
    """Add or replace metadata entries of the ONNX graph at ``path`` (in place; needs the onnx package)."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in entries.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def write_onnx(cfg: ModelConfig, tensors: Mapping[str, np.ndarray], path: str | os.PathLike[str],
               weights_sha256: str = "") -> Path:
    """Write the ONNX graph of a model with these weights (dynamic batch and move axes).

    Action-value graphs take ``board`` int64 [B, 77] and ``actions`` int64
    [B, N] and return ``log_probs`` [B, N, K]; the others take ``board`` and
    return [B, K].
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: two engines exporting the same graph never collide.
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        write_graph(file, cfg, tensors, {WEIGHTS_SHA_KEY: weights_sha256})
    return path


def export_onnx(model: Transformer, path: str | os.PathLike[str], weights_sha256: str = "") -> Path:
    """Write the ONNX graph of a PyTorch :class:`~neuralengine.model.Transformer`."""
    tensors = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    return write_onnx(model.cfg, tensors, path, weights_sha256)


def export_weights_file(weights_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str] | None = None) -> Path:
    """Export the ONNX sidecar of a weights file (default: same name, ``.onnx``)."""
    weights = load_weights(weights_path)
    target = Path(onnx_path) if onnx_path else Path(weights_path).with_suffix(".onnx")
    return write_onnx(weights.config, weights.tensors, target, weights.sha256)
