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


def create_backend(weights_path: str | os.PathLike[str], name: str = "auto", threads: int = 1) -> Backend:
    """Open ``weights_path`` with the named backend.

    ``auto`` picks PyTorch on CUDA when a GPU is usable, else ONNX Runtime,
    else PyTorch on the CPU. Raises :class:`WeightsError` or ``ValueError``
    with a message that names the problem.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
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

        return OnnxBackend.open(path, threads)
    if not torch_available():
        raise ValueError(f"backend {name} needs PyTorch: pip install 'neuralengine[torch]'")
    from neuralengine.backends.torch import TorchBackend

    if name == "torch-cuda" and not cuda_available():
        raise ValueError("backend torch-cuda needs a CUDA GPU and a CUDA build of PyTorch")
    return TorchBackend.open(path, "cuda" if name == "torch-cuda" else "cpu", threads)


__all__ = ["BACKENDS", "Backend", "WeightsError", "create_backend", "cuda_available", "torch_available"]
