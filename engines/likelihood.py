"""Anomaly likelihood: how unusual a key's recent anomaly score is against its own history.

A raw anomaly score (the sensor model's forecast error) is not comparable across keys or
over time: a noisy sensor errs more than a quiet one, and one sensor's noise drifts. As
Numenta's HTM detector does on NAB (``AnomalyLikelihood`` in nupic, Ahmad et al. 2017),
each key keeps the distribution of its own recent scores and reports how far into that
distribution's tail the short-term average of its latest scores lies:

1. ``avg`` = mean of the key's last ``averaging_window`` raw scores.
2. The first ``learning_period`` scores only warm the average up (a model's first errors
   on a fresh key say little); the next ``estimation_samples`` averages build the
   distribution; until then the likelihood is 0.5 ("no opinion").
3. The distribution is a normal fitted to the averages of the last ``historic_window``
   scores (mean and variance bounded below by ``min_mean`` and ``min_variance``), re-fitted
   every ``reestimation_period`` scores, so an anomaly does not at once become normal. A
   score is judged against the fit of the scores before it, then joins the history.
4. ``tail = Q((avg - mean) / std)``, the normal's upper tail. Two tails in a row at or
   below ``red_tail`` (1e-5) report the second as ``yellow_tail`` (1e-3): a sustained
   anomaly alerts on its start rather than on every record of it (nupic's filter).
5. ``likelihood = 1 - tail``; ``log_likelihood`` spreads the top of [0, 1] (0.5 -> 0.03,
   1 - 1e-5 -> 0.5, 1 -> 1) so one threshold can tell 0.999 from 0.99999.

Differences from nupic: only the upper tail counts (an error far *below* usual means the
key got easier to forecast, not an anomaly); the statistics are running sums over a ring
(O(1) per score) instead of a refit over the whole history.

Call contract: one ``AnomalyLikelihood`` per key, ``update`` called once per score in the
key's event order, from one thread. ``update`` is O(1) and allocates nothing beyond Python
floats: the rings are preallocated at construction (``historic_window`` float64 values,
69 KB at the default 8,640).
"""

from __future__ import annotations

import math
from typing import Annotated, Final

import msgspec
import numpy as np

LOG_FLOOR: Final = 1e-10
"""``log_likelihood`` maps ``1 - LOG_FLOOR`` and above to 1."""
_LOG_DENOMINATOR: Final = math.log(LOG_FLOOR)
_SQRT2: Final = math.sqrt(2.0)


class LikelihoodSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of the anomaly likelihood (defaults: nupic's, as NAB's HTM detector runs)."""

    averaging_window: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    learning_period: Annotated[int, msgspec.Meta(ge=0)] = 288
    estimation_samples: Annotated[int, msgspec.Meta(ge=1)] = 100
    historic_window: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 8640
    reestimation_period: Annotated[int, msgspec.Meta(ge=1)] = 100
    min_mean: Annotated[float, msgspec.Meta(ge=0)] = 0.03
    min_variance: Annotated[float, msgspec.Meta(gt=0)] = 0.0003
    red_tail: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1e-5
    yellow_tail: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 1e-3

    def __post_init__(self) -> None:
        if self.estimation_samples > self.historic_window:
            raise ValueError(
                f"estimation_samples ({self.estimation_samples}) must not exceed "
                f"historic_window ({self.historic_window})"
            )

    @property
    def warm_scores(self) -> int:
        """Scores a key needs before its likelihood leaves 0.5."""
        return self.learning_period + self.estimation_samples


def tail_probability(x: float, mean: float, std: float) -> float:
    """``P(X > x)`` for ``X ~ N(mean, std**2)`` (the Q function); ``std`` must be > 0."""
    return 0.5 * math.erfc((x - mean) / (std * _SQRT2))


def log_likelihood(likelihood: float) -> float:
    """nupic's ``computeLogLikelihood``: ``log(1 + 1e-10 - L) / log(1e-10)``, clipped to [0, 1]
    (nupic's is a hair below 0 at ``L = 0``)."""
    return max(0.0, math.log(1.0 + LOG_FLOOR - likelihood) / _LOG_DENOMINATOR)


class AnomalyLikelihood:
    """One key's online anomaly likelihood (see the module docstring)."""

    __slots__ = (
        "_avg_pos",
        "_avg_sum",
        "_hist",
        "_hist_len",
        "_hist_pos",
        "_hist_sq",
        "_hist_sum",
        "_prev_tail",
        "_raw",
        "count",
        "mean",
        "spec",
        "std",
    )

    def __init__(self, spec: LikelihoodSpec | None = None) -> None:
        self.spec = spec = spec if spec is not None else LikelihoodSpec()
        self._raw = np.zeros(spec.averaging_window, dtype=np.float64)
        self._avg_pos = 0
        self._avg_sum = 0.0
        self._hist = np.zeros(spec.historic_window, dtype=np.float64)
        self._hist_pos = 0
        self._hist_len = 0
        self._hist_sum = 0.0
        self._hist_sq = 0.0
        self._prev_tail = 1.0
        self.count = 0
        """Scores seen."""
        self.mean = 0.0
        """Mean of the fitted distribution (0 until the first fit)."""
        self.std = 0.0
        """Standard deviation of the fitted distribution (0 until the first fit)."""

    def _average(self, score: float) -> float:
        # Mean of the last `averaging_window` scores (fewer at the start).
        raw = self._raw
        pos = self._avg_pos
        self._avg_sum += score - float(raw[pos])
        raw[pos] = score
        self._avg_pos = (pos + 1) % raw.shape[0]
        return self._avg_sum / min(self.count, raw.shape[0])

    def _remember(self, avg: float) -> None:
        hist = self._hist
        pos = self._hist_pos
        size = hist.shape[0]
        if self._hist_len == size:
            old = float(hist[pos])
            self._hist_sum -= old
            self._hist_sq -= old * old
        else:
            self._hist_len += 1
        hist[pos] = avg
        self._hist_sum += avg
        self._hist_sq += avg * avg
        self._hist_pos = (pos + 1) % size
        if self._hist_pos == 0:
            # Resync the running sums once per lap so rounding never accumulates.
            self._hist_sum = float(hist.sum())
            self._hist_sq = float(np.dot(hist, hist))

    def _fit(self) -> None:
        spec = self.spec
        n = self._hist_len
        mean = self._hist_sum / n
        var = self._hist_sq / n - mean * mean
        self.mean = max(mean, spec.min_mean)
        self.std = math.sqrt(max(var, spec.min_variance))

    def update(self, score: float) -> float:
        """Fold one raw score in; return the likelihood (0.5 while warming up)."""
        self.count += 1
        spec = self.spec
        avg = self._average(score)
        seen = self.count - spec.learning_period
        if seen <= 0:
            return 0.5
        if seen <= spec.estimation_samples:
            self._remember(avg)
            return 0.5
        if (seen - spec.estimation_samples - 1) % spec.reestimation_period == 0:
            self._fit()
        # Judged against the history before it, then remembered.
        tail = tail_probability(avg, self.mean, self.std)
        self._remember(avg)
        prev, self._prev_tail = self._prev_tail, tail
        if tail <= spec.red_tail and prev <= spec.red_tail:
            tail = spec.yellow_tail
        return 1.0 - tail
