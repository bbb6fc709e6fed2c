"""Fixtures of the benchmark tree: random models for the speed benchmarks, the engine's command, Stockfish.

Run with ``pytest bench`` (the default ``pytest`` run collects only
``tests/``). Every measuring script of ``bench/`` has a test here that runs
it once at a small size and keeps its figures in ``extra_info``
(``pytest bench --benchmark-json out.json`` writes them); the scripts' own
command lines make the full measurements.

``NEURALENGINE_BENCH_PRESET`` picks the size of the speed benchmarks' models
(default ``small``, 4 layers x 128; ``9M`` is DeepMind's smallest model).
Random weights cost exactly what trained ones cost.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from neuralengine.config import preset
from neuralengine.paths import find_stockfish

PRESET = os.environ.get("NEURALENGINE_BENCH_PRESET", "small")

#: This folder: its tests import the scripts by their file names, whatever pytest's import mode.
BENCH = Path(__file__).resolve().parent

if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


@pytest.fixture(scope="session")
def bench_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"full": path, "shared_board": path}``: two random models of the same size, with ONNX graphs."""
    pytest.importorskip("torch", reason="the random benchmark models are written with PyTorch (the torch extra)")
    from neuralengine.benchmarks.speed import write_random_model

    folder = tmp_path_factory.mktemp("bench-models")
    return {attention: write_random_model(folder, preset(PRESET, attention=attention))
            for attention in ("full", "shared_board")}


@pytest.fixture(scope="session")
def engine_command() -> list[str]:
    """The installed ``neuralengine`` executable, as GUIs start it."""
    exe = shutil.which("neuralengine", path=os.path.dirname(sys.executable)) or shutil.which("neuralengine")
    return [exe] if exe else [sys.executable, "-m", "neuralengine"]


@pytest.fixture(scope="session")
def stockfish() -> str:
    """The Stockfish binary (the benchmarks that need one are skipped without it)."""
    path = find_stockfish()
    if path is None:
        pytest.skip("Stockfish is not installed (apt-get install stockfish)")
    return path
