"""Distributed training: ``torchrun`` with DistributedDataParallel on the CPU (gloo).

Two processes must follow one process's loss curve at the same global batch
and seed. Each rank trains on its own rows of every global batch and the
losses are weighted by each rank's share, so the averaged gradient is the
single process's gradient; only the order of floating-point sums differs.
Stated tolerance: 1e-3 relative on every logged loss over 20 steps (measured
largest difference 1.6e-7).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from neuralengine.train.loop import Ranks, train  # noqa: E402
from neuralengine.weights import load_weights  # noqa: E402
from test_train import _config, seed_shards  # noqa: E402,F401  (the shared fixture)

STEPS = 20
TOLERANCE = 1e-3


def _args(out: Path, data: Path, steps: int = STEPS, **extra: object) -> list[str]:
    args = ["--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", str(steps), "--batch-size", "16",
            "--max-moves", "32", "--lr", "3e-3", "--warmup", "5", "--eval-every", "1000", "--log-every", "1",
            "--checkpoint-every", "10", "--threads", "1", "--rank-weight", "1", "--flip", "0.5", "--quiet"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


#: What a rank prints when gloo's threads abort it while the processes tear down. Seen twice in about a dozen
#: runs on a loaded 2-core machine, after the training itself had finished; a run that ends so is started again
#: once, from an empty folder.
TEARDOWN_ABORT = "terminate called without an active exception"


def torchrun(processes: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "neuralengine.train", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if result.returncode != 0 and TEARDOWN_ABORT in result.stderr:
        shutil.rmtree(args[args.index("--out") + 1], ignore_errors=True)
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    return result


def losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv") as fh:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(fh) if r["train_loss"]}


def test_rows_deal_the_global_batch_like_a_distributed_sampler():
    batch = np.arange(10)
    parts = [Ranks(r, 3).rows(batch)[0] for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert Ranks().rows(batch)[0] is batch


@pytest.mark.slow
def test_two_processes_follow_one_process(seed_shards: Path, tmp_path: Path):  # noqa: F811
    single = train(_config(tmp_path / "one", seed_shards, steps=STEPS, eval_every=1000, log_every=1,
                           rank_weight=1.0, flip=0.5), progress=False)
    result = torchrun(2, _args(tmp_path / "two", seed_shards))
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(two) == list(range(1, STEPS + 1)) == sorted(one)  # rank 0 alone wrote one row per step
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=TOLERANCE), step
    # The curve really moved, so following it means something.
    assert one[STEPS] < one[1] - 0.1
    a = load_weights(single["weights"]).tensors
    b = load_weights(tmp_path / "two" / "model.safetensors").tensors
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-3
    meta = load_weights(tmp_path / "two" / "model.safetensors").metadata["provenance"]
    assert meta["processes"] == 2 and meta["steps"] == STEPS
    # Only rank 0 wrote: one set of files, no per-rank copies.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
def test_a_run_resumes_with_another_number_of_processes(seed_shards: Path, tmp_path: Path):  # noqa: F811
    first = torchrun(2, _args(tmp_path / "run", seed_shards, stop_after=10))
    assert first.returncode == 0, first.stderr[-3000:]
    assert load_weights(tmp_path / "run" / "model.safetensors").metadata["provenance"]["steps"] == 10
    resumed = train(_config(tmp_path / "run", seed_shards, steps=STEPS, eval_every=1000, log_every=1,
                            rank_weight=1.0, flip=0.5), progress=False)
    assert resumed["step"] == STEPS and resumed["processes"] == 1
    train(_config(tmp_path / "straight", seed_shards, steps=STEPS, eval_every=1000, log_every=1,
                             rank_weight=1.0, flip=0.5), progress=False)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "run")
    assert sorted(b) == sorted(a)
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=TOLERANCE), step
