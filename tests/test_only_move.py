"""Only-move positions (best move ahead of the second best by more than 0.2 win probability): their share in
every split prepare writes, over-sampling in training, and held-out accuracy split by them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from neuralengine.data.only_move import ONLY_MOVE_MARGIN, is_only_move, only_move_flags
from neuralengine.data.prepare import main as prepare_main
from neuralengine.data.shards import Shard
from neuralengine.data.text import open_text, parse_line

torch = pytest.importorskip("torch")


def test_hand_cases() -> None:
    assert is_only_move(np.array([0.9, 0.5, 0.1]))
    assert not is_only_move(np.array([0.9, 0.75, 0.1]))
    assert not is_only_move(np.array([0.9, 0.9, 0.1]))  # two mates: no single move
    assert not is_only_move(np.array([0.7, 0.5]))  # exactly the margin is not more than it
    assert not is_only_move(np.array([1.0]))  # a single move has no second best
    offsets = np.array([0, 3, 3, 4, 6, 8])
    probs = np.array([0.1, 0.9, 0.5, 1.0, 0.3, 0.3, 0.0, 0.95])
    assert only_move_flags(offsets, probs).tolist() == [True, False, False, False, True]


def test_flags_equal_the_one_position_rule_on_real_data(shared_data: Path) -> None:
    src = sorted((shared_data / "av").glob("*.txt.xz"))[0]
    rows = []
    with open_text(src) as fh:
        for _, line in zip(range(2000), fh):
            rows.append(parse_line(line)[2])
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    flat = np.concatenate(rows)
    expected = [is_only_move(r) for r in rows]
    for chunk in (7, 1000, 1 << 22):  # chunks smaller than one position still take whole positions
        assert only_move_flags(offsets, flat, chunk=chunk).tolist() == expected
    assert 5 < sum(expected) < 200  # the seed data holds a few per cent of them


def _share_in(folder: Path, split: str) -> tuple[int, int]:
    count = total = 0
    for path in sorted(folder.glob(f"{split}-*.neav")):
        shard = Shard(path)
        count += int(only_move_flags(shard.offsets, shard.win_probs).sum())
        total += len(shard)
    return count, total


def test_prepare_reports_the_share_of_each_split(shared_data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "shards"
    assert prepare_main([str(shared_data / "av"), "--out", str(out), "--test-fraction", "0.2", "--quiet"]) == 0
    err = capsys.readouterr().err
    summary = json.loads((out / "prepare.json").read_text())
    for split in ("train", "test"):
        count, total = _share_in(out, split)
        assert total == summary[split] and count == summary[f"{split}_only_move"]
        assert summary["only_move"][f"{split}_share"] == pytest.approx(count / total)
        assert f"{split} {100 * count / total:.1f} % ({count})" in err
    assert summary["only_move"]["margin"] == ONLY_MOVE_MARGIN
    assert summary["train_only_move"] > 0


@pytest.fixture(scope="module")
def shards(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("om") / "shards"
    assert prepare_main([str(shared_data / "av"), "--out", str(out), "--test-fraction", "0.2", "--quiet"]) == 0
    return out


def test_oversampling_draws_only_move_positions_f_times_as_often(shards: Path) -> None:
    from neuralengine.data.shards import open_shards
    from neuralengine.train.data import ActionValueData, sample_positions

    data = ActionValueData(open_shards(sorted(str(p) for p in shards.glob("train-*.neav"))))
    special = set(data.only_move.tolist())
    n_special, n = len(special), len(data)
    # Factor 1 draws exactly what training always drew.
    assert np.array_equal(sample_positions(data, 500, np.random.default_rng(3)),
                          np.random.default_rng(3).integers(0, n, 500))
    for factor in (4.0, 0.5):
        drawn = sample_positions(data, 200_000, np.random.default_rng(1), factor)
        assert drawn.min() >= 0 and drawn.max() < n
        share = np.isin(drawn, list(special)).mean()
        expected = factor * n_special / (factor * n_special + n - n_special)
        assert share == pytest.approx(expected, rel=0.05)
        # The other positions are all still drawn, uniformly.
        others = drawn[~np.isin(drawn, list(special))]
        assert len(set(others.tolist())) == n - n_special


def _train_args(out: Path, data: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", "6", "--batch-size", "8",
            "--eval-every", "3", "--eval-positions", "100000", "--log-every", "3", "--threads", "1", "--quiet",
            *extra]


def test_training_with_oversampling_and_the_bias_reports_the_split(shards: Path, tmp_path: Path, capsys) -> None:
    from neuralengine.train.cli import main
    from neuralengine.weights import load_weights

    out = tmp_path / "run"
    assert main(_train_args(out, shards, "--attention", "board_head", "--only-move-oversample", "4",
                            "--attention-bias")) == 0
    err = capsys.readouterr().err
    assert "only-move" in err and "quiet" in err
    assert "are only-move positions, drawn 4 times as often" in err
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    final = rows[-1]
    acc, only, quiet = (float(final[k]) for k in ("action_accuracy", "only_move_accuracy", "quiet_accuracy"))
    n_only = int(final["only_move_positions"])
    count, total = _share_in(shards, "test")
    assert n_only == count > 0
    positions = total  # every held-out position is measured
    assert acc * positions == pytest.approx(only * n_only + quiet * (positions - n_only), abs=1e-6)
    weights = load_weights(out / "model.safetensors")
    assert weights.config.attention_bias
    assert weights.metadata["provenance"]["only_move_oversample"] == 4.0
    assert "only_move_accuracy" in weights.metadata["provenance"]["final_metrics"]


def test_bad_combinations_are_refused_in_one_line(shards: Path, tmp_path: Path, capsys) -> None:
    from neuralengine.train.cli import main

    assert main(_train_args(tmp_path / "a", shards, "--attention", "full", "--only-move-oversample", "3")) == 2
    assert "--only-move-oversample needs" in capsys.readouterr().err
    assert main(_train_args(tmp_path / "b", shards, "--attention", "shared_board", "--attention-bias")) == 2
    assert "shared_board" in capsys.readouterr().err
    assert main(_train_args(tmp_path / "c", shards, "--only-move-oversample", "0")) == 2
    assert "positive" in capsys.readouterr().err
