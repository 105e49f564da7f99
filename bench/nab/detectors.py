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
from engines.likelihood import AnomalyLikelihood, LikelihoodSpec, log_likelihood
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
        self._errors: dict[str, F64] = {}

    def errors(self, f: NabFile) -> F64:
        """``|last_z - forecast|`` per row; NaN before the key's window is full."""
        cached = self._errors.get(f.name)
        if cached is not None:
            return cached
        spec = self.spec
        state = spec.new_state()
        assert isinstance(state, SensorState)
        n = len(f)
        x = np.zeros((n, spec.n_features), dtype=np.float32)
        target = np.zeros(n)
        ready = np.zeros(n, dtype=bool)
        for i, (ts, value) in enumerate(
            zip(f.series.timestamps.tolist(), f.values.tolist(), strict=True)
        ):
            state.update(SensorReading(sensor_id=f.sensor, value=value, source_ts_ns=ts), ts)
            if state.ready:
                state.write_window(x[i])
                target[i] = state.last_z
                ready[i] = True
        err = np.full(n, np.nan)
        forecast = onnx_outputs(self.model, x[ready])[:, 0]
        err[ready] = np.abs(target[ready] - forecast)
        self._errors[f.name] = err
        return err

    def error_scores(self, f: NabFile) -> F64:
        """The forecast error mapped into [0, 1] by ``e / (1 + e)``; 0 while warming."""
        e = np.nan_to_num(self.errors(f), nan=0.0)
        return e / (1.0 + e)

    def likelihood_scores(self, f: NabFile, spec: LikelihoodSpec | None = None) -> F64:
        """The forecast error's log-likelihood; ``spec`` defaults to NAB's probation split."""
        if spec is None:
            probation = int(probation_length(len(f)))
            learning = probation // 2
            spec = LikelihoodSpec(
                learning_period=learning, estimation_samples=max(1, probation - learning)
            )
        lk = AnomalyLikelihood(spec)
        out = np.zeros(len(f))
        for i, e in enumerate(self.errors(f).tolist()):
            if e == e:  # not NaN: the key's window is full
                out[i] = log_likelihood(lk.update(e))
        return out
