"""``pgn_lm_eval.py`` once: the legal-move rate of a tiny text model trained for a few steps on the committed
sample, over the sample's held-out games (no matches: they are the script's own command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pgn_lm_eval
import pytest

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "pgn_lm"


def test_pgn_lm_eval(benchmark, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch", reason="the tiny text model is trained with PyTorch")
    from neuralengine.train.pgn_lm import main as train_main

    run = tmp_path / "run"
    assert train_main(["--data", str(SAMPLE), "--out", str(run), "--steps", "20", "--layers", "2", "--dim", "32",
                       "--heads", "2", "--block-size", "512", "--batch-chars", "2048", "--threads", "1",
                       "--quiet"]) == 0
    capsys.readouterr()
    argv = ["--weights", str(run / "model.safetensors"), "--data", str(SAMPLE / "test.txt"), "--games", "3",
            "--json", "--quiet"]
    code = benchmark.pedantic(pgn_lm_eval.main, args=(argv,), rounds=1, iterations=1)
    assert code == 0
    legal = json.loads(capsys.readouterr().out)["legal"]
    assert legal["games"] == 3 and legal["positions"] > 50
    assert 0.0 <= legal["legal_rate"] <= legal["legal_rate_parsed"] <= 1.0
    assert sum(legal["positions_by_move_number"].values()) == legal["positions"]
    benchmark.extra_info.update(legal)
