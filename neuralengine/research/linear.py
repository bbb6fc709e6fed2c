"""Linear probes: multinomial logistic regression and ridge regression.

Inputs are standardised with the training set's mean and spread. A logistic
probe may hold ``G`` independent groups that read the same inputs (one probe
per square, all reading the move token); they are fitted together with one
full-batch L-BFGS run, which finds each group's own optimum because the
groups share no parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-6, std, 1.0)


@dataclass
class LogisticProbe:
    """``G`` linear classifiers over ``D`` inputs; weights in standardised units."""

    weight: np.ndarray  # [G, D, C]
    bias: np.ndarray    # [G, C]
    mean: np.ndarray    # [D]
    std: np.ndarray     # [D]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """[N, G, C] for inputs ``x`` [N, D]."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        return np.einsum("nd,gdc->ngc", z, self.weight) + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """[N, G] class indices."""
        return self.logits(x).argmax(-1)

    def raw_direction(self, group: int, positive: int, negative: int) -> tuple[np.ndarray, float]:
        """``(g, c)`` such that ``logit[positive] - logit[negative] = g · x + c``
        for a raw (not standardised) input ``x``."""
        w = (self.weight[group, :, positive] - self.weight[group, :, negative]) / self.std
        c = float(self.bias[group, positive] - self.bias[group, negative] - w @ self.mean)
        return w, c


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float = 1e-3,
                 max_iter: int = 100) -> LogisticProbe:
    """Fit on inputs ``x`` [N, D] and labels ``y`` [N] or [N, G] (ints below ``num_classes``).

    The loss is the mean cross-entropy plus ``l2 / 2`` times the squared
    weights (in standardised units).
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"inputs {x.shape} and labels {y.shape} do not match")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    mean, std = _standardise(x)
    z = torch.from_numpy(((x - mean) / std).astype(np.float32))
    target = torch.from_numpy(y)
    n, d = z.shape
    groups = y.shape[1]
    # All groups' weights side by side, [D, G*C]: one matrix product gives every logit.
    weight = torch.zeros(d, groups * num_classes, requires_grad=True)
    bias = torch.zeros(groups, num_classes, requires_grad=True)
    picked = target.unsqueeze(-1)
    # Start the biases at the class frequencies: the fit then begins at the majority predictor.
    with torch.no_grad():
        counts = torch.stack([torch.bincount(target[:, g], minlength=num_classes) for g in range(groups)]).float()
        bias.copy_(torch.log((counts + 0.5) / (n + 0.5 * num_classes)))
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = (z @ weight).reshape(n, groups, num_classes) + bias
        nll = torch.logsumexp(logits, dim=-1).sum() - logits.gather(-1, picked).sum()
        loss = nll / n + 0.5 * l2 * (weight * weight).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = weight.detach().double().reshape(d, groups, num_classes).permute(1, 0, 2).contiguous()
    return LogisticProbe(w.numpy(), bias.detach().double().numpy(),
                         mean.astype(np.float64), std.astype(np.float64))


@dataclass
class RidgeProbe:
    weight: np.ndarray  # [D], standardised units
    bias: float
    mean: np.ndarray
    std: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std) @ self.weight + self.bias


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> RidgeProbe:
    """Least squares with an L2 penalty of ``l2 * N`` on the standardised weights."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean, std = _standardise(x)
    z = (x - mean) / std
    bias = float(y.mean())
    gram = z.T @ z + l2 * len(z) * np.eye(z.shape[1])
    weight = np.linalg.solve(gram, z.T @ (y - bias))
    return RidgeProbe(weight, bias, mean, std)


def accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(truth)))


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the classes present in ``truth`` of the recall of each."""
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    recalls = [np.mean(pred[truth == c] == c) for c in np.unique(truth)]
    return float(np.mean(recalls)) if recalls else float("nan")


def r2_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Coefficient of determination on ``truth`` (1 is perfect, 0 is the test mean)."""
    truth = np.asarray(truth, dtype=np.float64)
    resid = np.sum((truth - np.asarray(pred, dtype=np.float64)) ** 2)
    total = np.sum((truth - truth.mean()) ** 2)
    return float(1.0 - resid / total) if total > 0 else float("nan")


def majority_labels(y_train: np.ndarray, num_classes: int) -> np.ndarray:
    """Most frequent class of each group of ``y_train`` [N, G] → [G] (ties: the lower class)."""
    y = np.asarray(y_train, dtype=np.int64)
    if y.ndim == 1:
        y = y[:, None]
    return np.array([np.bincount(y[:, g], minlength=num_classes).argmax() for g in range(y.shape[1])])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (NaN if one side is constant)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks
