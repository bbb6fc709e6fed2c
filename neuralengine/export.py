"""Export a PyTorch model to ONNX (needs the ``torch`` extra)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from neuralengine.backends.onnx import WEIGHTS_SHA_KEY
from neuralengine.config import ACTION_VALUE
from neuralengine.model import Transformer
from neuralengine.weights import Weights, load_weights

OPSET = 17


def model_from_weights(weights: Weights, device: str | torch.device = "cpu") -> Transformer:
    model = Transformer(weights.config)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.tensors.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def export_onnx(model: Transformer, path: str | os.PathLike[str], weights_sha256: str = "") -> Path:
    """Write ``model`` as an ONNX graph with dynamic batch and move axes.

    Action-value graphs take ``board`` int64 [B, 77] and ``actions`` int64
    [B, N] and return ``log_probs`` [B, N, K]; the others take ``board`` and
    return [B, K].
    """
    import onnx

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
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(tmp), input_names=names, output_names=["log_probs"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = WEIGHTS_SHA_KEY, weights_sha256
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def export_weights_file(weights_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str] | None = None) -> Path:
    """Export the ONNX sidecar of a weights file (default: same name, ``.onnx``)."""
    weights = load_weights(weights_path)
    target = Path(onnx_path) if onnx_path else Path(weights_path).with_suffix(".onnx")
    return export_onnx(model_from_weights(weights), target, weights.sha256)
