"""Train an action-value model on shards (``neuralengine train``).

One training sample is one position with all its scored moves. The
shared-board model reads the board once and scores every move in the same
pass; the full-attention model reads one 79-token sequence per move. Both
average the loss over action values, so their losses compare directly.

Checkpoints hold the model, its EMA and the optimiser state as safetensors
(no pickle) plus a JSON file, so a run resumes exactly where it stopped.

Distributed training: ``torchrun --nproc-per-node N -m neuralengine.train
...`` runs N processes with DistributedDataParallel (gloo on CPUs, NCCL on
GPUs). Every step's global batch is drawn from the step number and the seed,
as in a single process; rank r trains on rows r, r + N, r + 2N, ... of it (its
own slice, as ``DistributedSampler`` deals them), and the losses are weighted
so that the averaged gradient is the single-process gradient of the whole
batch. The learning-rate schedule is unchanged. Rank 0 alone writes
checkpoints, metrics and the exported model; a checkpoint holds the full
state, so a run resumes with any number of processes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neuralengine.atomic import atomic_path
from neuralengine.config import ACTION_VALUE, ATTENTIONS, BOARD_ONCE, FULL, SHARED_BOARD, ModelConfig, preset, PRESETS
from neuralengine.data.augment import mirror_actions, mirror_boards
from neuralengine.data.shards import SUFFIX, Shard, StackedRows, open_shards
from neuralengine.encoding import bucket_edges, bucket_values
from neuralengine.model import Transformer
from neuralengine.progress import Progress
from neuralengine.weights import save_weights


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


class ActionValueData:
    """The positions of some shards as flat arrays: boards [P, 77], and per
    action value its action and win probability, position i owning
    ``offsets[i]:offsets[i+1]``.

    Boards, actions and win probabilities stay in the memory-mapped shards
    (:class:`~neuralengine.data.shards.StackedRows`): a batch reads just its
    rows, and the processes of a distributed run share one page cache. Only
    the per-position move counts and offsets are held in memory.
    """

    def __init__(self, shards: list[Shard], max_positions: int | None = None) -> None:
        self.counts = np.concatenate([np.diff(np.asarray(s.offsets)) for s in shards])
        if max_positions is not None and max_positions < len(self.counts):
            self.counts = self.counts[:max_positions]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])
        self.boards = StackedRows([s.boards for s in shards], length=len(self.counts))
        self.actions = StackedRows([s.actions for s in shards], dtype=np.int64)
        self.win_probs = StackedRows([s.win_probs for s in shards], dtype=np.float32)
        self.sources = [dict(s.metadata) for s in shards]

    def __len__(self) -> int:
        return len(self.boards)

    @property
    def num_actions(self) -> int:
        return int(self.offsets[-1])

    def position_batch(self, idx: np.ndarray, max_moves: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Boards [B,77], actions [B,N], targets [B,N], mask [B,N] for whole positions.

        Positions with more than ``max_moves`` moves contribute a random subset.
        """
        counts = self.counts[idx]
        widest = int(counts.max())
        n = int(min(widest, max_moves))
        column = np.arange(widest)
        valid = column[None, :] < counts[:, None]
        # Rows with more than n moves keep a random n of them; the others
        # keep all their moves in order. Sorting keys picks both at once.
        keys = np.where(valid, column[None, :] / widest, 2.0)
        crowded = counts > n
        if crowded.any():
            keys[crowded] = np.where(valid[crowded], rng.random((int(crowded.sum()), widest)), 2.0)
        order = np.argsort(keys, axis=1, kind="stable")[:, :n]
        mask = order < counts[:, None]
        flat = np.where(mask, self.offsets[idx][:, None] + order, 0)
        acts = np.where(mask, self.actions[flat], 0)
        probs = np.where(mask, self.win_probs[flat], 0.0).astype(np.float32)
        return self.boards[idx], acts, probs, mask

    def action_batch(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``count`` action values drawn uniformly, as one move per row."""
        flat = rng.integers(0, self.num_actions, count)
        pos = np.searchsorted(self.offsets, flat, side="right") - 1
        return (self.boards[pos], self.actions[flat][:, None], self.win_probs[flat][:, None],
                np.ones((count, 1), bool))


# --------------------------------------------------------------------------
# Losses and metrics
# --------------------------------------------------------------------------


def hl_gauss_targets(p: torch.Tensor, num_buckets: int, sigma: float) -> torch.Tensor:
    """Histogram targets: a Gaussian around ``p`` (std ``sigma`` in win-prob
    units) integrated over each bucket and renormalised over [0, 1]."""
    edges = torch.linspace(0.0, 1.0, num_buckets + 1, device=p.device)
    cdf = torch.special.ndtr((edges - p.unsqueeze(-1)) / sigma)
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)


def loss_fn(log_probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    k = log_probs.shape[-1]
    if kind == "hl_gauss":
        dist = hl_gauss_targets(target, k, sigma)
    else:
        edges = torch.as_tensor(bucket_edges(k), dtype=target.dtype, device=target.device)
        dist = F.one_hot(torch.searchsorted(edges, target.contiguous(), side="left"), k).to(log_probs.dtype)
    nll = -(dist * log_probs.float()).sum(-1)
    return (nll * mask).sum() / mask.sum().clamp_min(1)


def ranking_loss(log_probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy from a softmax of Stockfish's win probabilities over each
    position's legal moves to the softmax of the model's expected win
    probabilities, both at ``temperature``: gradient on the differences
    between moves, which the per-move loss hardly sees."""
    values = torch.as_tensor(bucket_values(log_probs.shape[-1]), dtype=torch.float32, device=log_probs.device)
    pred = log_probs.float().exp() @ values                      # [B, N]
    neg = torch.finfo(torch.float32).min
    logits = torch.where(mask, pred / temperature, torch.full_like(pred, neg))
    goal = torch.where(mask, target.float() / temperature, torch.full_like(pred, neg)).softmax(-1)
    per_position = -(goal * torch.where(mask, logits.log_softmax(-1), torch.zeros_like(pred))).sum(-1)
    rows = mask.sum(-1) > 1
    return (per_position * rows).sum() / rows.sum().clamp_min(1)


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors (ties handled)."""
    if len(a) < 2:
        return float("nan")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    da, db = da[iu], db[iu]
    num = float((da * db).sum())
    den = math.sqrt(float((da != 0).sum()) * float((db != 0).sum()))
    return num / den if den else float("nan")


@torch.no_grad()
def evaluate(model: Transformer, data: ActionValueData, device: torch.device, limit: int = 2000,
             batch: int = 64, loss: str = "hl_gauss", sigma: float = 0.75 / 128) -> dict[str, float]:
    """Held-out loss, action accuracy and Kendall tau against Stockfish.

    A position counts as solved when the predicted best move has Stockfish's
    best score (several moves can share it, e.g. two mates).
    """
    model.eval()
    values = torch.as_tensor(bucket_values(model.cfg.num_buckets), dtype=torch.float32, device=device)
    n = min(limit, len(data))
    idx_all = np.arange(n)
    rng = np.random.default_rng(0)
    hits, taus, losses, weights = 0, [], 0.0, 0
    for start in range(0, n, batch):
        idx = idx_all[start : start + batch]
        boards, acts, probs, mask = data.position_batch(idx, 1000, rng)
        if model.cfg.attention == FULL:
            # Keep the full-attention evaluation memory bounded: one position at a time.
            out = [model(torch.as_tensor(boards[i : i + 1], device=device), torch.as_tensor(acts[i : i + 1], device=device))
                   for i in range(len(idx))]
            lp = torch.cat(out)
        else:
            lp = model(torch.as_tensor(boards, device=device), torch.as_tensor(acts, device=device))
        t_probs = torch.as_tensor(probs, device=device)
        t_mask = torch.as_tensor(mask, device=device)
        losses += float(loss_fn(lp, t_probs, t_mask, loss, sigma)) * int(mask.sum())
        weights += int(mask.sum())
        pred = (lp.float().exp() @ values).cpu().numpy()
        for row in range(len(idx)):
            m = mask[row]
            p, s = pred[row][m], probs[row][m]
            hits += int(s[int(np.argmax(p))] >= s.max() - 1e-6)
            tau = kendall_tau(p, s)
            if not math.isnan(tau):
                taus.append(tau)
    model.train()
    return {"test_loss": losses / max(weights, 1), "action_accuracy": hits / max(n, 1),
            "kendall_tau": float(np.mean(taus)) if taus else float("nan"), "test_positions": n}


# --------------------------------------------------------------------------
# Training loop
# --------------------------------------------------------------------------


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
    base = preset(tc.preset, attention=tc.attention)
    return ModelConfig(num_layers=tc.layers or base.num_layers, embed_dim=tc.dim or base.embed_dim,
                       num_heads=tc.heads or base.num_heads, attention=tc.attention, kind=ACTION_VALUE)


def lr_at(step: int, tc: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``. With a time
    limit, the decay follows whichever budget (steps or time) runs out first."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    frac = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    if tc.time_limit:
        frac = max(frac, min(1.0, elapsed / (tc.time_limit * 60)))
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _state_tensors(model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {f"model/{k}": v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    out.update({f"ema/{k}": v.detach().float().cpu().contiguous() for k, v in ema.items()})
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, val in opt.state.get(p, {}).items():
                if torch.is_tensor(val):
                    out[f"opt/{names[id(p)]}/{key}"] = val.detach().float().cpu().contiguous().reshape(val.shape)
    return out


#: The checkpoint file of a run folder: model, EMA and optimiser tensors, with
#: the progress record (step, action values, elapsed) in its metadata, so that
#: one ``os.replace`` makes the whole checkpoint visible at once.
CHECKPOINT = "checkpoint.safetensors"


def save_checkpoint(run: Path, model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    info: dict[str, Any]) -> None:
    """One atomic checkpoint: a kill at any moment leaves either the previous
    checkpoint or this one, never a mixture. ``checkpoint.json`` is a readable
    copy of the progress record; resuming does not depend on it."""
    from safetensors.torch import save_file

    tensors = _state_tensors(model, ema, opt)
    with atomic_path(run / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"info": json.dumps(info)})
    with atomic_path(run / "checkpoint.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))


def checkpoint_info(path: Path) -> dict[str, Any]:
    """The progress record stored in a checkpoint file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if "info" in meta:
        return json.loads(meta["info"])
    # Checkpoints written before the record moved into the file.
    return json.loads((path.parent / "checkpoint.json").read_text())


def load_checkpoint(run: Path, model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer,
                    tensors: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Restore model, EMA and optimiser state from a run folder or checkpoint
    file (``tensors``: its contents, when already read); returns its record."""
    from safetensors.torch import load_file

    path = run / CHECKPOINT if run.is_dir() else run
    if tensors is None:
        tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    for k in ema:
        ema[k].copy_(tensors[f"ema/{k}"])
    params = dict(model.named_parameters())
    for name, p in params.items():
        state = {key.rsplit("/", 1)[1]: v.to(p.device) for key, v in tensors.items()
                 if key.startswith(f"opt/{name}/") and key.count("/") == name.count("/") + 2}
        if state:
            opt.state[p] = state
    return checkpoint_info(path)


def _init_source(path: str) -> tuple[Path, bool]:
    """Resolve ``--init``: a run folder (its checkpoint, else its exported
    model), a checkpoint file, or a weights file. Returns (file, is_checkpoint)."""
    p = Path(path)
    if p.is_dir():
        if (p / CHECKPOINT).exists():
            return p / CHECKPOINT, True
        p = p / "model.safetensors"
    if not p.exists():
        raise FileNotFoundError(f"--init: {path} is not a weights file, checkpoint or run folder")
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as fh:
        is_checkpoint = any(k.startswith("model/") for k in fh.keys())
    return p, is_checkpoint


def init_config(path: str) -> ModelConfig:
    """The architecture of an ``--init`` source."""
    from neuralengine.weights import config_from_metadata, read_metadata

    source, is_checkpoint = _init_source(path)
    if is_checkpoint:
        return ModelConfig.from_dict(json.loads((source.parent / "config.json").read_text())["model"])
    return config_from_metadata(read_metadata(source))


def init_from(path: str, model: Transformer, ema: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> str:
    """Start from existing weights: every tensor whose name and shape match is
    copied (the position table is cut to this model's rows, so a shared-board
    encoder can seed a board-head model); the rest keep their fresh values. A
    checkpoint of the same architecture also brings its EMA and optimiser
    state. Returns a one-line summary."""
    from safetensors.torch import load_file

    source, is_checkpoint = _init_source(path)
    if is_checkpoint:
        tensors = load_file(str(source))
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
    else:
        from neuralengine.weights import load_weights

        weights = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in load_weights(source).tensors.items()}
    own = model.state_dict()
    copied, fresh = {}, []
    for name, value in own.items():
        src = weights.get(name)
        if src is not None and name == "pos_embed" and src.shape[1:] == value.shape[1:] and src.shape[0] >= value.shape[0]:
            src = src[: value.shape[0]]
        if src is not None and tuple(src.shape) == tuple(value.shape):
            copied[name] = src.to(value.dtype)
        else:
            fresh.append(name)
    model.load_state_dict({**own, **copied})
    complete = not fresh and len(copied) == len(weights)
    if is_checkpoint and complete:
        load_checkpoint(source, model, ema, opt, tensors)
        return f"initialised from checkpoint {source} (model, EMA and optimiser state)"
    for k in ema:
        ema[k].copy_(model.state_dict()[k].float())
    note = f"; fresh: {', '.join(sorted({n.split('.')[0] for n in fresh}))}" if fresh else ""
    return f"initialised from {source}: {len(copied)} of {len(own)} tensors{note}"


def _rewrite_metrics(path: Path, fields: list[str], up_to: int) -> None:
    """Keep the header and the rows of steps up to ``up_to`` (the checkpoint's
    step), so a resumed run never writes a step twice."""
    rows = list(csv.DictReader(open(path, newline=""))) if path.exists() else []
    keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= up_to]

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)


def split_shard_paths(data: list[str], test_data: list[str] | None) -> tuple[list[str], list[str]]:
    """Training and held-out shard files. A folder's ``test-*`` shards are
    never trained on; they are the default held-out set."""
    train_files: list[str] = []
    default_test: list[str] = []
    for d in map(Path, data):
        if d.is_dir():
            for f in sorted(d.glob(f"*{SUFFIX}")):
                (default_test if f.name.startswith("test-") else train_files).append(str(f))
        else:
            train_files.append(str(d))
    return train_files, (default_test if test_data is None else list(test_data))


def export_model(run: Path, cfg: ModelConfig, ema: dict[str, torch.Tensor], provenance: dict[str, Any],
                 name: str = "model") -> Path:
    tensors = {k: v.detach().float().cpu().numpy() for k, v in ema.items()}
    path = save_weights(run / f"{name}.safetensors", cfg, tensors, provenance)
    from neuralengine.export import export_weights_file

    export_weights_file(path)
    return path


def plot_metrics(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    trained = [(int(r["step"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
    ax1.plot([t[0] for t in trained], [t[1] for t in trained], label="train loss")
    evals = [(int(r["step"]), float(r["test_loss"]), float(r["action_accuracy"]), float(r["kendall_tau"]))
             for r in rows if r.get("test_loss")]
    if evals:
        ax1.plot([e[0] for e in evals], [e[1] for e in evals], "o-", label="held-out loss")
        ax2.plot([e[0] for e in evals], [e[2] for e in evals], "o-", label="action accuracy")
        ax2.plot([e[0] for e in evals], [e[3] for e in evals], "s-", label="Kendall τ")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("step")
    if evals:
        ax2.legend()
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


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


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def train(tc: TrainConfig, progress: bool = True) -> dict[str, Any]:
    run = Path(tc.out)
    run.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    ranks, device = init_distributed(tc.device)
    if ranks.world == 1:
        return _train(tc, run, ranks, device, progress)
    import torch.distributed as dist

    try:
        result = _train(tc, run, ranks, device, progress and ranks.main)
        dist.barrier()  # the other ranks wait while rank 0 evaluates and exports
        return result
    finally:
        dist.destroy_process_group()


def _train(tc: TrainConfig, run: Path, ranks: Ranks, device: torch.device, progress: bool) -> dict[str, Any]:
    torch.manual_seed(tc.seed)
    train_paths, test_paths = split_shard_paths(tc.data, tc.test_data)
    if not train_paths:
        raise FileNotFoundError(f"no training shards in {', '.join(tc.data)}")
    data = ActionValueData(open_shards(train_paths), tc.max_positions)
    test = ActionValueData(open_shards(test_paths)) if test_paths else None
    cfg = model_config(tc)
    model = Transformer(cfg).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.98))
    ema = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    step, seen_values, elapsed_before = 0, 0, 0.0
    metrics_path = run / "metrics.csv"
    if ranks.main:
        for stale in run.glob(".*.tmp"):
            stale.unlink(missing_ok=True)  # left by a save that was killed midway
    if (run / CHECKPOINT).exists():
        info = load_checkpoint(run, model, ema, opt)
        step, seen_values, elapsed_before = info["step"], info["action_values"], info.get("elapsed", 0.0)
        if ranks.main:
            print(f"resumed {run} at step {step}", file=sys.stderr)
    elif tc.init:
        message = init_from(tc.init, model, ema, opt)
        if ranks.main:
            print(message, file=sys.stderr)
    fields = ["step", "train_loss", "lr", "action_values", "av_per_s", "elapsed", "test_loss", "action_accuracy",
              "kendall_tau", "raw_action_accuracy", "raw_kendall_tau"]
    if ranks.main:
        (run / "config.json").write_text(json.dumps({"train": asdict(tc), "model": cfg.to_dict(),
                                                     "processes": ranks.world}, indent=2))
        _rewrite_metrics(metrics_path, fields, step)
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
            # One generator per step: a resumed run draws exactly the batches
            # an uninterrupted run would have drawn.
            rng = np.random.default_rng([tc.seed, step])
            if cfg.attention in BOARD_ONCE:
                idx = rng.integers(0, len(data), tc.batch_size)
                boards, acts, probs, mask = data.position_batch(idx, tc.max_moves, rng)
                if tc.flip:
                    rows = rng.random(len(idx)) < tc.flip
                    boards = boards.copy()
                    boards[rows] = mirror_boards(boards[rows])
                    acts[rows] = mirror_actions(acts[rows])
            else:
                # Same number of action values per step as the shared-board model sees.
                boards, acts, probs, mask = data.action_batch(tc.batch_size, rng)
            # The global batch is drawn whole on every rank; each trains on its own rows.
            boards, acts, probs, mask = ranks.rows(boards, acts, probs, mask)
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
                    ema_model = Transformer(cfg).to(device)
                    ema_model.load_state_dict(ema)
                    row.update(evaluate(ema_model, test, device, tc.eval_positions, loss=tc.loss, sigma=sigma))
                    export_model(run, cfg, ema, {"trainer": "neuralengine train", "steps": step,
                                                 "partial": True, "metrics": {k: row[k] for k in ("action_accuracy", "kendall_tau")}})
                    print(f"\nstep {step}: held-out loss {row['test_loss']:.4f} action accuracy "
                          f"{row['action_accuracy']:.3f} tau {row['kendall_tau']:.3f}", file=sys.stderr)
                    window_t = time.monotonic()
                last = row
                with open(metrics_path, "a", newline="") as fh:
                    csv.writer(fh).writerow([row.get(f, "") for f in fields])
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
            ema_model = Transformer(cfg).to(device)
            ema_model.load_state_dict(ema)
            measured = evaluate(ema_model, test, device, tc.eval_positions, loss=tc.loss, sigma=sigma)
            # The last logged row of this step keeps its training loss.
            last = {**(last if last.get("step") == step else {"step": step}), **measured}
        raw = evaluate(model, test, device, tc.eval_positions, loss=tc.loss, sigma=sigma)
        last.update(raw_action_accuracy=raw["action_accuracy"], raw_kendall_tau=raw["kendall_tau"])
        _rewrite_metrics(metrics_path, fields, step - 1)
        with open(metrics_path, "a", newline="") as fh:
            csv.writer(fh).writerow([last.get(f, "") for f in fields])
    elapsed = elapsed_before + time.monotonic() - t0
    save_checkpoint(run, model, ema, opt, {"step": step, "action_values": seen_values, "elapsed": elapsed})
    plot_metrics(metrics_path, run / "metrics.png")
    provenance = {
        "trainer": "neuralengine train",
        "steps": step, "action_values_seen": seen_values, "positions_per_step": positions_per_step,
        "train_positions": len(data), "train_action_values": data.num_actions,
        "loss": tc.loss, "ema": tc.ema, "lr": tc.lr, "batch_size": tc.batch_size,
        "data": [Path(d).name for d in tc.data], "data_metadata": data.sources[0] if data.sources else {},
        "train_seconds": round(elapsed, 1), "device": str(device),
        "final_metrics": {k: last.get(k) for k in ("test_loss", "action_accuracy", "kendall_tau", "raw_action_accuracy",
                                                   "raw_kendall_tau") if k in last},
        "flip": tc.flip, "rank_weight": tc.rank_weight, "init": Path(tc.init).name if tc.init else None,
        "processes": ranks.world,
    }
    path = export_model(run, cfg, ema, provenance)
    return {"weights": str(path), "step": step, **provenance}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuralengine train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="shard files or folders (train-*.neav)")
    p.add_argument("--test-data", nargs="+", help="held-out shards (default: test-*.neav beside the data)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.csv, metrics.png, model.safetensors")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="model size (default: small, or the --init model's architecture)")
    p.add_argument("--init", metavar="FILE",
                   help="start from these weights: a weights file (the shipped model), a run folder or its "
                        "checkpoint (with EMA and optimiser state when the architecture is the same)")
    p.add_argument("--layers", type=int)
    p.add_argument("--dim", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--attention", choices=ATTENTIONS,
                   help="layout (default: shared_board, or the --init model's)")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=64,
                   help="positions per step (shared_board) or action values per step (full)")
    p.add_argument("--max-moves", type=int, default=64, help="cap on moves per position in a batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--loss", default="hl_gauss", choices=["hl_gauss", "onehot"])
    p.add_argument("--sigma-buckets", type=float, default=0.75, help="HL-Gauss std in bucket widths")
    p.add_argument("--flip", type=float, default=0.0,
                   help="probability of colour-flipping each training position (0.5 doubles the data)")
    p.add_argument("--rank-weight", type=float, default=0.0,
                   help="weight of the ranking loss over each position's moves (0: off)")
    p.add_argument("--rank-temperature", type=float, default=0.05,
                   help="softmax temperature of the ranking loss, in win-probability units")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch default)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50, help="steps between metrics.csv rows")
    p.add_argument("--eval-positions", type=int, default=2000)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many minutes (0: none)")
    p.add_argument("--stop-after", type=int, help="stop after this many steps in this invocation (resume later)")
    p.add_argument("--max-positions", type=int)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fields = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.init and args.preset is None and args.attention is None:
        # Same architecture as the starting weights, unless sizes are given.
        try:
            src = init_config(args.init)
        except (OSError, ValueError) as exc:
            print(f"neuralengine train: {exc}", file=sys.stderr)
            return 2
        values.update(attention=src.attention)
        for key, val in (("layers", src.num_layers), ("dim", src.embed_dim), ("heads", src.num_heads)):
            values.setdefault(key, val)
    tc = TrainConfig(**values)
    result = train(tc, progress=not args.quiet)
    if "final_metrics" in result:  # rank 0 (or a single process) reports
        print(json.dumps({k: result[k] for k in ("weights", "step", "final_metrics")}, indent=2))
    return 0


def training_throughput(cfg: ModelConfig, data: ActionValueData, batch_size: int = 64, steps: int = 5,
                        warmup: int = 2, max_moves: int = 64, seed: int = 0) -> dict[str, float]:
    """Action values per second of real training steps (forward, backward,
    AdamW) on ``data``, as the trainer batches them for ``cfg.attention``.

    The shared-board model takes ``batch_size`` positions per step; the
    full model takes as many single action values as those positions hold,
    so both steps learn from the same number of action values.
    """
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sigma = 0.75 / cfg.num_buckets
    seen, elapsed = 0, 0.0
    for i in range(warmup + steps):
        rng = np.random.default_rng([seed, i])
        idx = rng.integers(0, len(data), batch_size)
        boards, acts, probs, mask = data.position_batch(idx, max_moves, rng)
        if cfg.attention == FULL:
            rows, cols = np.nonzero(mask)
            boards, acts, probs = boards[rows], acts[rows, cols][:, None], probs[rows, cols][:, None]
            mask = np.ones_like(acts, dtype=bool)
        start = time.perf_counter()
        lp = model(torch.as_tensor(boards), torch.as_tensor(acts))
        loss = loss_fn(lp, torch.as_tensor(probs), torch.as_tensor(mask), "hl_gauss", sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            elapsed += time.perf_counter() - start
            seen += int(mask.sum())
    return {"action_values_per_s": seen / elapsed, "seconds": elapsed, "action_values": seen}


if __name__ == "__main__":  # torchrun --nproc-per-node N -m neuralengine.train ...
    sys.exit(main())
