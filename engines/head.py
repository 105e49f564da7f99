"""The head: how a model's output rows become decisions (label, scores, evidence).

A model package's descriptor says which head judges its outputs (``[decision] kind``):

- ``classes``: the output row holds one score per label (class probabilities); the label
  is the arg-max, the scores are the row.
- ``anomaly``: the output row's first value is the forecast of the event's target
  (``FeatureState.target()``, the sensor features' ``last_z``). The raw anomaly score is
  ``error = |target - forecast|``; each key's :class:`~engines.likelihood.AnomalyLikelihood`
  (created by ``new_key_state`` and kept beside the key's feature state) turns it into a
  likelihood, and the label is ``ALERT`` when ``log_likelihood(likelihood) >= threshold``.
  A key whose likelihood still warms up (its first ``likelihood.warm_scores`` scores)
  never alerts. Scores are ``[error, forecast]``; the evidence (:class:`schemas.Anomaly`:
  error, likelihood, log-likelihood, threshold) goes on the decision.

The threshold and the likelihood settings are the package's (``DecisionSpec``), not
constants; ``service.settings`` may override the threshold.

Call contract: ``judge`` works on a whole batch whose rows are in event order per key
(the scheduler keeps it), from the dispatcher; each anomaly row updates its key's
likelihood once. It allocates the per-batch temporaries and, for anomaly rows, one
``Anomaly`` per row (the decision it joins is allocated anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines.bundle import Bundle
from engines.descriptor import (
    ANOMALY,
    ANOMALY_LABELS,
    CLASSES,
    DEFAULT_THRESHOLD,
    DecisionSpec,
    read_descriptor,
)
from engines.errors import EngineError
from engines.likelihood import AnomalyLikelihood, LikelihoodSpec, log_likelihood
from schemas.decision import Anomaly

SENSOR_LABELS = ANOMALY_LABELS
"""The anomaly labels (the old name)."""
_KIND_OF_TASK = {"trading": CLASSES, "sensor": ANOMALY}
"""Old bundles (no descriptor) and old callers name the task; each task has one head."""


class Head:
    """Maps output rows to label indices, scores and (anomaly) evidence for one package."""

    __slots__ = ("kind", "labels", "likelihood", "threshold")

    def __init__(
        self,
        kind: str,
        labels: Sequence[str] = (),
        *,
        threshold: float = DEFAULT_THRESHOLD,
        likelihood: LikelihoodSpec | None = None,
    ) -> None:
        kind = _KIND_OF_TASK.get(kind, kind)
        if kind not in (CLASSES, ANOMALY):
            raise EngineError(f"unknown decision kind {kind!r} (kinds: anomaly, classes)")
        self.kind = kind
        self.labels = tuple(labels) if kind == CLASSES else ANOMALY_LABELS
        if not self.labels:
            raise EngineError(f"head of kind {kind!r} needs at least one label")
        self.threshold = threshold
        self.likelihood = likelihood if likelihood is not None else LikelihoodSpec()

    @classmethod
    def from_spec(cls, spec: DecisionSpec, *, threshold: float | None = None) -> Head:
        """The head a package's ``[decision]`` describes (``threshold`` overrides its own)."""
        return cls(
            spec.kind,
            spec.labels,
            threshold=spec.threshold if threshold is None else threshold,
            likelihood=spec.likelihood,
        )

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Head:
        """The head a model package's descriptor describes (``read_descriptor``)."""
        return cls.from_spec(read_descriptor(bundle).decision)

    @property
    def task(self) -> str:
        """The built-in task of this kind (``sensor`` / ``trading``), for callers of the
        old name; new code reads ``kind``."""
        return "sensor" if self.kind == ANOMALY else "trading"

    @property
    def alert_threshold(self) -> float:
        """The anomaly threshold (a log-likelihood); kept for callers of the old name."""
        return self.threshold

    @property
    def uses_targets(self) -> bool:
        """Whether ``judge`` reads each row's target and its key's state (an anomaly head
        does; a classes head reads the outputs only, so a caller may skip gathering them)."""
        return self.kind == ANOMALY

    def new_key_state(self) -> AnomalyLikelihood | None:
        """What this head keeps per key beside its feature state (``None``: nothing)."""
        return AnomalyLikelihood(self.likelihood) if self.kind == ANOMALY else None

    def decide(self, outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label indices ``[n]`` and score rows of a ``classes`` head (see ``judge``)."""
        if self.kind == ANOMALY:
            raise EngineError(
                "an anomaly head judges with each key's likelihood: call judge(outputs, "
                "targets, key_states) with the states new_key_state made"
            )
        return np.argmax(outputs, axis=1), outputs

    def judge(
        self,
        outputs: np.ndarray,
        targets: np.ndarray,
        key_states: Sequence[AnomalyLikelihood | None],
    ) -> tuple[np.ndarray, np.ndarray, list[Anomaly] | None]:
        """Label indices ``[n]``, score rows ``[n, k]`` and per-row evidence (anomaly only).

        ``outputs`` is ``[n, m]``; ``targets`` ``[n]`` and ``key_states`` (each row's key's
        ``new_key_state()``) are used by the anomaly head only.
        """
        if self.kind == CLASSES:
            return np.argmax(outputs, axis=1), outputs, None
        forecast = outputs[:, 0].astype(np.float64)
        error = np.abs(targets - forecast)
        idx = np.zeros(error.shape[0], dtype=np.int64)
        thr = self.threshold
        details: list[Anomaly] = []
        for i, e in enumerate(error.tolist()):
            lk = key_states[i]
            if lk is None:
                raise EngineError("an anomaly head got a row without its key's likelihood")
            lik = lk.update(e)
            if lk.count <= lk.spec.warm_scores:
                details.append(
                    Anomaly(error=e, likelihood=None, log_likelihood=None, threshold=thr)
                )
                continue
            ll = log_likelihood(lik)
            if ll >= thr:
                idx[i] = 1
            details.append(Anomaly(error=e, likelihood=lik, log_likelihood=ll, threshold=thr))
        return idx, np.stack([error, forecast], axis=1), details
