"""Trainer: losses, metrics, and a real (tiny) training run on Stockfish data."""

from __future__ import annotations

import csv
import lzma
from pathlib import Path

import numpy as np
import pytest
import torch

from neuralengine.data.prepare import convert_text
from neuralengine.encoding import bucket_values, win_prob_to_bucket
from neuralengine.train.loop import TrainConfig, lr_at, train
from neuralengine.train.losses import hl_gauss_targets, loss_fn
from neuralengine.train.metrics import kendall_tau
from neuralengine.weights import load_weights


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A run with ``threads=1`` (and the tests that pin one thread for bitwise resumes) changes PyTorch's
    process-wide thread count: give the later tests of the session the count they started with."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_full_attention_accuracy_counts_real_hits(seed_shards: Path, tmp_path: Path):
    """A full-attention model is really trained, and its reported accuracy is the share of held-out positions
    where its best move is one of Stockfish's best, counted here by hand: one position at a time, every
    legal move scored, no padding or masks. The Kendall tau, a continuous number, is recomputed the same way,
    so a model that scores the wrong board or the wrong moves cannot match by chance."""
    from neuralengine.backends.graph import model_from_weights
    from neuralengine.data.shards import open_shards
    from neuralengine.train.data import ActionValueData
    from neuralengine.train.metrics import evaluate

    n = 60
    result = train(_config(tmp_path / "run", seed_shards, attention="full", eval_positions=n), progress=False)
    weights = load_weights(result["weights"])
    assert weights.config.attention == "full"
    assert weights.metadata["provenance"]["steps"] == 40
    losses = [float(r["train_loss"]) for r in csv.DictReader(open(tmp_path / "run" / "metrics.csv"))]
    assert losses[-1] < losses[0] - 0.2
    model = model_from_weights(weights).eval()
    test = ActionValueData(open_shards(sorted(str(p) for p in seed_shards.glob("test-*.neav"))))
    assert len(test) >= n
    centres = np.asarray(bucket_values(128), dtype=np.float64)
    hits, taus = 0, []
    for i in range(n):
        lo, hi = int(test.offsets[i]), int(test.offsets[i + 1])
        actions = np.asarray(test.actions[lo:hi])
        truth = np.asarray(test.win_probs[lo:hi], dtype=np.float64)
        with torch.no_grad():
            log_probs = model(torch.as_tensor(test.boards[i : i + 1]), torch.as_tensor(actions[None]))[0]
        expected = np.exp(log_probs.double().numpy()) @ centres
        chosen = int(actions[int(np.argmax(expected))])
        stockfish_best = {int(a) for a, p in zip(actions, truth) if p >= truth.max() - 1e-6}
        hits += chosen in stockfish_best
        tau = kendall_tau(expected, truth)
        if not np.isnan(tau):
            taus.append(tau)
    assert len(taus) > n // 2
    for measured in (result["final_metrics"], weights.metadata["provenance"]["final_metrics"],
                     evaluate(model, test, torch.device("cpu"), n)):
        assert measured["action_accuracy"] == pytest.approx(hits / n)
        assert measured["kendall_tau"] == pytest.approx(float(np.mean(taus)), abs=2e-3)


# --------------------------------------------------------------------------
# Held-out data, atomic checkpoints, starting from weights
# --------------------------------------------------------------------------


def test_held_out_shards_never_enter_training(seed_shards: Path, tmp_path: Path):
    from neuralengine.data.shards import Shard
    from neuralengine.train.data import split_shard_paths

    train_files, test_files = split_shard_paths([str(seed_shards)], None)
    assert test_files and all(Path(f).name.startswith("test-") for f in test_files)
    assert train_files and not any(Path(f).name.startswith("test-") for f in train_files)
    # With an explicit --test-data the folder's own test shards stay out of training too.
    explicit = split_shard_paths([str(seed_shards)], test_files)
    assert explicit == (train_files, test_files)
    result = train(_config(tmp_path / "run", seed_shards, steps=2, eval_every=1000, eval_positions=10,
                           test_data=test_files), progress=False)
    assert result["train_positions"] == sum(len(Shard(Path(f)).boards) for f in train_files)


def test_a_run_without_held_out_positions_says_so(seed_shards: Path, tmp_path: Path, capsys):
    """No test shards beside the data, or only empty ones: the run warns that it measures nothing held out,
    and reports no metrics rather than zeros."""
    import shutil

    from neuralengine.data.shards import write_shard

    train_only = tmp_path / "train_only"
    train_only.mkdir()
    for shard in seed_shards.glob("train-*.neav"):
        shutil.copy(shard, train_only / shard.name)
    empty = write_shard(tmp_path / "empty" / "test-0000.neav", [])
    for name, kw in (("no_test_shards", {}), ("empty_test_shard", {"test_data": [str(empty)]})):
        result = train(_config(tmp_path / name, train_only, steps=2, eval_every=1, eval_positions=10, **kw),
                       progress=False)
        assert result["final_metrics"] == {}, name
        warnings = [line for line in capsys.readouterr().err.splitlines() if "no held-out positions" in line]
        assert warnings and all("--test-data" in line or "final_metrics" in line for line in warnings), name
        rows = list(csv.DictReader(open(tmp_path / name / "metrics.csv")))
        assert rows and not any(r["test_loss"] for r in rows), name


class _Killed(BaseException):
    """Stands for SIGKILL at one point of a checkpoint save."""


@pytest.mark.slow
def test_a_kill_at_any_step_of_a_checkpoint_save_loses_nothing(seed_shards: Path, tmp_path: Path, monkeypatch):
    import os

    import safetensors.torch

    torch.set_num_threads(1)
    kw = dict(steps=12, checkpoint_every=4, eval_every=1000, log_every=2)
    straight = train(_config(tmp_path / "straight", seed_shards, **kw), progress=False)
    want = load_weights(straight["weights"]).tensors
    real = {"save_file": safetensors.torch.save_file, "fsync": os.fsync, "replace": os.replace}
    # One save calls: save_file, fsync, replace (tensors), fsync, replace (readable copy).
    for kill_at in range(5):
        calls = {"saves": 0, "n": 0}

        def hook(name: str):
            def wrapped(*args, **kwargs):
                calls["saves"] += name == "save_file"
                if calls["saves"] == 2:  # the save of step 8: count its calls
                    calls["n"] += 1
                    if calls["n"] == kill_at + 1:
                        raise _Killed(name)
                return real[name](*args, **kwargs)
            return wrapped

        run = tmp_path / f"killed{kill_at}"
        with monkeypatch.context() as m:
            m.setattr(safetensors.torch, "save_file", hook("save_file"))
            m.setattr(os, "fsync", hook("fsync"))
            m.setattr(os, "replace", hook("replace"))
            with pytest.raises(_Killed):
                train(_config(run, seed_shards, **kw), progress=False)
        from neuralengine.train.checkpoint import checkpoint_info

        # The checkpoint on disk is whole: the one of step 4, or of step 8 once renamed.
        assert checkpoint_info(run / "checkpoint.safetensors")["step"] == (8 if kill_at >= 3 else 4)
        resumed = train(_config(run, seed_shards, **kw), progress=False)
        got = load_weights(resumed["weights"]).tensors
        assert max(float(np.abs(want[k] - got[k]).max()) for k in want) < 1e-5
        steps = [int(r["step"]) for r in csv.DictReader(open(run / "metrics.csv"))]
        assert steps == sorted(set(steps)), f"metric rows repeated after a kill at {kill_at}: {steps}"
        assert not list(run.glob(".*.tmp"))


def test_a_run_removes_only_the_temporary_files_of_dead_writers(seed_shards: Path, tmp_path: Path):
    """Starting a run clears what a killed save left in the run folder, but not the temporary file of a
    writer that is still running, nor a file of another naming scheme."""
    import os
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    run = tmp_path / "run"
    run.mkdir()
    dead = run / f".checkpoint.safetensors.{dead_pid}.x1y2.tmp"
    alive = run / f".model.safetensors.{os.getppid()}.a3b4.tmp"
    foreign = run / ".notes.tmp"
    for path in (dead, alive, foreign):
        path.write_bytes(b"partial")
    train(_config(run, seed_shards, steps=2, eval_every=1000, eval_positions=10), progress=False)
    assert not dead.exists()
    assert alive.exists() and foreign.exists()


def test_training_starts_from_the_shipped_kind_of_weights(seed_shards: Path, tmp_path: Path):
    """--init: a shared-board run seeds a board-head model's encoder; a
    checkpoint of the same architecture brings its optimiser state too."""
    from neuralengine.model import Transformer
    from neuralengine.train.checkpoint import init_from
    from neuralengine.train.cli import main
    from neuralengine.train.loop import model_config

    first = train(_config(tmp_path / "first", seed_shards, steps=6, eval_every=1000), progress=False)
    source = load_weights(first["weights"]).tensors
    tc = _config(tmp_path / "second", seed_shards, attention="board_head")
    model = Transformer(model_config(tc))
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters())
    summary = init_from(first["weights"], model, ema, opt)
    assert "fresh: head, move_head" in summary
    state = model.state_dict()
    assert np.array_equal(state["blocks.1.attn.q.weight"].numpy(), source["blocks.1.attn.q.weight"])
    assert np.array_equal(state["pos_embed"].numpy(), source["pos_embed"][:78])
    assert not opt.state
    # Same architecture, from the run folder: model, EMA and AdamW moments.
    tc_same = _config(tmp_path / "third", seed_shards)
    model = Transformer(model_config(tc_same))
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters())
    assert "optimiser" in init_from(str(tmp_path / "first"), model, ema, opt)
    assert len(opt.state) == len(list(model.parameters()))
    # The command line takes the architecture from the --init file.
    out = tmp_path / "cli"
    assert main(["--data", str(seed_shards), "--out", str(out), "--init", first["weights"], "--steps", "3",
                 "--batch-size", "8", "--eval-positions", "10", "--threads", "1", "--quiet"]) == 0
    weights = load_weights(out / "model.safetensors")
    assert (weights.config.num_layers, weights.config.embed_dim) == (2, 32)
    assert weights.metadata["provenance"]["init"] == "model.safetensors"


def _train_args(out: Path, data: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "8", "--eval-positions", "10",
            "--threads", "1", "--quiet", *extra]


def test_init_from_a_file_that_is_not_our_weights_fails_in_one_line(seed_shards: Path, tmp_path: Path, capsys):
    """A foreign safetensors file or a file of another kind given to --init: one line and exit status 2,
    whatever architecture flags come with it."""
    from safetensors.numpy import save_file

    from neuralengine.train.cli import main

    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": np.zeros((4, 4), np.float32)}, str(foreign))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file")
    for source in (foreign, garbage):
        for extra in ([], ["--preset", "tiny"], ["--attention", "board_head"]):
            out = tmp_path / f"run-{source.stem}-{len(extra)}"
            assert main(_train_args(out, seed_shards, "--init", str(source), *extra)) == 2
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("neuralengine train: --init: "), lines
            assert source.name in lines[0]
            assert not (out / "model.safetensors").exists()


def test_init_keeps_the_init_models_sizes_and_refuses_another_width(seed_shards: Path, tmp_path: Path,
                                                                    tiny_shared_weights: Path, capsys):
    """--init with --attention trains the init model's sizes in the new layout (its encoder seeds the new
    model); a --preset or --dim of another width, which would copy nothing, is refused in one line."""
    from neuralengine.train.cli import main

    out = tmp_path / "board_head"
    assert main(_train_args(out, seed_shards, "--init", str(tiny_shared_weights), "--attention", "board_head")) == 0
    cfg = load_weights(out / "model.safetensors").config
    assert (cfg.attention, cfg.num_layers, cfg.embed_dim, cfg.num_heads) == ("board_head", 2, 32, 2)
    assert "fresh: head, move_head" in capsys.readouterr().err
    deeper = tmp_path / "deeper"
    assert main(_train_args(deeper, seed_shards, "--init", str(tiny_shared_weights), "--layers", "3")) == 0
    cfg = load_weights(deeper / "model.safetensors").config
    assert (cfg.attention, cfg.num_layers, cfg.embed_dim) == ("shared_board", 3, 32)
    capsys.readouterr()
    for flags in (["--dim", "64"], ["--preset", "small"], ["--preset", "small", "--attention", "full"]):
        refused = tmp_path / f"refused-{len(flags)}-{flags[1]}"
        assert main(_train_args(refused, seed_shards, "--init", str(tiny_shared_weights), *flags)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "width 32" in lines[0] and flags[0] in lines[0], lines
        assert not refused.exists()


def _hide_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import matplotlib`` fail as on an install without it, even after another test imported it."""
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_training_without_matplotlib_exports_and_resumes(seed_shards: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys):
    """Plotting is optional: without matplotlib a run still writes its final model, says in one line that it
    drew no curves, and resumes to the end."""
    _hide_matplotlib(monkeypatch)
    with pytest.raises(ImportError):
        import matplotlib  # noqa: F401
    run = tmp_path / "run"
    kw = dict(steps=12, eval_every=6, eval_positions=20, checkpoint_every=6)
    stopped = train(_config(run, seed_shards, stop_after=6, **kw), progress=False)
    provenance = load_weights(run / "model.safetensors").metadata["provenance"]
    assert stopped["step"] == provenance["steps"] == 6 and "partial" not in provenance
    assert not (run / "metrics.png").exists()
    notes = [line for line in capsys.readouterr().err.splitlines() if "matplotlib" in line]
    assert len(notes) == 1 and "metrics.png" in notes[0] and "metrics.csv" in notes[0]
    resumed = train(_config(run, seed_shards, **kw), progress=False)
    provenance = load_weights(run / "model.safetensors").metadata["provenance"]
    assert resumed["step"] == provenance["steps"] == 12 and "partial" not in provenance
    assert {"test_loss", "action_accuracy", "raw_action_accuracy"} <= set(provenance["final_metrics"])
    assert not (run / "metrics.png").exists()


def test_ranking_loss_prefers_the_teachers_order():
    from neuralengine.train.losses import ranking_loss

    values = torch.as_tensor(bucket_values(128), dtype=torch.float32)

    def peaked(p: list[float]) -> torch.Tensor:
        idx = torch.as_tensor(win_prob_to_bucket(np.array(p)))
        return torch.log_softmax(torch.nn.functional.one_hot(idx, 128).float() * 30.0, -1)[None]

    target = torch.tensor([[0.9, 0.5, 0.1]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    right = ranking_loss(peaked([0.9, 0.5, 0.1]), target, mask, 0.05)
    wrong = ranking_loss(peaked([0.1, 0.5, 0.9]), target, mask, 0.05)
    assert right < wrong - 1.0
    # A masked move changes nothing; a position with one move contributes nothing.
    lp = peaked([0.9, 0.5, 0.2])
    padded = ranking_loss(lp, torch.tensor([[0.9, 0.5, 0.3]]), torch.tensor([[True, True, False]]), 0.05)
    assert padded == pytest.approx(float(ranking_loss(lp[:, :2], target[:, :2], mask[:, :2], 0.05)))
    assert float(ranking_loss(lp[:, :1], target[:, :1], mask[:, :1], 0.05)) == 0.0
    assert torch.allclose(lp.exp() @ values, torch.tensor([[0.9, 0.5, 0.2]]), atol=0.01)


@pytest.mark.slow
def test_board_head_training_with_flips_and_ranking_learns(seed_shards: Path, tmp_path: Path):
    result = train(_config(tmp_path / "bh", seed_shards, attention="board_head", flip=0.5, rank_weight=1.0,
                           steps=40), progress=False)
    rows = list(csv.DictReader(open(tmp_path / "bh" / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in rows if r["train_loss"]]
    assert losses[-1] < losses[0] - 0.2
    weights = load_weights(result["weights"])
    assert weights.config.attention == "board_head"
    assert weights.metadata["provenance"]["flip"] == 0.5
    assert (tmp_path / "bh" / "model.onnx").is_file()
