"""``int8_agreement.py`` once: the float32 and int8 graphs of the benchmark's random full-attention model.

The full measurement (trained models, 300 positions) is the script's own command line.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import int8_agreement
import pytest


def test_int8_agreement(benchmark, bench_models: dict[str, Path], tmp_path: Path,  # type: ignore[no-untyped-def]
                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx", reason="the int8 graph is made with the onnx package (the torch extra)")
    monkeypatch.setenv("NEURALENGINE_CACHE", str(tmp_path / "cache"))
    fens = int8_agreement.read_fens(int8_agreement.DEFAULT_POSITIONS, 5)
    row = benchmark.pedantic(int8_agreement.measure, args=(bench_models["full"], fens), rounds=1, iterations=1)
    assert row.positions == 5 and 0.0 <= row.agreement <= 1.0 and row.attention == "full"
    assert row.fp32_pos_s > 0 and row.int8_pos_s > 0 and 0.0 <= row.max_delta < 1.0
    benchmark.extra_info.update(asdict(row))
