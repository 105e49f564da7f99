"""Detectors scored by ``bench.nab``: NAB's two baselines and weir's sensor model.

Each turns one ``NabFile`` into one anomaly score in [0, 1] per row, causally (row ``i``
sees rows ``0..i`` only), the way NAB runs a detector.

- ``null``: NAB's null detector, a constant 0.5: the normalisation's zero.
- ``windowed_gaussian``: NAB's ``WindowedGaussianDetector`` (window 6,400 values, slid by
  100): ``1 - Q(|x - mean| / std)``, ``Q`` the normal's upper tail, against the window's
  mean and (population) std before the value: 0.5 at the mean, 1 far from it.
- ``weir_error``: a weir sensor bundle's forecast error ``e = |last_z - forecast|``, through
  ``schemas.features`` (the serving path) and the bundle's fp32 ONNX model, mapped into
  [0, 1] by ``e / (1 + e)`` (monotone: the sweep only sees the order). Rows before the
  key's window is full score 0.
- ``weir_likelihood``: the same errors through ``engines.likelihood.AnomalyLikelihood``
  (one per series, its learning and estimation periods split NAB's probationary period
  as NAB's HTM detector does), reported as ``log_likelihood``.
- ``weir_likelihood_serving``: the same with ``LikelihoodSpec()``'s defaults (nupic's:
  learn on 288 scores, estimate on 100), which do not depend on the series' length.
- ``weir_surprise_likelihood`` (ablation): the likelihood of ``|last_z|``, the reading's
  z-score against the feature code's EWMA, without the model: what the model adds.
- ``weir_served``: the sensor *package* as the service runs it (``engines.package``): its
  feature implementation, its fp32 model, and its head (``Head.judge``: the error through
  the key's own ``AnomalyLikelihood`` with the package's ``LikelihoodSpec``), each series
  one key; the score is the decision's ``anomaly.log_likelihood`` (0 while warming).
- ``weir_served_nab_split``: the same head with NAB's per-series likelihood split (the
  package's threshold setting unchanged): what ``weir_likelihood`` measures, served.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from bench.nab.corpus import NabFile
from bench.nab.scorer import probation_length
from engines.bundle import Bundle
from engines.export import onnx_outputs
from engines.head import Head
from engines.likelihood import AnomalyLikelihood, LikelihoodSpec, log_likelihood
from engines.package import load_package
from schemas.events import SensorReading
from schemas.features import FeatureSpec, SensorState, Task

F64 = npt.NDArray[np.float64]
Detector = Callable[[NabFile], F64]

GAUSSIAN_WINDOW = 6400
GAUSSIAN_STEP = 100


def null(f: NabFile) -> F64:
    """NAB's null detector: 0.5 everywhere."""
    return np.full(len(f), 0.5)


def windowed_gaussian(
    f: NabFile, *, window: int = GAUSSIAN_WINDOW, step: int = GAUSSIAN_STEP
) -> F64:
    """NAB's windowed Gaussian detector (see the module docstring)."""
    x = f.values - (f.values[0] if len(f) else 0.0)  # shifted: the sums below stay exact
    n = x.shape[0]
    c1 = np.concatenate(([0.0], np.cumsum(x)))
    c2 = np.concatenate(([0.0], np.cumsum(x * x)))
    out = np.zeros(n)
    for i in range(1, n):
        # The window the detector holds after i records: all of them while growing,
        # then `window` values that move on by `step` once `step` more have arrived.
        lo = 0 if i <= window else step * ((i - window) // step)
        hi = min(i, window + lo)
        k = hi - lo
        mean = (c1[hi] - c1[lo]) / k
        var = max((c2[hi] - c2[lo]) / k - mean * mean, 0.0)
        std = math.sqrt(var) if var > 0.0 else 1e-6
        out[i] = 1.0 - 0.5 * math.erfc(abs(float(x[i]) - mean) / (std * math.sqrt(2.0)))
    return out


class WeirSensor:
    """A weir sensor bundle's forecast errors per series, computed once and cached."""

    def __init__(self, bundle_dir: str | Path) -> None:
        self.bundle = Bundle.load(bundle_dir)
        self.spec = msgspec.convert(self.bundle.feature_spec, FeatureSpec)
        if self.spec.task is not Task.SENSOR:
            raise ValueError(f"{bundle_dir}: a {self.spec.task} bundle, expected a sensor one")
        self.model = self.bundle.model_path("fp32").read_bytes()
        self._cache: dict[str, tuple[F64, F64]] = {}

    def _run(self, f: NabFile) -> tuple[F64, F64]:
        # Per row: the forecast error and |last_z|, NaN before the key's window is full.
        cached = self._cache.get(f.name)
        if cached is not None:
            return cached
        spec = self.spec
        state = spec.new_state()
        assert isinstance(state, SensorState)
        n = len(f)
        x = np.zeros((n, spec.n_features), dtype=np.float32)
        target = np.full(n, np.nan)
        rows = zip(f.series.timestamps.tolist(), f.values.tolist(), strict=True)
        for i, (ts, value) in enumerate(rows):
            state.update(SensorReading(sensor_id=f.sensor, value=value, source_ts_ns=ts), ts)
            if state.ready:
                state.write_window(x[i])
                target[i] = state.last_z
        ready = ~np.isnan(target)
        err = np.full(n, np.nan)
        err[ready] = np.abs(target[ready] - onnx_outputs(self.model, x[ready])[:, 0])
        self._cache[f.name] = out = (err, np.abs(target))
        return out

    def errors(self, f: NabFile) -> F64:
        """``|last_z - forecast|`` per row; NaN before the key's window is full."""
        return self._run(f)[0]

    def surprise(self, f: NabFile) -> F64:
        """``|last_z|``, the feature code's own surprise (no model); NaN while warming."""
        return self._run(f)[1]

    def error_scores(self, f: NabFile) -> F64:
        """The forecast error mapped into [0, 1] by ``e / (1 + e)``; 0 while warming."""
        e = np.nan_to_num(self.errors(f), nan=0.0)
        return e / (1.0 + e)

    def likelihood_scores(self, f: NabFile) -> F64:
        """The forecast error's log-likelihood (``likelihood_of``)."""
        return likelihood_of(self.errors(f))

    def serving_likelihood_scores(self, f: NabFile) -> F64:
        """The forecast error's log-likelihood with the default ``LikelihoodSpec``, as a
        service would run it without knowing the series' length."""
        return likelihood_of(self.errors(f), LikelihoodSpec())

    def surprise_likelihood_scores(self, f: NabFile) -> F64:
        """``|last_z|``'s log-likelihood: what the likelihood makes of the features alone."""
        return likelihood_of(self.surprise(f))


def nab_likelihood_spec(rows: int) -> LikelihoodSpec:
    """NAB's HTM detector split: learn on the first half of the probationary period,
    estimate the distribution on the second half."""
    probation = int(probation_length(rows))
    learning = probation // 2
    return LikelihoodSpec(learning_period=learning, estimation_samples=max(1, probation - learning))


def likelihood_of(raw: F64, spec: LikelihoodSpec | None = None) -> F64:
    """``log_likelihood`` of each raw score through one ``AnomalyLikelihood``; NaN rows
    (warming) score 0 and are not fed. ``spec`` defaults to ``nab_likelihood_spec``."""
    lk = AnomalyLikelihood(spec if spec is not None else nab_likelihood_spec(raw.shape[0]))
    out = np.zeros(raw.shape[0])
    for i, e in enumerate(raw.tolist()):
        if e == e:  # not NaN
            out[i] = log_likelihood(lk.update(e))
    return out


class WeirServed:
    """A sensor package's decisions per series, through its own features and head."""

    def __init__(self, bundle_dir: str | Path, *, nab_split: bool = False) -> None:
        self.package = pkg = load_package(bundle_dir)
        if pkg.head.kind != "anomaly":
            raise ValueError(f"{bundle_dir}: a {pkg.head.kind} package, expected an anomaly one")
        self.model = pkg.bundle.model_path("fp32").read_bytes()
        self.nab_split = nab_split
        self.alerts: dict[str, int] = {}
        """ALERT decisions per series at the package's own threshold."""

    def _head(self, rows: int) -> Head:
        head = self.package.head
        if not self.nab_split:
            return head
        return Head(head.kind, threshold=head.threshold, likelihood=nab_likelihood_spec(rows))

    def scores(self, f: NabFile) -> F64:
        """Each row's ``anomaly.log_likelihood`` as served; 0 while warming."""
        features = self.package.features
        head = self._head(len(f))
        state = features.new_state()
        n = len(f)
        x = np.zeros((n, features.n_features), dtype=np.float32)
        target = np.zeros(n)
        ready = np.zeros(n, dtype=bool)
        rows = zip(f.series.timestamps.tolist(), f.values.tolist(), strict=True)
        for i, (ts, value) in enumerate(rows):
            state.update(SensorReading(sensor_id=f.sensor, value=value, source_ts_ns=ts), ts)
            if state.ready:
                state.write_input(x[i])
                target[i] = state.target()
                ready[i] = True
        out = np.zeros(n)
        k = int(ready.sum())
        if k:
            key_state = head.new_key_state()
            labels, _, details = head.judge(
                onnx_outputs(self.model, x[ready]), target[ready], [key_state] * k
            )
            assert details is not None
            out[ready] = [d.log_likelihood or 0.0 for d in details]
            self.alerts[f.name] = int(labels.sum())
        return out
