"""Fixtures of the speed benchmarks: random models of one size in both attention layouts.

Run with ``pytest bench`` (the default ``pytest`` run collects only
``tests/``). ``NEURALENGINE_BENCH_PRESET`` picks the size (default
``small``, 4 layers x 128; ``9M`` is DeepMind's smallest model). Random
weights cost exactly what trained ones cost.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from neuralengine.benchmarks.speed import write_random_model
from neuralengine.config import preset

PRESET = os.environ.get("NEURALENGINE_BENCH_PRESET", "small")


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"full": path, "shared_board": path}``: two random models of the same size, with ONNX graphs."""
    folder = tmp_path_factory.mktemp("bench-models")
    return {attention: write_random_model(folder, preset(PRESET, attention=attention))
            for attention in ("full", "shared_board")}


@pytest.fixture(scope="session")
def engine_command() -> list[str]:
    """The installed ``neuralengine`` executable, as GUIs start it."""
    exe = shutil.which("neuralengine", path=os.path.dirname(sys.executable)) or shutil.which("neuralengine")
    return [exe] if exe else [sys.executable, "-m", "neuralengine"]
