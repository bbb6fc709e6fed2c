"""``annotate_throughput.py`` once, on a few seed-data positions: every contender, one round.

The full comparison (200 positions at depth 7, two rounds) is the script's own command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import annotate_throughput

REPO = Path(__file__).resolve().parent.parent
#: Real seed data that a clone has (annotated text).
SEED_SAMPLE = REPO / "tests" / "data" / "shared" / "av" / "d7_s101-000.txt.xz"


def test_annotate_throughput(benchmark, stockfish: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "annotate_throughput.json"
    argv = [str(SEED_SAMPLE), "--positions", "6", "--stride", "97", "--depth", "4", "--rounds", "1",
            "--stockfish", stockfish, "--json", str(report)]
    code = benchmark.pedantic(annotate_throughput.main, args=(argv,), rounds=1, iterations=1)
    assert code == 0
    figures = json.loads(report.read_text())
    assert figures["positions"] == 6 and figures["action_values"] > 6
    assert set(figures["wall_seconds"]) == set(annotate_throughput.CONTENDERS)
    benchmark.extra_info.update(figures)
