"""``ray_throughput.py`` once: a few positions annotated by the process pool and by Ray actors, one round.

The script checks that both wrote the same shards. The full measurement (1,500 positions, three rounds) is
its own command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray_throughput

from neuralengine.data.text import open_text

REPO = Path(__file__).resolve().parent.parent
#: Real seed data that a clone has (annotated text).
SEED_SAMPLE = REPO / "tests" / "data" / "shared" / "av" / "d7_s101-000.txt.xz"


def test_ray_throughput(benchmark, stockfish: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("ray", reason="Ray is not installed (the cluster extra)")
    positions = tmp_path / "positions.fen"
    with open_text(SEED_SAMPLE) as fh:
        lines = [line.split("\t")[0] + f"\tbench-{number // 40}\n" for number, line in enumerate(fh) if number < 400]
    positions.write_text("".join(lines[::20]))
    report = tmp_path / "ray_throughput.json"
    argv = [str(positions), "--positions", "20", "--depth", "3", "--workers", "2", "--shard-size", "5",
            "--rounds", "1", "--stockfish", stockfish, "--json", str(report)]
    code = benchmark.pedantic(ray_throughput.main, args=(argv,), rounds=1, iterations=1)
    assert code == 0, "the pool and Ray wrote different shards"
    figures = json.loads(report.read_text())
    assert [row["mode"] for row in figures["rounds"]] == ["pool", "ray"]
    assert all(row["positions"] == 20 for row in figures["rounds"])
    benchmark.extra_info.update(figures)
