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
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from neuralengine.train import loop  # noqa: E402
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


def torchrun(processes: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    """One torchrun of the trainer; its exit status is non-zero when any rank failed."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "neuralengine.train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv") as fh:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(fh) if r["train_loss"]}


def test_rows_deal_the_global_batch_like_a_distributed_sampler():
    batch = np.arange(10)
    parts = [Ranks(r, 3).rows(batch)[0] for r in range(3)]
    assert [p.tolist() for p in parts] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert Ranks().rows(batch)[0] is batch


def test_teardown_leaves_the_group_only_when_no_collective_tensor_is_left(monkeypatch: pytest.MonkeyPatch):
    """Gloo's worker threads often drop the last reference to a collective's tensor after the caller has its
    result, and freeing it takes the interpreter lock; a worker that asks for the lock while the interpreter
    shuts down aborts the whole process ("terminate called without an active exception"). Here a worker
    thread keeps every tensor until the teardown's barrier, and the main thread keeps the interpreter lock
    unless it blocks: leaving the group without waiting for the worker finds the tensors still alive."""
    import torch
    import torch.distributed as dist

    handed: list[weakref.ref] = []
    worker_holds: list[object] = []
    barrier_reached = threading.Event()
    alive_at_destroy: list[int] = []

    def all_reduce(tensor: object) -> None:
        handed.append(weakref.ref(tensor))
        worker_holds.append(tensor)

    def worker() -> None:
        barrier_reached.wait()
        worker_holds.clear()  # the last references go on this thread, as on gloo's

    def destroy_process_group() -> None:
        alive_at_destroy.append(sum(ref() is not None for ref in handed))

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dist, "barrier", barrier_reached.set)
    monkeypatch.setattr(dist, "destroy_process_group", destroy_process_group)
    monkeypatch.setattr(loop, "DRAIN_SECONDS", 10.0)
    thread = threading.Thread(target=worker)
    thread.start()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)  # the main thread lets the worker run only when it blocks
    try:
        assert loop._all_sum([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]
        assert loop._all_sum([3.0], torch.device("cpu")) == [3.0]
        loop.finish_distributed(True)
    finally:
        sys.setswitchinterval(interval)
        barrier_reached.set()
        thread.join()
    assert len(handed) == 2
    assert alive_at_destroy == [0]
    assert loop.COLLECTIVE_TENSORS.live == 0


def test_a_failed_run_leaves_the_group_without_the_barrier(monkeypatch: pytest.MonkeyPatch):
    import torch.distributed as dist

    calls: list[str] = []
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    loop.finish_distributed(False)
    assert calls == ["destroy"]


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
