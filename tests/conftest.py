"""Shared fixtures: small random models written in the real weights format."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from neuralengine.config import ModelConfig, preset
from neuralengine.paths import find_stockfish
from neuralengine.weights import save_weights

REPO = Path(__file__).resolve().parent.parent
#: Committed samples of the shared data, in the layout of ``shared/data`` (see its README).
SHARED_SAMPLE = Path(__file__).resolve().parent / "data" / "shared"
STOCKFISH = find_stockfish()


def random_tensors(cfg: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights for ``cfg`` from the PyTorch initialisation."""
    import torch

    from neuralengine.model import Transformer

    torch.manual_seed(seed)
    model = Transformer(cfg)
    # Spread the head so that moves get clearly different scores.
    with torch.no_grad():
        model.head.weight.mul_(4.0)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def write_model(folder: Path, cfg: ModelConfig, seed: int = 0, onnx: bool = True, name: str = "model") -> Path:
    path = save_weights(folder / f"{name}.safetensors", cfg, random_tensors(cfg, seed),
                        provenance={"source": "random test model", "seed": seed})
    if onnx:
        from neuralengine.export import export_weights_file

        export_weights_file(path)
    return path


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny full-attention action-value model with its ONNX graph."""
    return write_model(tmp_path_factory.mktemp("tiny"), preset("tiny"))


@pytest.fixture(scope="session")
def tiny_shared_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shared-board action-value model with its ONNX graph."""
    return write_model(tmp_path_factory.mktemp("tiny_shared"), preset("tiny", attention="shared_board"))


@pytest.fixture(scope="session")
def stockfish_path() -> str:
    if STOCKFISH is None:
        pytest.skip("needs Debian's stockfish (apt-get install stockfish)")
    return STOCKFISH


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The committed samples of the shared data (puzzles, seed action values, tournament logs):
    the tests need no ``shared/`` folder beside the repository."""
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def engine_command() -> list[str]:
    """The real executable, as GUIs start it."""
    exe = shutil.which("neuralengine", path=os.path.dirname(sys.executable)) or shutil.which("neuralengine")
    return [exe] if exe else [sys.executable, "-m", "neuralengine"]
