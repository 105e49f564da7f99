"""The per-task objectives: metric direction, margin rule, task and serving metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="objectives bind their losses to torch tensors")

from engines.dataset import DatasetInfo, Samples
from engines.objective import (
    SensorObjective,
    TradingObjective,
    objective_class,
)
from schemas.features import Task


def trading(y: list[int] | None = None) -> TradingObjective:
    """A trading objective bound to labels ``y``."""
    labels = np.asarray(y if y is not None else [0, 1, 2, 2], dtype=np.int64)
    return TradingObjective(labels, temperature=2.0, alpha=0.7)


def sensor() -> SensorObjective:
    """A sensor objective bound to four targets."""
    return SensorObjective(np.zeros(4), temperature=2.0, alpha=0.7)


def info(**changes: Any) -> DatasetInfo:
    """A dataset description with only what the objectives read."""
    base: dict[str, Any] = {
        "feed": "f",
        "task": "trading",
        "events": 1,
        "samples": 1,
        "keys": [],
        "split": "global",
        "train_frac": 0.7,
        "split_ns": {},
        "train_rows": 1,
        "test_rows": 1,
    }
    return DatasetInfo(**(base | changes))


def test_objective_class_by_task() -> None:
    """Each task maps to its objective, with its output width and labels."""
    assert objective_class(Task.TRADING) is TradingObjective
    assert objective_class(Task.SENSOR) is SensorObjective
    assert (TradingObjective.n_outputs, TradingObjective.labels) == (3, ("SELL", "HOLD", "BUY"))
    assert (SensorObjective.n_outputs, SensorObjective.labels) == (1, ())


def test_trading_metric_is_macro_f1_and_higher_is_better() -> None:
    """Trading scores arg-maxes by macro-F1; every real score beats ``worst``."""
    obj = trading()
    y = np.array([0, 1, 2, 2])
    out = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    assert obj.metric(y, out) == pytest.approx((1.0 + 2 / 3 + 2 / 3) / 3)
    assert obj.better(0.5, 0.4) and not obj.better(0.4, 0.4)
    assert obj.better(0.0, obj.worst) and obj.worst == -math.inf
    assert obj.class_weights.tolist() == pytest.approx([4 / 3, 4 / 3, 2 / 3])


def test_sensor_metric_is_mae_and_lower_is_better() -> None:
    """Sensor scores the forecast column by MAE; lower wins."""
    obj = sensor()
    out = np.array([[1.0], [2.0], [4.0]], dtype=np.float32)
    assert obj.metric(np.array([1.0, 1.0, 1.0]), out) == pytest.approx(4 / 3)
    assert obj.better(0.1, 0.2) and not obj.better(0.2, 0.2)
    assert obj.better(1e9, obj.worst)
    assert obj.class_weights.tolist() == [1.0]


def test_margin_rules() -> None:
    """Trading keeps a variant within margin F1 points; sensor within relative MAE."""
    t, s = trading(), sensor()
    assert t.within_margin(0.47, 0.50, 0.03) and not t.within_margin(0.469, 0.50, 0.03)
    assert s.within_margin(1.01, 1.0, 0.01) and not s.within_margin(1.011, 1.0, 0.01)
    assert (t.margin_rule(0.03), s.margin_rule(0.01)) == ("-0.03 macro-F1", "+1% MAE")


def test_trading_test_metrics() -> None:
    """Retention, the label rule and per-class F1; no retention without a teacher score."""
    obj = trading()
    y = np.array([0, 1, 2])
    out = np.eye(3, dtype=np.float32)[[0, 1, 1]]
    got = obj.test_metrics(info(horizon=5, theta_bps=1.5), y, out, teacher=0.5, student=0.4)
    assert got == {
        "student_f1_retention": pytest.approx(0.8),
        "theta_bps": 1.5,
        "horizon_events": 5.0,
        "student_test_f1_SELL": 1.0,
        "student_test_f1_HOLD": pytest.approx(2 / 3),
        "student_test_f1_BUY": 0.0,
    }
    zero = obj.test_metrics(info(), y, out, teacher=0.0, student=0.4)
    assert zero["student_f1_retention"] == 0.0
    assert sensor().test_metrics(info(), y, out, teacher=0.5, student=0.4) == {}


def test_sensor_serving_metrics_give_the_alert_threshold() -> None:
    """The alert threshold is the quantile of |target - forecast| on the training rows."""
    y = np.arange(101, dtype=np.float64)
    n = y.size
    zeros = np.zeros(n, dtype=np.int64)
    rows = Samples(np.zeros((n, 2), np.float32), y, zeros, zeros, ["s"], np.zeros(n))
    lines: list[str] = []

    def forecast_zero(model: Any, x: np.ndarray) -> np.ndarray:
        return np.zeros((x.shape[0], 1), dtype=np.float32)

    got = sensor().serving_metrics(None, rows, 0.9, forecast_zero, lines.append)
    assert got == {"alert_threshold": pytest.approx(90.0), "alert_quantile": 0.9}
    assert lines == ["alert threshold 90.000 (train score quantile 0.9)"]
    assert trading().serving_metrics(None, rows, 0.9, forecast_zero, lines.append) == {}
