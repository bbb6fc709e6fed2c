"""Training losses over the model's win-probability buckets.

Both average over action values, so the losses of the shared-board and the
full-attention layouts compare directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuralengine.encoding import bucket_edges, bucket_values


def hl_gauss_targets(p: torch.Tensor, num_buckets: int, sigma: float) -> torch.Tensor:
    """Histogram targets: a Gaussian around ``p`` (std ``sigma`` in win-prob
    units) integrated over each bucket and renormalised over [0, 1]."""
    edges = torch.linspace(0.0, 1.0, num_buckets + 1, device=p.device)
    cdf = torch.special.ndtr((edges - p.unsqueeze(-1)) / sigma)
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)


def loss_fn(log_probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str, sigma: float) -> torch.Tensor:
    """Mean cross-entropy over the unmasked moves from the target
    distribution (``hl_gauss``: a Gaussian of std ``sigma``; ``onehot``: the
    target's bucket) to the predicted buckets ``log_probs`` [..., K]."""
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
