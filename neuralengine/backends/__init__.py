"""Inference backends behind one small interface.

A backend turns board tokens and candidate actions into log-probabilities. It
never sees python-chess: the engine does the chess, the backend the maths.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from neuralengine.config import ModelConfig
from neuralengine.weights import WeightsError

#: Names accepted by :func:`create_backend` (and the UCI ``Backend`` option).
BACKENDS = ("auto", "onnx", "torch-cpu", "torch-cuda")


class Backend(ABC):
    name: str = ""
    device: str = "cpu"

    def __init__(self, config: ModelConfig, weights_path: Path, weights_sha256: str) -> None:
        self.config = config
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256

    @abstractmethod
    def evaluate(self, boards: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """Log-probabilities, float32.

        Action-value models: ``boards`` [B, 77], ``actions`` [B, N] give
        [B, N, K]. State-value and behavioural-cloning models: [B, 77] gives
        [B, K].
        """

    def describe(self) -> str:
        return f"{self.name} ({self.device})"


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def cuda_available() -> bool:
    """True when PyTorch can use a CUDA GPU. Without an NVIDIA driver it
    answers at once on Linux, without importing PyTorch."""
    if not torch_available():
        return False
    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia"):
        return False
    import torch

    return bool(torch.cuda.is_available())


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
        # A DeepMind checkpoint folder: converted once into the cache.
        from neuralengine.deepmind import resolve_weights

        path = resolve_weights(path)
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
