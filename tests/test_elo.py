"""Elo, intervals, LOS and SPRT against values worked out by hand (and printed by the tools)."""

from __future__ import annotations

import math

import pytest

from neuralengine.benchmarks import elo


def test_score_to_elo_by_hand() -> None:
    assert elo.score_to_elo(0.5) == 0.0
    # 0.75 = 3:1 odds -> 400 * log10(3) = 190.849
    assert elo.score_to_elo(0.75) == pytest.approx(190.849, abs=1e-3)
    assert elo.score_to_elo(0.25) == pytest.approx(-190.849, abs=1e-3)
    # 10:1 odds -> 400 Elo
    assert elo.score_to_elo(10 / 11) == pytest.approx(400.0)
    assert elo.score_to_elo(0.0) == -math.inf
    assert elo.score_to_elo(1.0) == math.inf
    assert math.isnan(elo.score_to_elo(math.nan))
    for d in (-350.0, -20.0, 0.0, 75.5, 600.0):
        assert elo.score_to_elo(elo.elo_to_score(d)) == pytest.approx(d)


def test_z_value() -> None:
    assert elo.z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert elo.z_value(0.99) == pytest.approx(2.575829, abs=1e-6)
    with pytest.raises(ValueError):
        elo.z_value(1.5)


def test_trinomial_60_20_20() -> None:
    # W=60, D=20, L=20 (N=100): score = (60 + 10) / 100 = 0.70
    # Elo = -400 log10(1/0.7 - 1) = 400 log10(7/3) = 147.19
    # per-game variance = (60 * 0.3^2 + 20 * 0.2^2 + 20 * 0.7^2) / 100 = (5.4 + 0.8 + 9.8) / 100 = 0.16
    # standard error = sqrt(0.16 / 100) = 0.04; 1.959964 * 0.04 = 0.078399
    # score bounds 0.621601 / 0.778399 -> Elo 86.23 / 218.25, so ± (218.25 - 86.23) / 2 = 66.01
    # LOS = 0.5 (1 + erf((60 - 20) / sqrt(2 * 80))) = 0.5 (1 + erf(3.1623)) = 0.999996
    e = elo.trinomial(60, 20, 20)
    assert e.games == 100
    assert e.score == pytest.approx(0.70)
    assert e.elo == pytest.approx(147.19, abs=0.01)
    assert e.lower == pytest.approx(86.23, abs=0.01)
    assert e.upper == pytest.approx(218.25, abs=0.01)
    assert e.error == pytest.approx(66.01, abs=0.01)
    assert e.los == pytest.approx(0.999996, abs=1e-6)
    assert e.draw_ratio == pytest.approx(0.20)
    assert e.counts == [20, 20, 60]
    # Mirror image: the same numbers with the sign flipped.
    m = elo.trinomial(20, 20, 60)
    assert m.elo == pytest.approx(-147.19, abs=0.01)
    assert m.lower == pytest.approx(-218.25, abs=0.01) and m.upper == pytest.approx(-86.23, abs=0.01)
    assert m.los == pytest.approx(1 - e.los)


def test_trinomial_even_and_degenerate() -> None:
    # 10 wins, 10 losses: score 0.5, Elo 0, LOS exactly 0.5; variance 0.25 -> se 0.1118,
    # bounds 0.5 ± 0.219131 -> 1/0.719131 - 1 = 0.390567, Elo ±(-400 log10(0.390567)) = ±163.32
    e = elo.trinomial(10, 0, 10)
    assert e.elo == 0.0 and e.los == 0.5
    assert e.upper == pytest.approx(163.32, abs=0.01)
    assert e.lower == pytest.approx(-163.32, abs=0.01)
    # All draws: no variance, a zero-width interval at 0.
    d = elo.trinomial(0, 7, 0)
    assert d.elo == 0.0 and d.error == 0.0 and d.draw_ratio == 1.0 and d.los == 0.5
    # All losses: -inf, and the interval does not exist.
    z = elo.trinomial(0, 0, 4)
    assert z.elo == -math.inf and math.isnan(z.error)
    empty = elo.trinomial(0, 0, 0)
    assert empty.games == 0 and math.isnan(empty.elo)
    with pytest.raises(ValueError):
        elo.trinomial(-1, 0, 3)
    with pytest.raises(ValueError):
        elo.trinomial(1.5, 0, 3)  # type: ignore[arg-type]


def test_los_matches_cutechess_prints() -> None:
    # cutechess_match.log prints "LOS: 2.3 %", "1.7 %" and "1.0 %" after 0-4, 1-7 and 2-10 (W-L):
    # 0.5 (1 + erf(-4 / sqrt(8)))  = 0.5 (1 - 0.95450) = 0.02275
    # 0.5 (1 + erf(-6 / sqrt(16))) = 0.5 (1 - 0.96611) = 0.01695
    # 0.5 (1 + erf(-8 / sqrt(24))) = 0.5 (1 - 0.97908) = 0.01046
    assert elo.los(0, 4) == pytest.approx(0.02275, abs=1e-5)
    assert elo.los(1, 7) == pytest.approx(0.01695, abs=1e-5)
    assert elo.los(2, 10) == pytest.approx(0.01046, abs=1e-5)
    assert elo.los(0, 0) == 0.5
    assert elo.los(5, 5) == 0.5


def test_pentanomial_by_hand() -> None:
    # Pairs [LL, LD, WL+DD, WD, WW] = [3, 1, 2, 0, 0] (fastchess_match.log, 12 games):
    # pair scores 0, .25, .5 -> mean = (0.25 + 2 * 0.5) / 6 = 0.208333
    # variance = (3 * 0.208333^2 + 0.041667^2 + 2 * 0.291667^2) / 6 = 0.302083 / 6 = 0.050347
    # se = sqrt(0.050347 / 6) = 0.091603; bounds 0.208333 ± 0.179538 = 0.028795 / 0.387872
    # Elo -231.91, bounds -611.2 / -79.3 -> ± 265.97; LOS = Phi(-0.291667 / 0.091603) = Phi(-3.184) = 0.00073
    # nElo = (0.208333 - 0.5) / (sqrt(2) * sqrt(0.050347)) * 800 / ln 10 = -319.34, ± 1.96 / sqrt(6) / sqrt(2) * 347.44
    e = elo.pentanomial([3, 1, 2, 0, 0])
    assert e.games == 12
    assert e.score == pytest.approx(0.208333, abs=1e-6)
    assert e.elo == pytest.approx(-231.91, abs=0.01)
    assert e.error == pytest.approx(265.97, abs=0.01)
    assert e.los == pytest.approx(0.00073, abs=1e-5)
    assert e.nelo == pytest.approx(-319.34, abs=0.01)
    assert e.nelo_error == pytest.approx(196.58, abs=0.01)
    assert e.draw_ratio == pytest.approx(2 / 6)
    # A symmetric distribution is even.
    s = elo.pentanomial([1, 2, 4, 2, 1])
    assert s.elo == pytest.approx(0.0, abs=1e-9) and s.los == pytest.approx(0.5)
    with pytest.raises(ValueError):
        elo.pentanomial([1, 2, 3])


def test_pair_class() -> None:
    assert elo.pair_class(1.0, 1.0) == 4
    assert elo.pair_class(1.0, 0.0) == 2
    assert elo.pair_class(0.5, 0.5) == 2
    assert elo.pair_class(0.5, 0.0) == 1
    assert elo.pair_class(0.0, 0.0) == 0
    with pytest.raises(ValueError):
        elo.pair_class(1.0, 0.3)


def test_sprt_bounds_by_hand() -> None:
    # ln(0.05 / 0.95) = -2.944439, ln(0.95 / 0.05) = 2.944439
    lower, upper = elo.sprt_bounds(0.05, 0.05)
    assert lower == pytest.approx(-2.944439, abs=1e-6)
    assert upper == pytest.approx(2.944439, abs=1e-6)
    # alpha 0.05, beta 0.1: ln(0.1 / 0.95) = -2.2513, ln(0.9 / 0.05) = 2.8904
    assert elo.sprt_bounds(0.05, 0.1) == pytest.approx((-2.2513, 2.8904), abs=1e-4)
    with pytest.raises(ValueError):
        elo.sprt_bounds(0.6, 0.5)


def test_llr_without_draws_by_hand() -> None:
    # With no draws (the empty class weighs 0.001) the constrained MLE puts mass s on wins and
    # 1 - s on losses, so LLR = W ln(s1/s0) + L ln((1-s1)/(1-s0)).
    # elo0 = 0 (s0 = 0.5), elo1 = 400 log10(3) (s1 = 0.75); W=10, L=5:
    # 10 ln(1.5) + 5 ln(0.5) = 4.054651 - 3.465736 = 0.588915
    llr = elo.llr([5, 0, 10], 0.0, 400 * math.log10(3), model="logistic")
    assert llr == pytest.approx(0.5889, abs=0.005)


def test_sprt_decisions() -> None:
    strong = elo.sprt([0, 2, 20, 40, 38], 0, 10)
    assert strong.verdict == "H1" and strong.llr > strong.upper
    weak = elo.sprt([38, 40, 20, 2, 0], 0, 10)
    assert weak.verdict == "H0" and weak.llr < weak.lower
    # fastchess_sprt.log: Ptnml [2, 0, 6, 1, 1], [0, 20] normalised -> "LLR: -0.10 (-3.6%)"
    mid = elo.sprt([2, 0, 6, 1, 1], 0, 20)
    assert mid.verdict == "continue"
    assert round(mid.llr, 2) == -0.10
    assert round(100 * mid.fraction, 1) == -3.6
    with pytest.raises(ValueError):
        elo.sprt([1, 2, 3], 10, 0)
    with pytest.raises(ValueError):
        elo.llr([1, 2, 3, 4], 0, 10)
    with pytest.raises(ValueError):
        elo.llr([1, 2, 3], 0, 10, model="bayes")


def test_jsonable_keeps_infinities_readable() -> None:
    data = elo.jsonable({"a": math.inf, "b": [-math.inf, math.nan, 1.5], "c": "x"})
    assert data == {"a": "inf", "b": ["-inf", None, 1.5], "c": "x"}
    assert elo.as_float(data["a"]) == math.inf and math.isnan(elo.as_float(None))
