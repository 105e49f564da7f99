"""What a build optimises and reports, per task: one object instead of a branch per step.

An :class:`Objective` holds everything the model pipeline does differently for trading and
sensor bundles: the teacher it trains, the teacher's and the student's losses (bound to the
training labels), the test metric and which way is better, the output width and labels,
the margin rule a reduced-precision variant must meet, and the task's own metrics.
``objective_class(task)(fit_y, temperature=..., alpha=...)`` is the one for a build's
training rows.

Trading: a DeepLOB-style teacher with class-weighted cross-entropy; the student learns
``alpha * T^2 * KL`` to the teacher's softened outputs plus ``(1 - alpha)`` weighted CE;
metric macro-F1 (higher is better); a variant is kept within ``margin`` macro-F1 points.
Sensor: a GRU forecaster with MSE; the student learns ``alpha`` MSE to the teacher plus
``(1 - alpha)`` MSE to the target; metric MAE (lower is better); a variant is kept within
``margin`` relative MAE; the bundle carries the alert threshold (a quantile of the
student's training scores).

PyTorch is imported only by the methods that need it (``engines.models.torch_module``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from engines.dataset import TRADING_LABELS, DatasetInfo, Samples
from engines.models import (
    class_weights,
    deeplob_teacher,
    distill_loss,
    forecast_distill_loss,
    gru_forecaster,
    torch_module,
)
from schemas.features import FeatureSpec, Task

LossFn = Callable[[Any, np.ndarray], Any]
"""``loss(outputs, batch_indices)``: the loss of a mini-batch of the training rows."""
Predict = Callable[[Any, np.ndarray], np.ndarray]


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int = 3) -> float:
    """Unweighted mean over classes of F1 (a class absent from both counts as F1 = 0)."""
    return float(np.mean(per_class_f1(y, pred, n_classes)))


def per_class_f1(y: np.ndarray, pred: np.ndarray, n_classes: int = 3) -> list[float]:
    """F1 of each class."""
    out = []
    for c in range(n_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        out.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return out


class Objective(abc.ABC):
    """One task's models, losses, metric and margin rule (see the module docstring)."""

    task: ClassVar[Task]
    n_outputs: ClassVar[int]
    labels: ClassVar[tuple[str, ...]]
    metric_key: ClassVar[str]
    """Suffix of the metric names in the bundle (``student_test_<key>``)."""
    metric_name: ClassVar[str]
    """How logs name the metric (``macro-F1``, ``MAE``)."""
    worst: ClassVar[float]
    """A value every real metric beats."""
    classifier: ClassVar[bool]
    """Outputs are class probabilities: softmax in the export, arg-max parity."""
    teacher_loss_name: ClassVar[str]
    relative_features: ClassVar[tuple[str, ...]] = ()
    """Row columns a build divides by their window's mean magnitude by default
    (``BuildConfig.relative_features``): those whose scale is the key's, not the model's."""

    def __init__(self, fit_y: np.ndarray, *, temperature: float, alpha: float) -> None:
        self.temperature = temperature
        self.alpha = alpha
        self.class_weights = self._class_weights(fit_y)
        """Per-class loss weights (stored in the bundle's metadata)."""
        self._weight = torch_module().from_numpy(self.class_weights)
        self._y = self._targets(fit_y)

    @abc.abstractmethod
    def _class_weights(self, fit_y: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _targets(self, fit_y: np.ndarray) -> Any:
        """The training labels as a tensor the losses index."""

    @abc.abstractmethod
    def metric(self, y: np.ndarray, out: np.ndarray) -> float:
        """The task metric of model outputs ``out`` against labels ``y``."""

    @abc.abstractmethod
    def better(self, new: float, best: float) -> bool:
        """Whether metric ``new`` beats ``best``."""

    @abc.abstractmethod
    def teacher(
        self,
        spec: FeatureSpec,
        mean: np.ndarray,
        std: np.ndarray,
        *,
        channels: int,
        hidden: int,
    ) -> Any:
        """A fresh teacher over ``spec``'s window, its input standardised by mean/std."""

    @abc.abstractmethod
    def teacher_loss(self) -> LossFn:
        """The teacher's loss against the training labels."""

    @abc.abstractmethod
    def student_loss(self, soft: Any) -> LossFn:
        """The student's distillation loss against the teacher's outputs ``soft``."""

    @abc.abstractmethod
    def student_loss_name(self) -> str:
        """The student's loss, written out for the bundle's metadata."""

    @abc.abstractmethod
    def within_margin(self, got: float, base: float, margin: float) -> bool:
        """Whether a variant scoring ``got`` is within ``margin`` of the fp32 ``base``."""

    @abc.abstractmethod
    def margin_rule(self, margin: float) -> str:
        """The margin rule, for the log."""

    def fmt(self, value: float) -> str:
        """The metric with its name, for the log."""
        return f"{self.metric_name} {value:.4f}"

    @classmethod
    def describe_dataset(cls, info: DatasetInfo) -> str:
        """What the dataset log line adds for this task."""
        return ""

    def test_metrics(
        self,
        info: DatasetInfo,
        y: np.ndarray,
        student_out: np.ndarray,
        *,
        teacher: float,
        student: float,
    ) -> dict[str, float]:
        """Task metrics on the test rows beyond the teacher's and student's metric."""
        return {}

    def serving_metrics(
        self,
        student: Any,
        fit_rows: Samples,
        quantile: float,
        predict: Predict,
        log: Callable[[str], None],
    ) -> dict[str, float]:
        """Metrics the served head reads from the bundle (``engines.head``)."""
        return {}


class TradingObjective(Objective):
    """Three classes (SELL/HOLD/BUY), macro-F1."""

    task = Task.TRADING
    n_outputs = 3
    labels = TRADING_LABELS
    metric_key = "macro_f1"
    metric_name = "macro-F1"
    worst = -math.inf
    classifier = True
    teacher_loss_name = "class-weighted cross-entropy"
    relative_features = (
        "mid_ret_bps",
        "spread_bps",
        "signed_log_trade",
        "trade_dev_bps",
        "log_gap_ms",
    )
    """Every column whose scale is the symbol's: returns, spread and trade price deviation
    in bps of a tick size and volatility that differ per symbol, trade size in base-asset
    units, gaps at the symbol's event rate. Raw, a BTC-trained model reads ETH's one-tick
    spread (23x BTC's in bps) and its trade sizes as extremes (``weir model eval``)."""

    def _class_weights(self, fit_y: np.ndarray) -> np.ndarray:
        return class_weights(fit_y, 3)

    def _targets(self, fit_y: np.ndarray) -> Any:
        return torch_module().from_numpy(fit_y)

    def metric(self, y: np.ndarray, out: np.ndarray) -> float:
        """Macro-F1 of the outputs' arg-maxes."""
        return macro_f1(y, out.argmax(axis=1))

    def better(self, new: float, best: float) -> bool:
        """Higher is better."""
        return new > best

    def teacher(
        self,
        spec: FeatureSpec,
        mean: np.ndarray,
        std: np.ndarray,
        *,
        channels: int,
        hidden: int,
    ) -> Any:
        """DeepLOB-style conv + GRU."""
        return deeplob_teacher(
            spec.window, spec.row_width, mean, std, channels=channels, hidden=hidden
        )

    def teacher_loss(self) -> LossFn:
        """Class-weighted cross-entropy."""
        torch = torch_module()
        y, weight = self._y, self._weight

        def loss(o: Any, idx: np.ndarray) -> Any:
            return torch.nn.functional.cross_entropy(o, y[torch.from_numpy(idx)], weight=weight)

        return loss

    def student_loss(self, soft: Any) -> LossFn:
        """Temperature-scaled KL to the teacher plus weighted CE."""
        torch = torch_module()
        y, weight = self._y, self._weight
        temperature, alpha = self.temperature, self.alpha

        def loss(o: Any, idx: np.ndarray) -> Any:
            i = torch.from_numpy(idx)
            return distill_loss(
                o, soft[i], y[i], temperature=temperature, alpha=alpha, weight=weight
            )

        return loss

    def student_loss_name(self) -> str:
        """The distillation loss with its temperature and weight."""
        return (
            f"{self.alpha} * T^2 * KL(teacher/T || student/T) + {1 - self.alpha} * "
            f"weighted CE, T={self.temperature}"
        )

    def within_margin(self, got: float, base: float, margin: float) -> bool:
        """At most ``margin`` macro-F1 points below fp32."""
        return got >= base - margin

    def margin_rule(self, margin: float) -> str:
        """``-0.03 macro-F1``."""
        return f"-{margin} macro-F1"

    @classmethod
    def describe_dataset(cls, info: DatasetInfo) -> str:
        """Horizon, HOLD band and class counts."""
        return (
            f", horizon {info.horizon}, theta {info.theta_bps:.4g} bps ({info.theta_rule}), "
            f"train classes {info.train_class_counts}, test classes {info.test_class_counts}"
        )

    def test_metrics(
        self,
        info: DatasetInfo,
        y: np.ndarray,
        student_out: np.ndarray,
        *,
        teacher: float,
        student: float,
    ) -> dict[str, float]:
        """F1 retention, the label rule and the student's F1 per class."""
        out = {
            "student_f1_retention": student / teacher if teacher else 0.0,
            "theta_bps": info.theta_bps,
            "horizon_events": float(info.horizon),
        }
        f1s = per_class_f1(y, student_out.argmax(1))
        for name, f1 in zip(TRADING_LABELS, f1s, strict=True):
            out[f"student_test_f1_{name}"] = f1
        return out


class SensorObjective(Objective):
    """A forecast of the next z-score, MAE; anomaly score ``|target - forecast|``."""

    task = Task.SENSOR
    n_outputs = 1
    labels = ()
    metric_key = "mae"
    metric_name = "MAE"
    worst = math.inf
    classifier = False
    teacher_loss_name = "MSE"

    def _class_weights(self, fit_y: np.ndarray) -> np.ndarray:
        return np.ones(1, dtype=np.float32)

    def _targets(self, fit_y: np.ndarray) -> Any:
        return torch_module().from_numpy(fit_y.astype(np.float32))

    def metric(self, y: np.ndarray, out: np.ndarray) -> float:
        """MAE of the forecast ``out[:, 0]``."""
        return float(np.mean(np.abs(out[:, 0].astype(np.float64) - y)))

    def better(self, new: float, best: float) -> bool:
        """Lower is better."""
        return new < best

    def teacher(
        self,
        spec: FeatureSpec,
        mean: np.ndarray,
        std: np.ndarray,
        *,
        channels: int,
        hidden: int,
    ) -> Any:
        """A GRU forecaster (its own fixed size: ``channels`` and ``hidden`` are trading's)."""
        return gru_forecaster(spec.window, spec.row_width, mean, std)

    def teacher_loss(self) -> LossFn:
        """MSE of the forecast."""
        torch = torch_module()
        y = self._y

        def loss(o: Any, idx: np.ndarray) -> Any:
            return torch.nn.functional.mse_loss(o[:, 0], y[torch.from_numpy(idx)])

        return loss

    def student_loss(self, soft: Any) -> LossFn:
        """MSE to the teacher's forecast plus MSE to the target."""
        torch = torch_module()
        y, alpha = self._y, self.alpha

        def loss(o: Any, idx: np.ndarray) -> Any:
            i = torch.from_numpy(idx)
            return forecast_distill_loss(o, soft[i], y[i], alpha=alpha)

        return loss

    def student_loss_name(self) -> str:
        """The two MSE terms with their weights."""
        return f"{self.alpha} * MSE(teacher) + {1 - self.alpha} * MSE(target)"

    def within_margin(self, got: float, base: float, margin: float) -> bool:
        """At most ``margin`` (relative) above the fp32 MAE."""
        return got <= base * (1.0 + margin)

    def margin_rule(self, margin: float) -> str:
        """``+1% MAE``."""
        return f"+{margin:.0%} MAE"

    def serving_metrics(
        self,
        student: Any,
        fit_rows: Samples,
        quantile: float,
        predict: Predict,
        log: Callable[[str], None],
    ) -> dict[str, float]:
        """``alert_threshold``: the ``quantile`` of the student's training-row scores."""
        scores = np.abs(fit_rows.y - predict(student, fit_rows.x)[:, 0])
        threshold = float(np.quantile(scores, quantile))
        log(f"alert threshold {threshold:.3f} (train score quantile {quantile})")
        return {"alert_threshold": threshold, "alert_quantile": quantile}


_OBJECTIVES: dict[Task, type[Objective]] = {
    Task.TRADING: TradingObjective,
    Task.SENSOR: SensorObjective,
}


def objective_class(task: Task) -> type[Objective]:
    """The objective of ``task``; built with the training labels its losses are bound to."""
    return _OBJECTIVES[task]
