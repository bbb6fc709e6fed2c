"""Held-out evaluation and the run's ``metrics.csv``.

A model is measured against Stockfish on held-out positions: the loss, the
share of positions where its best move has Stockfish's best score, and the
Kendall tau of its move order. ``metrics.csv`` has one row per logged step;
rows are appended as training goes, and a resumed run first cuts the file
back to its checkpoint's step.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuralengine.atomic import atomic_path
from neuralengine.config import FULL
from neuralengine.data.only_move import is_only_move
from neuralengine.encoding import bucket_values
from neuralengine.model import Transformer
from neuralengine.train.data import ActionValueData
from neuralengine.train.losses import loss_fn

#: The columns of ``metrics.csv``.
FIELDS = ["step", "train_loss", "lr", "action_values", "av_per_s", "elapsed", "test_loss", "action_accuracy",
          "kendall_tau", "raw_action_accuracy", "raw_kendall_tau", "only_move_accuracy", "quiet_accuracy",
          "only_move_positions"]

#: The held-out measurements a finished run reports as its ``final_metrics``.
FINAL = ("test_loss", "action_accuracy", "kendall_tau", "raw_action_accuracy", "raw_kendall_tau",
         "only_move_accuracy", "quiet_accuracy", "only_move_positions")


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
    best score (several moves can share it, e.g. two mates). The accuracy is
    also split into only-move positions (:mod:`neuralengine.data.only_move`)
    and the others ("quiet"); a split with no positions reports NaN.
    """
    model.eval()
    values = torch.as_tensor(bucket_values(model.cfg.num_buckets), dtype=torch.float32, device=device)
    n = min(limit, len(data))
    idx_all = np.arange(n)
    rng = np.random.default_rng(0)
    hits, taus, losses, weights = 0, [], 0.0, 0
    only_hits, only_count = 0, 0
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
            hit = int(s[int(np.argmax(p))] >= s.max() - 1e-6)
            hits += hit
            if is_only_move(s):
                only_hits += hit
                only_count += 1
            tau = kendall_tau(p, s)
            if not math.isnan(tau):
                taus.append(tau)
    model.train()
    return {"test_loss": losses / max(weights, 1), "action_accuracy": hits / max(n, 1),
            "kendall_tau": float(np.mean(taus)) if taus else float("nan"), "test_positions": n,
            "only_move_accuracy": only_hits / only_count if only_count else float("nan"),
            "quiet_accuracy": (hits - only_hits) / (n - only_count) if n > only_count else float("nan"),
            "only_move_positions": only_count}


def rewrite_metrics(path: Path, up_to: int) -> None:
    """Keep the header and the rows of steps up to ``up_to`` (the checkpoint's
    step), so a resumed run never writes a step twice."""
    rows: list[dict[str, str]] = []
    if path.exists():
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= up_to]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(keep)


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Add one row to ``metrics.csv``. Rows are appended rather than the file
    rewritten at every step; a resumed run first drops the rows past its
    checkpoint with :func:`rewrite_metrics`, which writes atomically."""
    with open(path, "a", newline="") as fh:
        csv.writer(fh).writerow([row.get(f, "") for f in FIELDS])
