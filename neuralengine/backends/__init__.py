"""Inference backends behind one small interface.

A backend turns board tokens and candidate actions into log-probabilities. It
never sees python-chess: the engine does the chess, the backend the maths.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from neuralengine.backends.base import Backend, cuda_available, torch_available
from neuralengine.weights import WeightsError

#: Names accepted by :func:`create_backend` (and the UCI ``Backend`` option).
BACKENDS = ("auto", "onnx", "torch-cpu", "torch-cuda")


#: Attention layouts whose int8 graph keeps the float32 graph's move choice well enough to be offered:
#: at least :data:`INT8_MIN_AGREEMENT` of the moves on trained models. None does yet (see
#: :data:`INT8_AGREEMENT`), so the ``Int8`` option explains and refuses.
INT8_LAYOUTS: tuple[str, ...] = ()
INT8_MIN_AGREEMENT = 0.99
#: The best share of positions where the int8 graph played the float32 graph's move, measured on trained
#: models of each layout (``bench/int8_agreement.py``, 300 positions of real games; docs/results.md).
INT8_AGREEMENT = {"full": 0.943, "board_head": 0.967, "shared_board": 0.973}


def int8_refusal(attention: str) -> str | None:
    """Why the int8 graph is not offered for models of this attention layout, or ``None`` when it is."""
    if attention in INT8_LAYOUTS:
        return None
    measured = INT8_AGREEMENT.get(attention)
    found = "" if measured is None else f" (measured on trained models: {measured:.1%})"
    return (f"int8 is refused for {attention}-attention models: its move must agree with the float32 graph's in "
            f"at least {INT8_MIN_AGREEMENT:.0%} of positions{found}; playing with the float32 graph "
            "(see the int8 section of docs/engine.md)")


def create_backend(weights_path: str | os.PathLike[str], name: str = "auto", threads: int = 1,
                   int8: bool = False) -> Backend:
    """Open ``weights_path`` with the named backend.

    ``auto`` picks PyTorch on CUDA when a GPU is usable, else ONNX Runtime,
    else PyTorch on the CPU. ``int8`` runs ONNX Runtime on the dynamically
    quantised graph (``auto`` then means ``onnx``), for the attention layouts
    of :data:`INT8_LAYOUTS` only. Raises :class:`WeightsError` or
    ``ValueError`` with a message that names the problem.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    if int8:
        from neuralengine.weights import config_from_metadata, read_metadata

        refusal = int8_refusal(config_from_metadata(read_metadata(weights_path), str(weights_path)).attention)
        if refusal:
            backend = create_backend(weights_path, name, threads)
            backend.notice = refusal
            return backend
        if name not in ("auto", "onnx"):
            raise ValueError(f"int8 runs on the onnx backend, not {name}")
        if importlib.util.find_spec("onnxruntime") is None:
            raise ValueError("int8 needs ONNX Runtime: pip install onnxruntime")
        name = "onnx"
    path = Path(weights_path)
    if path.is_dir():
        # DeepMind checkpoint folders and model names are resolved above this
        # layer (neuralengine.deepmind.resolve_weights, called by Engine.open).
        raise WeightsError(f"{path} is a folder, not a weights file")
    if name == "auto":
        if cuda_available():
            name = "torch-cuda"
        elif importlib.util.find_spec("onnxruntime") is not None:
            name = "onnx"
        else:
            name = "torch-cpu"
    if name == "onnx":
        from neuralengine.backends.onnx import OnnxBackend

        return OnnxBackend.open(path, threads, int8=int8)
    if not torch_available():
        raise ValueError(f"backend {name} needs PyTorch: pip install 'neuralengine[torch]'")
    from neuralengine.backends.torch import TorchBackend

    if name == "torch-cuda" and not cuda_available():
        raise ValueError("backend torch-cuda needs a CUDA GPU and a CUDA build of PyTorch")
    return TorchBackend.open(path, "cuda" if name == "torch-cuda" else "cpu", threads)


__all__ = ["BACKENDS", "INT8_AGREEMENT", "INT8_LAYOUTS", "INT8_MIN_AGREEMENT", "Backend", "WeightsError", "create_backend",
           "cuda_available", "int8_refusal", "torch_available"]
