"""``cascade_quality.py`` once: the generation 4 candidate ranked by the shipped model, on 20 positions.

The full measurement (1,000 positions of the test games, with the plot) is the script's own command line.
"""

from __future__ import annotations

from pathlib import Path

import cascade_quality
from int8_agreement import DEFAULT_POSITIONS, read_fens

REPO = Path(__file__).resolve().parent.parent


def test_cascade_quality(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big, fast = REPO / "weights" / "candidates" / "gen4.safetensors", REPO / "weights" / "neuralengine.safetensors"
    fens = read_fens(DEFAULT_POSITIONS, 20)
    curve = benchmark.pedantic(cascade_quality.agreement_curve, args=(big, fast, fens, 60), rounds=1, iterations=1)
    shares = curve["agreement"]
    assert curve["positions"] == 20 and len(shares) == 61 and all(0.0 <= s <= 1.0 for s in shares)
    assert shares[-1] == 1.0  # every legal move scored: the full evaluation's move
    cascade_quality.plot([curve], [], tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    benchmark.extra_info.update(curve)
