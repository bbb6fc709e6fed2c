"""Match statistics: Elo with confidence intervals, LOS, draw ratio and SPRT.

Two models of a match are provided:

* **trinomial**: every game is an independent win, draw or loss;
* **pentanomial**: games are played in pairs (one opening, both colours) and
  the pair score (0, ½, 1, 1½ or 2 points) is the unit of observation. This is
  what cutechess-cli and fastchess pair with ``-games 2 -repeat`` and it
  removes the opening's bias from the variance.

Elo here is the logistic Elo difference, ``-400·log10(1/score - 1)``.
Intervals are normal approximations on the mean score, mapped to Elo.
A bound that falls outside (0, 1) is not a number: too few games.

The SPRT uses the generalised log-likelihood ratio: maximum-likelihood
distributions constrained to ``elo0`` and ``elo1`` (logistic or normalised
Elo), the method of the Fishtest tools and fastchess.

Everything here is pure Python (``math`` and ``statistics``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Iterable, Sequence

#: Elo scale of normalised Elo: one standard deviation of the score per 800/ln 10.
NELO_SCALE = 800.0 / math.log(10.0)

#: Pair scores of the pentanomial classes, as fractions of the 2 points a pair gives.
PAIR_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Game scores of the trinomial classes (loss, draw, win).
GAME_VALUES = (0.0, 0.5, 1.0)


def score_to_elo(score: float) -> float:
    """Logistic Elo difference of a mean score in [0, 1] (±inf at 0 and 1)."""
    if math.isnan(score):
        return math.nan
    if score <= 0.0:
        return -math.inf
    if score >= 1.0:
        return math.inf
    return -400.0 * math.log10(1.0 / score - 1.0)


def elo_to_score(elo: float) -> float:
    """Expected score of an Elo difference."""
    return 1.0 / (1.0 + 10.0 ** (-elo / 400.0))


def z_value(confidence: float = 0.95) -> float:
    """Two-sided normal quantile: 1.959964 for 95 %."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def los(wins: int, losses: int) -> float:
    """Likelihood of superiority from wins and losses (draws carry no information).

    ``0.5·(1 + erf((W - L) / sqrt(2·(W + L))))``; 0.5 without decisive games.
    """
    if wins + losses == 0:
        return 0.5
    return 0.5 * (1.0 + math.erf((wins - losses) / math.sqrt(2.0 * (wins + losses))))


def _elo_bounds(mean: float, stderr: float, z: float) -> tuple[float, float]:
    lo, hi = mean - z * stderr, mean + z * stderr
    lower = score_to_elo(lo) if 0.0 < lo < 1.0 else math.nan
    upper = score_to_elo(hi) if 0.0 < hi < 1.0 else math.nan
    return lower, upper


@dataclass
class EloEstimate:
    """An Elo difference with its interval, from one player's point of view."""

    model: str
    games: int
    score: float
    elo: float
    lower: float
    upper: float
    los: float
    draw_ratio: float
    nelo: float = math.nan
    nelo_error: float = math.nan
    confidence: float = 0.95
    counts: list[int] = field(default_factory=list)

    @property
    def error(self) -> float:
        """Half the width of the interval, the ``±`` figure (nan when unbounded)."""
        return (self.upper - self.lower) / 2.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error"] = self.error
        return data

    def __str__(self) -> str:
        return f"{format_elo(self.elo)} ± {format_error(self.error)} (LOS {100 * self.los:.1f} %)"


def jsonable(value: Any) -> Any:
    """``value`` with floats made JSON-safe: nan becomes null, ±inf the strings ``"inf"``/``"-inf"``."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def as_float(value: Any) -> float:
    """Read back a number written by :func:`jsonable` (null is nan)."""
    if value is None:
        return math.nan
    return float(value)


def format_elo(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value + 0.0:+.1f}" if round(value, 1) != 0 else "0.0"


def format_error(value: float) -> str:
    return "nan" if not math.isfinite(value) else f"{value:.1f}"


def trinomial(wins: int, draws: int, losses: int, confidence: float = 0.95) -> EloEstimate:
    """Elo, interval, LOS and draw ratio from game results (W/D/L of one player)."""
    _check_counts((wins, draws, losses))
    n = wins + draws + losses
    if n == 0:
        return EloEstimate("trinomial", 0, math.nan, math.nan, math.nan, math.nan, 0.5, math.nan,
                           confidence=confidence, counts=[losses, draws, wins])
    mean = (wins + 0.5 * draws) / n
    var = (wins * (1.0 - mean) ** 2 + draws * (0.5 - mean) ** 2 + losses * mean ** 2) / n
    stderr = math.sqrt(var / n)
    lower, upper = _elo_bounds(mean, stderr, z_value(confidence))
    nelo, nelo_err = _normalised(mean, var, n, confidence, pairs=False)
    return EloEstimate("trinomial", n, mean, score_to_elo(mean), lower, upper, los(wins, losses), draws / n,
                       nelo, nelo_err, confidence, [losses, draws, wins])


def pentanomial(counts: Sequence[int], confidence: float = 0.95) -> EloEstimate:
    """Elo from game pairs. ``counts`` are the numbers of pairs scoring 0, ½, 1, 1½ and 2 points.

    The LOS is the normal probability that the mean pair score exceeds ½;
    ``draw_ratio`` is the share of pairs that scored exactly 1 point (two
    draws, or a win and a loss), as fastchess reports it.
    """
    counts = list(counts)
    if len(counts) != 5:
        raise ValueError(f"a pentanomial needs 5 counts, got {len(counts)}")
    _check_counts(counts)
    n = sum(counts)
    if n == 0:
        return EloEstimate("pentanomial", 0, math.nan, math.nan, math.nan, math.nan, 0.5, math.nan,
                           confidence=confidence, counts=counts)
    mean = sum(c * v for c, v in zip(counts, PAIR_VALUES)) / n
    var = sum(c * (v - mean) ** 2 for c, v in zip(counts, PAIR_VALUES)) / n
    stderr = math.sqrt(var / n)
    lower, upper = _elo_bounds(mean, stderr, z_value(confidence))
    if stderr > 0:
        los_value = NormalDist().cdf((mean - 0.5) / stderr)
    else:
        los_value = 1.0 if mean > 0.5 else 0.0 if mean < 0.5 else 0.5
    nelo, nelo_err = _normalised(mean, var, n, confidence, pairs=True)
    return EloEstimate("pentanomial", 2 * n, mean, score_to_elo(mean), lower, upper, los_value, counts[2] / n,
                       nelo, nelo_err, confidence, counts)


def _normalised(mean: float, var: float, n: int, confidence: float, pairs: bool) -> tuple[float, float]:
    """Normalised Elo and its ± (fastchess's nElo)."""
    sd = math.sqrt(2.0 * var) if pairs else math.sqrt(var)
    if sd <= 0:
        return math.nan, math.nan
    return (mean - 0.5) / sd * NELO_SCALE, z_value(confidence) / math.sqrt(n) * NELO_SCALE / (
        math.sqrt(2.0) if pairs else 1.0)


def _check_counts(counts: Iterable[int]) -> None:
    for c in counts:
        if not isinstance(c, int) or isinstance(c, bool) or c < 0:
            raise ValueError(f"result counts must be non-negative integers, got {c!r}")


def pair_class(first: float, second: float) -> int:
    """Pentanomial class (0..4) of a pair from one player's two game scores (0, 0.5 or 1)."""
    total = first + second
    index = round(total * 2)
    if abs(total * 2 - index) > 1e-9 or not 0 <= index <= 4:
        raise ValueError(f"invalid pair of game scores: {first!r}, {second!r}")
    return int(index)


# --------------------------------------------------------------------------
# SPRT
# --------------------------------------------------------------------------


def sprt_bounds(alpha: float = 0.05, beta: float = 0.05) -> tuple[float, float]:
    """Wald's bounds on the log-likelihood ratio: ``(log(β/(1-α)), log((1-β)/α))``."""
    if not (0 < alpha < 1 and 0 < beta < 1 and alpha + beta < 1):
        raise ValueError(f"alpha and beta must lie in (0, 1) with alpha + beta < 1, got {alpha}, {beta}")
    return math.log(beta / (1.0 - alpha)), math.log((1.0 - beta) / alpha)


def _constrained_mle(values: Sequence[float], probs: Sequence[float], target: float) -> list[float]:
    """The distribution closest (in KL) to ``probs`` on ``values`` whose mean is ``target``.

    It is ``p_i / (1 + λ (x_i - target))`` with λ solving the mean constraint;
    the constraint function decreases in λ, so bisection finds it.
    """
    lam = _solve_lambda([v - target for v in values], probs)
    return [p / (1.0 + lam * (v - target)) for v, p in zip(values, probs)]


def _normalised_mle(values: Sequence[float], probs: Sequence[float], t: float) -> list[float]:
    """The distribution closest to ``probs`` whose normalised score ``(mu - ½)/sigma`` is ``t``.

    A fixed-point iteration: with the mean and deviation of the current
    estimate frozen, the Lagrange condition is again ``p_i / (1 + λ φ_i)``
    with ``φ_i = x_i - ½ - t·σ/2·(1 + ((x_i - μ)/σ)²)`` (Van den Bergh,
    "Comments on normalized Elo").
    """
    n = len(values)
    p = [1.0 / n] * n
    for _ in range(100):
        mu = sum(v * q for v, q in zip(values, p))
        sigma = math.sqrt(sum(q * (v - mu) ** 2 for v, q in zip(values, p)))
        phi = [v - 0.5 - 0.5 * t * sigma * (1.0 + ((v - mu) / sigma) ** 2) for v in values]
        lam = _solve_lambda(phi, probs)
        new = [ph / (1.0 + lam * f) for ph, f in zip(probs, phi)]
        done = max(abs(a - b) for a, b in zip(new, p)) < 1e-10
        p = new
        if done:
            break
    return p


def _solve_lambda(phi: Sequence[float], probs: Sequence[float]) -> float:
    """λ with ``Σ p_i φ_i / (1 + λ φ_i) = 0`` and every ``1 + λ φ_i > 0`` (bisection)."""
    hi_x, lo_x = max(phi), min(phi)
    if hi_x <= 0 or lo_x >= 0:
        raise ValueError("the hypothesis lies outside the observed scores")
    lo, hi = -1.0 / hi_x, -1.0 / lo_x
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if sum(p * f / (1.0 + mid * f) for f, p in zip(phi, probs)) > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return (lo + hi) / 2.0


#: SPRT Elo models: logistic Elo bounds, or normalised Elo bounds (fastchess's default).
SPRT_MODELS = ("normalized", "logistic")


def llr(counts: Sequence[int], elo0: float, elo1: float, model: str = "normalized") -> float:
    """Generalised log-likelihood ratio of H1 (``elo1``) against H0 (``elo0``).

    ``counts`` are trinomial (losses, draws, wins) or pentanomial (five pair
    classes, 0 to 2 points). ``model`` says whether ``elo0``/``elo1`` are
    normalised Elo (fastchess's default, and Fishtest's) or logistic Elo. An
    empty class counts as 0.001 so that the estimate exists from the first
    games, as in fastchess.
    """
    if len(counts) == 3:
        values, pairs = GAME_VALUES, False
    elif len(counts) == 5:
        values, pairs = PAIR_VALUES, True
    else:
        raise ValueError("counts must be trinomial (3) or pentanomial (5)")
    if model not in SPRT_MODELS:
        raise ValueError(f"unknown SPRT model {model!r}; choose from {', '.join(SPRT_MODELS)}")
    _check_counts(counts)
    if elo0 >= elo1:
        raise ValueError(f"elo0 ({elo0}) must be below elo1 ({elo1})")
    reg = [c if c > 0 else 1e-3 for c in counts]
    total = sum(reg)
    probs = [c / total for c in reg]
    if model == "logistic":
        p0 = _constrained_mle(values, probs, elo_to_score(elo0))
        p1 = _constrained_mle(values, probs, elo_to_score(elo1))
    else:
        scale = (math.sqrt(2.0) if pairs else 1.0) / NELO_SCALE
        p0 = _normalised_mle(values, probs, elo0 * scale)
        p1 = _normalised_mle(values, probs, elo1 * scale)
    return total * sum(p * math.log(a / b) for p, a, b in zip(probs, p1, p0))


@dataclass
class SprtResult:
    llr: float
    lower: float
    upper: float
    elo0: float
    elo1: float
    alpha: float
    beta: float
    model: str
    statistics: str = "pentanomial"

    @property
    def verdict(self) -> str:
        """``"H1"`` (elo1 accepted), ``"H0"`` (elo0 accepted) or ``"continue"``."""
        if self.llr >= self.upper:
            return "H1"
        if self.llr <= self.lower:
            return "H0"
        return "continue"

    @property
    def fraction(self) -> float:
        """Progress towards the bound the LLR is heading to, as fastchess prints it."""
        return self.llr / self.upper if self.llr >= 0 else -self.llr / self.lower

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict
        return data

    def __str__(self) -> str:
        return (f"LLR {self.llr:.2f} ({100 * self.fraction:.1f} %) bounds ({self.lower:.2f}, {self.upper:.2f}) "
                f"[{self.elo0:g}, {self.elo1:g}] → {self.verdict}")


def sprt(counts: Sequence[int], elo0: float, elo1: float, alpha: float = 0.05, beta: float = 0.05,
         model: str = "normalized") -> SprtResult:
    """SPRT state for trinomial or pentanomial ``counts``."""
    lower, upper = sprt_bounds(alpha, beta)
    return SprtResult(llr(counts, elo0, elo1, model), lower, upper, elo0, elo1, alpha, beta, model,
                      "pentanomial" if len(counts) == 5 else "trinomial")
