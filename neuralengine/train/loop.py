"""The training loop, in one process or several (``torchrun``, DDP).

A run folder holds the checkpoint, ``metrics.csv``, ``config.json`` and the
exported model; :func:`train` resumes from the folder's checkpoint when there
is one, else starts fresh or from ``--init``.

Distributed training: ``torchrun --nproc-per-node N -m neuralengine.train
...`` runs N processes with DistributedDataParallel (gloo on CPUs, NCCL on
GPUs). Every step's global batch is drawn from the step number and the seed,
as in a single process; rank r trains on rows r, r + N, r + 2N, ... of it (its
own slice, as ``DistributedSampler`` deals them), and the losses are weighted
so that the averaged gradient is the single-process gradient of the whole
batch. The learning-rate schedule is unchanged. Rank 0 alone writes
checkpoints, metrics and the exported model; a checkpoint holds the full
state, so a run resumes with any number of processes.

The end of a distributed run: every rank meets at a barrier, waits until the
collectives' worker threads have let go of every tensor this process handed
them, and only then leaves the process group (see :class:`CollectiveTensors`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralengine.atomic import remove_stale_temps, write_text
from neuralengine.config import ACTION_VALUE, BOARD_ONCE, SHARED_BOARD, ModelConfig, preset
from neuralengine.data.shards import open_shards
from neuralengine.model import Transformer
from neuralengine.progress import Progress
from neuralengine.train.checkpoint import CHECKPOINT, export_model, init_from, load_checkpoint, save_checkpoint
from neuralengine.train.data import ActionValueData, split_shard_paths, training_batch
from neuralengine.train.losses import loss_fn, ranking_loss
from neuralengine.train.metrics import FINAL, append_metrics, evaluate, rewrite_metrics
from neuralengine.train.plot import NO_MATPLOTLIB, plot_metrics


@dataclass
class TrainConfig:
    data: list[str]
    out: str
    test_data: list[str] | None = None
    preset: str = "small"
    init: str | None = None
    layers: int | None = None
    dim: int | None = None
    heads: int | None = None
    attention: str = SHARED_BOARD
    steps: int = 10_000
    batch_size: int = 64
    max_moves: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.01
    clip: float = 1.0
    ema: float = 0.999
    loss: str = "hl_gauss"
    sigma_buckets: float = 0.75
    flip: float = 0.0
    rank_weight: float = 0.0
    rank_temperature: float = 0.05
    only_move_oversample: float = 1.0
    attention_bias: bool = False
    device: str = "auto"
    threads: int = 0
    eval_every: int = 500
    log_every: int = 50
    eval_positions: int = 2000
    checkpoint_every: int = 500
    time_limit: float = 0.0
    stop_after: int | None = None
    seed: int = 1
    max_positions: int | None = None


def model_config(tc: TrainConfig) -> ModelConfig:
    """The architecture of ``tc``: its preset, with the sizes it names instead."""
    base = preset(tc.preset, attention=tc.attention)
    return ModelConfig(num_layers=tc.layers or base.num_layers, embed_dim=tc.dim or base.embed_dim,
                       num_heads=tc.heads or base.num_heads, attention=tc.attention, kind=ACTION_VALUE,
                       attention_bias=tc.attention_bias)


def lr_at(step: int, tc: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``. With a time
    limit, the decay follows whichever budget (steps or time) runs out first."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    frac = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    if tc.time_limit:
        frac = max(frac, min(1.0, elapsed / (tc.time_limit * 60)))
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranks:
    """This process's place in a distributed run (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """This rank's slice of a global batch: rows rank, rank + world, ..."""
        return arrays if self.world == 1 else tuple(a[self.rank::self.world] for a in arrays)


def init_distributed(device_name: str) -> tuple[Ranks, torch.device]:
    """Join the process group that torchrun describes (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``...), or stay alone without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if world <= 1:
        return Ranks(), torch.device("cuda" if device_name == "auto" and cuda else
                                     ("cpu" if device_name == "auto" else device_name))
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(rank, world), device


class CollectiveTensors:
    """The tensors this process has handed to collectives, until each is freed.

    Gloo runs a collective on its own worker threads, and the last reference
    to the tensor is often dropped there, after the caller already has the
    result. Freeing a tensor that Python has seen takes the interpreter lock.
    A worker thread that asks for it while the interpreter shuts down is ended
    by the interpreter in the middle of a C++ destructor, and the whole
    process aborts ("terminate called without an active exception"). A rank
    that leaves right after the last collective meets exactly that, so the
    teardown waits in :meth:`drain`, with the lock released, until every
    tracked tensor is gone.
    """

    def __init__(self) -> None:
        self._live = 0
        self._changed = threading.Condition()

    def track(self, tensor: torch.Tensor) -> torch.Tensor:
        with self._changed:
            self._live += 1
        weakref.finalize(tensor, self._freed).atexit = False
        return tensor

    def _freed(self) -> None:
        with self._changed:
            self._live -= 1
            self._changed.notify_all()

    @property
    def live(self) -> int:
        with self._changed:
            return self._live

    def drain(self, timeout: float) -> bool:
        """Wait until every tracked tensor is freed; False if some still live after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._live == 0, timeout)


#: Every tensor that :func:`_all_sum` gives to ``all_reduce``.
COLLECTIVE_TENSORS = CollectiveTensors()
#: How long the teardown waits for the worker threads to free them (they need
#: microseconds once scheduled; the limit only bounds a wait that went wrong).
DRAIN_SECONDS = 60.0


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    import torch.distributed as dist

    tensor = COLLECTIVE_TENSORS.track(torch.tensor(values, dtype=torch.float64, device=device))
    dist.all_reduce(tensor)
    return tensor.tolist()


def finish_distributed(finished: bool) -> None:
    """Leave the process group. After a finished run every rank first meets
    the others at a barrier (they wait while rank 0 evaluates and exports)
    and then waits until no tensor of its collectives is left for the worker
    threads to free; a failed run leaves at once."""
    import torch.distributed as dist

    try:
        if finished:
            dist.barrier()
            if not COLLECTIVE_TENSORS.drain(DRAIN_SECONDS):
                print(f"train: warning: {COLLECTIVE_TENSORS.live} tensors of finished collectives were still "
                      f"held after {DRAIN_SECONDS:.0f} s", file=sys.stderr)
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def train(tc: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the run ``tc.out``; returns the exported weights'
    path, the final step and, on rank 0, the provenance with ``final_metrics``."""
    run = Path(tc.out)
    run.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    ranks, device = init_distributed(tc.device)
    if ranks.world == 1:
        return _train(tc, run, ranks, device, progress)
    finished = False
    try:
        result = _train(tc, run, ranks, device, progress and ranks.main)
        finished = True
        return result
    finally:
        finish_distributed(finished)


def _no_held_out(tc: TrainConfig, test_paths: list[str]) -> str:
    where = (f"the held-out shards ({len(test_paths)}) hold no positions" if test_paths else
             "--data has no test-*.neav shards beside it" if tc.test_data is None else "--test-data names no shards")
    return (f"no held-out positions: {where}, so the run measures no held-out loss, accuracy or Kendall tau "
            "and final_metrics stays empty. Give held-out shards with --test-data, or prepare the data with "
            "a --test-fraction large enough to give the test split some games")


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _ema_model(cfg: ModelConfig, ema: dict[str, torch.Tensor], device: torch.device) -> Transformer:
    model = Transformer(cfg).to(device)
    model.load_state_dict(ema)
    return model


def _train(tc: TrainConfig, run: Path, ranks: Ranks, device: torch.device, progress: bool) -> dict[str, Any]:
    torch.manual_seed(tc.seed)
    train_paths, test_paths = split_shard_paths(tc.data, tc.test_data)
    if not train_paths:
        raise FileNotFoundError(f"no training shards in {', '.join(tc.data)}")
    data = ActionValueData(open_shards(train_paths), tc.max_positions)
    test = ActionValueData(open_shards(test_paths)) if test_paths else None
    if test is not None and not len(test):
        test = None  # measuring zero positions would report zeros as if they were results
    if test is None and ranks.main:
        print(f"train: warning: {_no_held_out(tc, test_paths)}", file=sys.stderr)
    cfg = model_config(tc)
    if tc.only_move_oversample != 1.0 and ranks.main:
        special, n = len(data.only_move), len(data)
        weight = tc.only_move_oversample * special
        print(f"train: {special} of {n} training positions ({100 * special / max(n, 1):.1f} %) are only-move "
              f"positions, drawn {tc.only_move_oversample:g} times as often: "
              f"{100 * weight / max(weight + n - special, 1):.1f} % of the positions trained on", file=sys.stderr)
    model = Transformer(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.98))
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    step, seen_values, elapsed_before = 0, 0, 0.0
    metrics_path = run / "metrics.csv"
    if ranks.main:
        remove_stale_temps(run)  # left by a save that was killed midway
    if (run / CHECKPOINT).exists():
        info = load_checkpoint(run, model, ema, opt)
        step, seen_values, elapsed_before = info["step"], info["action_values"], info.get("elapsed", 0.0)
        if ranks.main:
            print(f"resumed {run} at step {step}", file=sys.stderr)
    elif tc.init:
        message = init_from(tc.init, model, ema, opt)
        if ranks.main:
            print(message, file=sys.stderr)
    if ranks.main:
        write_text(run / "config.json", json.dumps({"train": asdict(tc), "model": cfg.to_dict(),
                                                    "processes": ranks.world}, indent=2))
        rewrite_metrics(metrics_path, step)
    replica: torch.nn.Module = model
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        replica = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sigma = tc.sigma_buckets / cfg.num_buckets
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    stop = {"flag": False}

    def _request_stop(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old_handler = signal.signal(signal.SIGTERM, _request_stop)
    bar = Progress("train", total=tc.steps, unit="steps", enabled=progress, every=5.0)
    bar.count = step
    t0 = time.monotonic()
    window_loss, window_n, window_values, window_t = 0.0, 0, 0, time.monotonic()
    last: dict[str, Any] = {}
    avg_moves = data.num_actions / max(len(data), 1)
    positions_per_step = tc.batch_size if cfg.attention in BOARD_ONCE else max(1, int(tc.batch_size / avg_moves))
    model.train()
    try:
        stop_at = tc.steps if tc.stop_after is None else min(tc.steps, step + tc.stop_after)
        while step < stop_at:
            halt = stop["flag"] or bool(tc.time_limit and elapsed_before + time.monotonic() - t0 > tc.time_limit * 60)
            batch = training_batch(data, cfg.attention, tc.batch_size, tc.max_moves, tc.flip, tc.seed, step,
                                   tc.only_move_oversample)
            # The global batch is drawn whole on every rank; each trains on its own rows.
            boards, acts, probs, mask = ranks.rows(*batch)
            n_values, n_ranked = int(mask.sum()), int((mask.sum(-1) > 1).sum())
            if ranks.world > 1:
                # Every rank stops at the same step; the counts weight each rank's share of the loss.
                total_values, total_ranked, halts = _all_sum([n_values, n_ranked, float(halt)], device)
                halt = halts > 0
            else:
                total_values, total_ranked = n_values, n_ranked
            if halt:
                break
            lr_now = lr_at(step, tc, elapsed_before + time.monotonic() - t0)
            for group in opt.param_groups:
                group["lr"] = lr_now
            b = torch.as_tensor(boards, device=device)
            a = torch.as_tensor(acts, device=device)
            t = torch.as_tensor(probs, device=device)
            m = torch.as_tensor(mask, device=device)
            with autocast:
                lp = replica(b, a)
            value_loss = loss_fn(lp, t, m, tc.loss, sigma)
            loss = value_loss
            if tc.rank_weight:
                loss = loss + tc.rank_weight * ranking_loss(lp, t, m, tc.rank_temperature)
            if ranks.world > 1:
                # DDP averages gradients over ranks: weighting each rank's mean by its share of the
                # global batch (times the world size) makes that average the whole batch's gradient.
                value_loss = value_loss * (n_values / max(total_values, 1))
                loss = value_loss * ranks.world
                if tc.rank_weight:
                    share = n_ranked / max(total_ranked, 1) * ranks.world
                    loss = loss + tc.rank_weight * share * ranking_loss(lp, t, m, tc.rank_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
            opt.step()
            with torch.no_grad():
                decay_now = min(tc.ema, (1 + step) / (10 + step))
                for k, v in model.state_dict().items():
                    ema[k].mul_(decay_now).add_(v.detach().float(), alpha=1 - decay_now)
            step += 1
            batch_loss = float(value_loss.detach())
            if ranks.world > 1:
                batch_loss = _all_sum([batch_loss], device)[0]  # the whole batch's mean loss
            n_values = int(total_values)
            seen_values += n_values
            window_loss += batch_loss * n_values
            window_n += n_values
            window_values += n_values
            bar.update(1, postfix=f"loss {window_loss / max(window_n, 1):.3f}")
            do_eval = test is not None and (step % tc.eval_every == 0 or step == tc.steps)
            if ranks.main and (step % tc.log_every == 0 or do_eval or step == tc.steps):
                now = time.monotonic()
                row = {"step": step, "train_loss": window_loss / max(window_n, 1), "lr": lr_now,
                       "action_values": seen_values, "av_per_s": window_values / max(now - window_t, 1e-9),
                       "elapsed": elapsed_before + now - t0}
                window_loss, window_n, window_values, window_t = 0.0, 0, 0, now
                if do_eval:
                    row.update(evaluate(_ema_model(cfg, ema, device), test, device, tc.eval_positions,
                                        loss=tc.loss, sigma=sigma))
                    export_model(run, cfg, ema, {"trainer": "neuralengine train", "steps": step,
                                                 "partial": True, "metrics": {k: row[k] for k in ("action_accuracy", "kendall_tau")}})
                    print(f"\nstep {step}: held-out loss {row['test_loss']:.4f} action accuracy "
                          f"{row['action_accuracy']:.3f} (only-move {_share(row['only_move_accuracy'])}, quiet "
                          f"{_share(row['quiet_accuracy'])}) tau {row['kendall_tau']:.3f}", file=sys.stderr)
                    window_t = time.monotonic()
                last = row
                append_metrics(metrics_path, row)
            if ranks.main and step % tc.checkpoint_every == 0:
                save_checkpoint(run, model, ema, opt, {"step": step, "action_values": seen_values,
                                                       "elapsed": elapsed_before + time.monotonic() - t0})
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        bar.close()
    if not ranks.main:
        return {"weights": str(run / "model.safetensors"), "step": step, "rank": ranks.rank}
    if test is not None and step:
        # The final measurement: the EMA (what is exported) and the raw
        # weights, so the EMA's lag shows in every run.
        if last.get("step") != step or "test_loss" not in last:
            measured = evaluate(_ema_model(cfg, ema, device), test, device, tc.eval_positions, loss=tc.loss, sigma=sigma)
            # The last logged row of this step keeps its training loss.
            last = {**(last if last.get("step") == step else {"step": step}), **measured}
        raw = evaluate(model, test, device, tc.eval_positions, loss=tc.loss, sigma=sigma)
        last.update(raw_action_accuracy=raw["action_accuracy"], raw_kendall_tau=raw["kendall_tau"])
        rewrite_metrics(metrics_path, step - 1)
        append_metrics(metrics_path, last)
    elapsed = elapsed_before + time.monotonic() - t0
    save_checkpoint(run, model, ema, opt, {"step": step, "action_values": seen_values, "elapsed": elapsed})
    provenance = {
        "trainer": "neuralengine train",
        "steps": step, "action_values_seen": seen_values, "positions_per_step": positions_per_step,
        "train_positions": len(data), "train_action_values": data.num_actions,
        "loss": tc.loss, "ema": tc.ema, "lr": tc.lr, "batch_size": tc.batch_size,
        "data": [Path(d).name for d in tc.data], "data_metadata": data.sources[0] if data.sources else {},
        "train_seconds": round(elapsed, 1), "device": str(device),
        "final_metrics": {k: last.get(k) for k in FINAL if k in last},
        "flip": tc.flip, "rank_weight": tc.rank_weight, "only_move_oversample": tc.only_move_oversample, "init": Path(tc.init).name if tc.init else None,
        "processes": ranks.world,
    }
    path = export_model(run, cfg, ema, provenance)
    if test is None:
        print("train: warning: final_metrics is empty: there were no held-out positions (see above)",
              file=sys.stderr)
    # The curves come last: drawing them is optional, the model is not.
    if not plot_metrics(metrics_path, run / "metrics.png"):
        print(f"train: {NO_MATPLOTLIB}", file=sys.stderr)
    return {"weights": str(path), "step": step, **provenance}
