"""The backend interface and the checks for optional libraries.

Kept apart from :mod:`neuralengine.backends` so that the backends import it
without importing the package that chooses between them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from neuralengine.config import ModelConfig


class Backend(ABC):
    name: str = ""
    device: str = "cpu"
    #: Something the user should know about how this backend was opened (an int8 request refused), or ``None``.
    notice: str | None = None

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
