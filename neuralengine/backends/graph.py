"""Writing the ONNX graph that the ``onnx`` backend runs (needs the ``torch`` extra).

The graph of ``model.safetensors`` is ``model.onnx``; its metadata records
the SHA-256 of the weights it was made from (:data:`WEIGHTS_SHA_KEY`), so a
stale graph is never used. The ``onnx`` backend writes a missing graph into
the cache with :func:`export_weights_file`; ``neuralengine export``
(:mod:`neuralengine.export`) is the command around it.

PyTorch and onnx are imported only when a graph is actually written.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from neuralengine.atomic import atomic_path
from neuralengine.config import ACTION_VALUE
from neuralengine.weights import Weights, load_weights

if TYPE_CHECKING:
    import torch

    from neuralengine.model import Transformer

#: ONNX metadata key holding the SHA-256 of the weights a graph was exported from.
WEIGHTS_SHA_KEY = "neuralengine.weights_sha256"

OPSET = 17


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
    """Add or replace metadata entries of the ONNX graph at ``path`` (in place)."""
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in entries.items():
        entry = existing.get(key) or proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_onnx(model: Transformer, path: str | os.PathLike[str], weights_sha256: str = "") -> Path:
    """Write ``model`` as an ONNX graph with dynamic batch and move axes.

    Action-value graphs take ``board`` int64 [B, 77] and ``actions`` int64
    [B, N] and return ``log_probs`` [B, N, K]; the others take ``board`` and
    return [B, K].
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    board = torch.zeros(1, 77, dtype=torch.int64)
    if model.cfg.kind == ACTION_VALUE:
        args: tuple[torch.Tensor, ...] = (board, torch.zeros(1, 3, dtype=torch.int64))
        names = ["board", "actions"]
        axes = {"board": {0: "batch"}, "actions": {0: "batch", 1: "moves"}, "log_probs": {0: "batch", 1: "moves"}}
    else:
        args = (board,)
        names = ["board"]
        axes = {"board": {0: "batch"}, "log_probs": {0: "batch"}}
    # A unique temporary name: two engines exporting the same graph never collide.
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(tmp), input_names=names, output_names=["log_probs"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        set_graph_metadata(tmp, {WEIGHTS_SHA_KEY: weights_sha256})
    return path


def export_weights_file(weights_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str] | None = None) -> Path:
    """Export the ONNX sidecar of a weights file (default: same name, ``.onnx``)."""
    weights = load_weights(weights_path)
    target = Path(onnx_path) if onnx_path else Path(weights_path).with_suffix(".onnx")
    return export_onnx(model_from_weights(weights), target, weights.sha256)
