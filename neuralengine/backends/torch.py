"""PyTorch backend, on the CPU or a CUDA GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuralengine.backends.base import Backend
from neuralengine.config import ACTION_VALUE
from neuralengine.backends.graph import model_from_weights
from neuralengine.weights import load_weights


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str, path: Path, sha: str) -> None:
        super().__init__(model.cfg, path, sha)
        self.model = model
        self.device = device

    @classmethod
    def open(cls, path: Path, device: str = "cpu", threads: int = 1) -> "TorchBackend":
        weights = load_weights(path)
        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        return cls(model_from_weights(weights, device), device, path, weights.sha256)

    @torch.inference_mode()
    def evaluate(self, boards: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        b = torch.as_tensor(np.asarray(boards, dtype=np.int64), device=self.device)
        if self.config.kind == ACTION_VALUE:
            a = torch.as_tensor(np.asarray(actions, dtype=np.int64), device=self.device)
            out = self.model(b, a)
        else:
            out = self.model(b)
        return out.float().cpu().numpy()
