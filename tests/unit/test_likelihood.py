"""The online anomaly likelihood (engines.likelihood) on sequences worked out by hand."""

from __future__ import annotations

import math
import tracemalloc

import msgspec
import numpy as np
import pytest

from engines.likelihood import AnomalyLikelihood, LikelihoodSpec, log_likelihood, tail_probability


def spec(**changes: float) -> LikelihoodSpec:
    """A small spec: no averaging, no learning period, 4 samples to fit, no lower bounds."""
    base = {
        "averaging_window": 1,
        "learning_period": 0,
        "estimation_samples": 4,
        "historic_window": 100,
        "reestimation_period": 100,
        "min_mean": 0.0,
        "min_variance": 1e-12,
    }
    return msgspec.convert(base | changes, LikelihoodSpec)


def feed(lk: AnomalyLikelihood, scores: list[float]) -> list[float]:
    """The likelihood after each score."""
    return [lk.update(s) for s in scores]


def test_tail_probability_is_the_q_function() -> None:
    """Q(0) = 0.5, Q(1) = 0.158655, Q(-1) = 0.841345 (one-sided, upper tail)."""
    assert tail_probability(2.0, 2.0, 3.0) == pytest.approx(0.5)
    assert tail_probability(5.0, 2.0, 3.0) == pytest.approx(0.158655, abs=1e-6)
    assert tail_probability(-1.0, 2.0, 3.0) == pytest.approx(0.841345, abs=1e-6)


def test_log_likelihood_spreads_the_top() -> None:
    """0.5 -> 0.0301, 1 - 1e-5 -> 0.5, 1 -> 1, 0 -> 0 (not a hair below)."""
    assert log_likelihood(0.5) == pytest.approx(math.log(0.5) / math.log(1e-10))
    assert log_likelihood(0.5) == pytest.approx(0.0301, abs=1e-4)
    assert log_likelihood(1.0 - 1e-5) == pytest.approx(0.5, abs=1e-5)
    assert log_likelihood(1.0) == pytest.approx(1.0)
    assert log_likelihood(0.0) == 0.0


def test_fit_on_the_estimation_samples_then_judge() -> None:
    """Scores 1..4 fit N(2.5, 1.25); then 2.5 is 0.5 and 2.5 + sqrt(1.25) is 1 - Q(1)."""
    lk = AnomalyLikelihood(spec())
    assert feed(lk, [1.0, 2.0, 3.0, 4.0]) == [0.5] * 4
    assert lk.update(2.5) == pytest.approx(0.5)
    assert (lk.mean, lk.std) == (pytest.approx(2.5), pytest.approx(math.sqrt(1.25)))
    assert lk.update(2.5 + math.sqrt(1.25)) == pytest.approx(1.0 - 0.158655, abs=1e-6)


def test_learning_period_scores_are_left_out_of_the_fit() -> None:
    """Two learning scores of 100 do not enter the distribution fitted on 1..4."""
    lk = AnomalyLikelihood(spec(learning_period=2))
    assert feed(lk, [100.0, 100.0, 1.0, 2.0, 3.0, 4.0]) == [0.5] * 6
    lk.update(2.5)
    assert lk.mean == pytest.approx(2.5)


def test_short_term_average_is_judged() -> None:
    """With a window of 2 the judged value is the mean of the last two scores."""
    lk = AnomalyLikelihood(spec(averaging_window=2))
    feed(lk, [2.0, 2.0, 4.0, 4.0])  # averages 2, 2, 3, 4: mean 2.75, var 0.6875
    assert (lk.mean, lk.std) == (0.0, 0.0)  # not fitted yet
    got = lk.update(4.0)  # average (4 + 4) / 2 = 4
    assert (lk.mean, lk.std**2) == (pytest.approx(2.75), pytest.approx(0.6875))
    assert got == pytest.approx(1.0 - tail_probability(4.0, 2.75, math.sqrt(0.6875)))


def test_refit_every_reestimation_period() -> None:
    """The fit holds for reestimation_period scores, then moves to the recent history."""
    lk = AnomalyLikelihood(spec(reestimation_period=3, historic_window=4))
    feed(lk, [1.0, 1.0, 1.0, 1.0])
    feed(lk, [5.0, 5.0, 5.0])  # judged against N(1, ~0): the fit does not move
    assert lk.mean == pytest.approx(1.0)
    lk.update(5.0)  # refit on the last 4 averages: 1, 5, 5, 5
    assert lk.mean == pytest.approx(4.0)
    assert lk.std == pytest.approx(math.sqrt(3.0))


def test_lower_bounds_on_mean_and_variance() -> None:
    """A quiet key's fit is held at min_mean and min_variance (nupic's 0.03 and 0.0003)."""
    lk = AnomalyLikelihood(spec(min_mean=0.03, min_variance=0.0003))
    feed(lk, [0.0] * 5)
    assert (lk.mean, lk.std) == (0.03, pytest.approx(math.sqrt(0.0003)))


def test_sustained_red_tail_reports_yellow_after_the_first() -> None:
    """Two red tails in a row: the second (and third) report 1 - yellow_tail; a calm one resets."""
    lk = AnomalyLikelihood(spec(historic_window=100))
    feed(lk, [1.0, 2.0, 3.0, 4.0])
    first, second, third = feed(lk, [50.0, 50.0, 50.0])
    assert first > 1.0 - 1e-5
    assert (second, third) == (1.0 - 1e-3, 1.0 - 1e-3)
    assert lk.update(2.5) == pytest.approx(0.5)
    assert lk.update(50.0) > 1.0 - 1e-5


def test_running_sums_match_the_history_after_many_laps() -> None:
    """After thousands of scores the fit equals numpy's over the last historic_window averages."""
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 0.3, size=5000)
    s = spec(averaging_window=5, historic_window=64, reestimation_period=1, estimation_samples=64)
    lk = AnomalyLikelihood(s)
    feed(lk, scores.tolist())
    avg = np.convolve(scores, np.ones(5) / 5, mode="valid")
    hist = avg[-65:-1]  # the fit before the last score: the 64 averages before it
    assert lk.mean == pytest.approx(hist.mean(), rel=1e-9)
    assert lk.std == pytest.approx(hist.std(), rel=1e-6)


def test_update_allocates_nothing_that_stays() -> None:
    """Thousands of updates leave traced memory where it was (the rings are preallocated)."""
    lk = AnomalyLikelihood(LikelihoodSpec(learning_period=10, estimation_samples=50))
    feed(lk, [0.1] * 100)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(5000):
            lk.update(0.1 + (i % 7) * 0.01)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024


def test_estimation_longer_than_history_is_refused() -> None:
    """A spec that could never fit (more samples than the history holds) is refused."""
    with pytest.raises(
        ValueError, match=r"^estimation_samples \(10\) must not exceed historic_window \(5\)$"
    ):
        LikelihoodSpec(estimation_samples=10, historic_window=5)
    with pytest.raises(msgspec.ValidationError, match=r"must not exceed historic_window"):
        msgspec.convert({"estimation_samples": 10, "historic_window": 5}, LikelihoodSpec)


def test_defaults_are_nupics() -> None:
    """Default settings are nupic's: window 10, history 8,640, refit every 100, bounds."""
    s = LikelihoodSpec()
    assert (s.averaging_window, s.historic_window, s.reestimation_period) == (10, 8640, 100)
    assert (s.min_mean, s.min_variance, s.red_tail, s.yellow_tail) == (0.03, 0.0003, 1e-5, 1e-3)
    assert s.warm_scores == s.learning_period + s.estimation_samples
