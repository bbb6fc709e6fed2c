"""Trainer: losses, metrics, and a real (tiny) training run on Stockfish data."""

from __future__ import annotations

import csv
import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralengine.data.text import convert_text
from neuralengine.encoding import bucket_values, win_prob_to_bucket
from neuralengine.train import TrainConfig, hl_gauss_targets, kendall_tau, loss_fn, lr_at, train
from neuralengine.weights import load_weights


def test_hl_gauss_targets_are_distributions_centred_on_the_label():
    p = torch.tensor([0.02, 0.3, 0.51, 0.97])
    t = hl_gauss_targets(p, 128, 0.75 / 128)
    assert torch.allclose(t.sum(-1), torch.ones(4), atol=1e-6)
    centres = torch.as_tensor(bucket_values(128), dtype=torch.float32)
    # The mode is the label's bucket and the mean is close to p.
    assert t.argmax(-1).tolist() == win_prob_to_bucket(p.numpy()).tolist()
    assert torch.allclose(t @ centres, p, atol=2e-3)
    # Most mass sits within two buckets of the label.
    label = int(win_prob_to_bucket(0.3))
    assert float(t[1, label - 2 : label + 3].sum()) > 0.95


def test_one_hot_loss_is_the_nll_of_the_bucket_label():
    torch.manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 3, 128), -1)
    target = torch.tensor([[0.0, 0.5, 1.0], [1 / 128, 0.25, 0.9]])
    mask = torch.tensor([[True, True, True], [True, False, True]])
    labels = win_prob_to_bucket(target.numpy())
    expected = -np.mean([lp[i, j, labels[i, j]].item() for i in range(2) for j in range(3) if mask[i, j]])
    assert loss_fn(lp, target, mask, "onehot", 0.0).item() == pytest.approx(expected, rel=1e-6)


def test_masked_moves_do_not_change_the_loss():
    lp = torch.log_softmax(torch.randn(1, 4, 128), -1)
    target = torch.rand(1, 4)
    mask = torch.tensor([[True, True, False, False]])
    a = loss_fn(lp, target, mask, "hl_gauss", 0.01)
    b = loss_fn(lp[:, :2], target[:, :2], mask[:, :2], "hl_gauss", 0.01)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_kendall_tau_hand_values():
    assert kendall_tau(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert kendall_tau(np.array([1.0, 2, 3, 4]), np.array([4.0, 3, 2, 1])) == pytest.approx(-1.0)
    # Pairs: (1,2)+ (1,3)+ (1,4)+ (2,3)- (2,4)+ (3,4)+ → (5 - 1) / 6.
    assert kendall_tau(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(4 / 6)


def test_learning_rate_warms_up_then_decays():
    tc = TrainConfig(data=[], out="", lr=1e-3, warmup=10, steps=110, min_lr_ratio=0.1)
    assert lr_at(0, tc) == pytest.approx(1e-4)
    assert lr_at(9, tc) == pytest.approx(1e-3)
    assert lr_at(60, tc) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(110, tc) == pytest.approx(1e-4)


@pytest.fixture(scope="module")
def seed_shards(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards made from the first games of the real seed data."""
    src = sorted((shared_data / "av").glob("*.txt.xz"))[0]
    folder = tmp_path_factory.mktemp("seed")
    text = folder / "sample.txt"
    with lzma.open(src, "rt") as fh, open(text, "w") as out:
        for i, line in enumerate(fh):
            if i >= 3000:
                break
            out.write(line)
    stats = convert_text([text], folder / "shards", test_fraction=0.4, progress=False)
    assert stats["train"] > 500 and stats["test"] > 50
    return folder / "shards"


def _config(out: Path, data: Path, **kw) -> TrainConfig:
    base = dict(data=[str(data)], out=str(out), preset="tiny", steps=40, batch_size=16, max_moves=32, lr=3e-3,
                warmup=5, eval_every=40, eval_positions=100, checkpoint_every=10, log_every=5, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_reduces_held_out_loss_and_exports(seed_shards: Path, tmp_path: Path):
    result = train(_config(tmp_path / "run", seed_shards), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0] - 0.2
    # Uniform over 128 buckets is ln 128 = 4.85; the model must beat it.
    assert result["final_metrics"]["test_loss"] < np.log(128)
    weights = load_weights(result["weights"])
    assert weights.config.attention == "shared_board"
    assert weights.metadata["provenance"]["steps"] == 40
    assert (tmp_path / "run" / "model.onnx").is_file()
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 1000


def test_resume_reproduces_an_uninterrupted_run(seed_shards: Path, tmp_path: Path):
    torch.set_num_threads(1)
    straight = train(_config(tmp_path / "a", seed_shards, steps=20, eval_every=1000), progress=False)
    # Interrupted after 10 of 20 steps, then resumed.
    train(_config(tmp_path / "b", seed_shards, steps=20, stop_after=10, eval_every=1000), progress=False)
    resumed = train(_config(tmp_path / "b", seed_shards, steps=20, eval_every=1000), progress=False)
    assert resumed["step"] == 20
    a = load_weights(straight["weights"]).tensors
    b = load_weights(resumed["weights"]).tensors
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5


def test_full_attention_training_runs(seed_shards: Path, tmp_path: Path):
    result = train(_config(tmp_path / "full", seed_shards, attention="full", steps=10, batch_size=32,
                           eval_every=10, eval_positions=20), progress=False)
    assert load_weights(result["weights"]).config.attention == "full"
    assert 0.0 <= result["final_metrics"]["action_accuracy"] <= 1.0
