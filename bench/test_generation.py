"""``generation.py`` once: every step of a generation's measurement, with a few puzzles and games each.

The shipped model plays the part of both the new and the previous generation. The real gate (500
puzzles, 200 games against the previous generation, 40 against the random mover and against Stockfish)
is the script's own command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import generation

REPO = Path(__file__).resolve().parent.parent


def test_generation(benchmark, stockfish: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shipped = str(REPO / "weights" / "neuralengine.safetensors")
    out = tmp_path / "generation"
    argv = ["--weights", shipped, "--previous", shipped, "--puzzle-limit", "10", "--random-games", "2",
            "--previous-games", "2", "--stockfish-games", "2", "--tc", "1+0.01", "--concurrency", "1", "--check-depth", "4",
            "--out", str(out)]
    code = benchmark.pedantic(generation.main, args=(argv,), rounds=1, iterations=1)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["puzzles"]["puzzles"] == summary["puzzles_no_mate_rule"]["puzzles"] == 10
    for opponent in ("random", "previous", "stockfish"):
        assert summary[opponent]["games"] == 2, opponent
        assert summary[opponent]["move_check"]["depth"] == 4, opponent
    quality = summary["move_quality"]
    assert quality["games"] == 6
    assert quality["moves"] == sum(summary[k]["move_check"]["moves"] for k in ("random", "previous", "stockfish"))
    benchmark.extra_info.update(summary)
