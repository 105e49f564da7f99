"""The head: how a model's output rows become decisions (label and scores).

Trading (and any classifier): the output row holds class probabilities; the label is the
arg-max class, the scores are the row. Sensor: the output row's first value is the forecast
of the current reading's z-score; the anomaly score is ``|target - forecast|`` where
``target`` is ``SensorState.last_z``; the label is ``ALERT`` above ``alert_threshold``.

Call contract: ``labels_into`` works on a whole batch with numpy and allocates only the
per-batch temporaries; it never looks at rows past ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines.bundle import Bundle
from engines.errors import EngineError

SENSOR_LABELS = ("OK", "ALERT")
DEFAULT_ALERT_THRESHOLD = 3.0


class Head:
    """Maps output rows to label indices and scores for one task."""

    __slots__ = ("alert_threshold", "labels", "task")

    def __init__(
        self,
        task: str,
        labels: Sequence[str],
        *,
        alert_threshold: float = DEFAULT_ALERT_THRESHOLD,
    ) -> None:
        self.task = task
        self.labels = tuple(labels) if task != "sensor" else SENSOR_LABELS
        if not self.labels:
            raise EngineError(f"head for task {task!r} needs at least one label")
        self.alert_threshold = alert_threshold

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Head:
        """The head described by a bundle's metadata (task, labels, alert threshold)."""
        meta = bundle.metadata
        thr = float(meta.metrics.get("alert_threshold", DEFAULT_ALERT_THRESHOLD))
        return cls(meta.task, meta.labels, alert_threshold=thr)

    def decide(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label indices ``[n]`` and score rows ``[n, k]`` for ``outputs`` ``[n, m]``.

        ``targets`` ``[n]`` is used by the sensor task only.
        """
        if self.task == "sensor":
            forecast = outputs[:, 0].astype(np.float64)
            score = np.abs(targets - forecast)
            idx = (score > self.alert_threshold).astype(np.int64)
            return idx, np.stack([score, forecast], axis=1)
        return np.argmax(outputs, axis=1), outputs
