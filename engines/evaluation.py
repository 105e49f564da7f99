"""A trading bundle's macro-F1 on any feed, per class, next to the simplest baselines.

``evaluate(bundle, feed, ...)`` reads ``feed`` through the bundle's own feature spec (the
serving path: :func:`engines.dataset.collect`, as the dataset builder does) and labels every
row as training did: the mid move over the next ``horizon`` events of the key against the
HOLD band ``theta_bps``, both read from the bundle's ``metadata.data["dataset"]``. It then
scores, on the same rows:

- ``student``: the bundle's model (ONNX Runtime, CPU, the chosen precision);
- ``teacher``: a second bundle (``--teacher``), when given; same task and feature spec;
- ``majority``: always the class most frequent in the bundle's training rows;
- ``imbalance``: the level-1 rule on the last row's ``l1_imbalance`` (``q``): ``SELL`` if
  ``q < lo``, ``BUY`` if ``q > hi``, else ``HOLD``. ``lo <= hi`` are chosen on the TRAINING
  feed only: its training rows (the bundle's time split, purged the same way), labelled
  the same way, and the pair of candidates (the 1st..99th percentiles of ``q`` there, plus
  0) with the highest macro-F1 on those rows; ties keep the first found. The eval feed
  never moves them.

``rows="all"`` scores every labelled row of the feed (another symbol, another day);
``rows="test"`` only those after the bundle's time split recomputed on this feed (its
own held-out part, when the feed is the training feed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from engines.bundle import Bundle, sha256_file
from engines.dataset import (
    Samples,
    SplitMode,
    collect,
    future_returns,
    infer_task,
    split_times,
    trading_labels,
)
from engines.errors import EngineError
from schemas.errors import SchemaError
from schemas.features import TRADING_ROW, FeatureSpec, Task

RowsPart = Literal["all", "test"]
IMBALANCE_GRID: Final = tuple(range(1, 100))
"""Percentiles of the training rows' imbalance tried as rule thresholds."""

I64 = npt.NDArray[np.int64]


class ClassScore(msgspec.Struct, frozen=True, kw_only=True):
    """Precision, recall and F1 of one class; ``support`` = rows of that class."""

    precision: float
    recall: float
    f1: float
    support: int


class ModelScore(msgspec.Struct, frozen=True, kw_only=True):
    """One model's (or baseline's) scores on the evaluated rows."""

    macro_f1: float
    per_class: dict[str, ClassScore]
    predicted: list[int]
    """How many rows it put in each class."""


class ImbalanceRule(msgspec.Struct, frozen=True, kw_only=True):
    """The level-1 imbalance rule: SELL below ``lo``, BUY above ``hi``, HOLD between."""

    lo: float
    hi: float
    train_feed: str
    train_rows: int
    train_macro_f1: float

    def predict(self, q: npt.NDArray[Any]) -> I64:
        """Class per row of imbalance ``q`` (0 = SELL, 1 = HOLD, 2 = BUY)."""
        y = np.ones(q.shape[0], dtype=np.int64)
        y[q < self.lo] = 0
        y[q > self.hi] = 2
        return y


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``weir model eval`` prints (and writes with ``--json``)."""

    bundle: str
    model_version: str
    precision: str
    feed: str
    rows: str
    n_rows: int
    horizon: int
    theta_bps: float
    labels: list[str]
    class_counts: list[int]
    majority: str
    imbalance_rule: ImbalanceRule
    models: dict[str, ModelScore]
    teacher_bundle: str | None = None


def score(y: I64, pred: I64, labels: list[str]) -> ModelScore:
    """Per-class precision/recall/F1 and macro-F1 (a class never predicted has precision 0,
    a class with no true positive F1 0, as :func:`engines.objective.per_class_f1`)."""
    per: dict[str, ClassScore] = {}
    for c, name in enumerate(labels):
        tp = int(((pred == c) & (y == c)).sum())
        n_pred = int((pred == c).sum())
        n_true = int((y == c).sum())
        per[name] = ClassScore(
            precision=tp / n_pred if n_pred else 0.0,
            recall=tp / n_true if n_true else 0.0,
            f1=2 * tp / (n_pred + n_true) if tp else 0.0,
            support=n_true,
        )
    macro = float(np.mean([s.f1 for s in per.values()]))
    counts = np.bincount(pred, minlength=len(labels)).tolist()
    return ModelScore(macro_f1=macro, per_class=per, predicted=counts)


def _dataset_info(bundle: Bundle) -> dict[str, Any]:
    meta = bundle.metadata
    where = f"bundle {bundle.path}"
    if meta.task != Task.TRADING.value:
        raise EngineError(f"{where}: task {meta.task!r}, but eval scores trading bundles only")
    info = meta.data.get("dataset")
    if not isinstance(info, dict) or "horizon" not in info or "theta_bps" not in info:
        raise EngineError(
            f"{where}: metadata.data has no dataset horizon/theta_bps (not built by "
            "weir model build); cannot label as training did"
        )
    if int(info["horizon"]) < 1:
        raise EngineError(f"{where}: dataset horizon {info['horizon']} must be >= 1")
    return info


def _spec(bundle: Bundle) -> FeatureSpec:
    try:
        return msgspec.convert(bundle.feature_spec, FeatureSpec)
    except msgspec.ValidationError as exc:
        raise EngineError(f"bundle {bundle.path}: bad feature spec: {exc}") from exc


def _check_feed(feed: str | Path, bundle: Bundle) -> None:
    if not Path(feed).is_file():
        raise EngineError(f"feed {feed}: not found")
    try:
        task = infer_task(feed)
    except SchemaError as exc:
        raise EngineError(str(exc)) from exc
    if task is not Task.TRADING:
        raise EngineError(
            f"feed {feed}: holds {task.value} events, but bundle {bundle.path} is a trading model"
        )


class Labelled(NamedTuple):
    """A feed's labelled rows, with the bundle's time split recomputed on the feed."""

    rows: Samples
    cut_ns: I64
    """Per row: the first arrival of the test period (as ``build_dataset`` cuts)."""
    horizon_ns: I64
    """Per row: the arrival of the event its label looks at (for the purge)."""

    def train(self) -> Samples:
        """Rows before the split whose label also looks before it (training's rows)."""
        r = self.rows
        return r.take((r.arrival_ns < self.cut_ns) & (self.horizon_ns < self.cut_ns))

    def test(self) -> Samples:
        """Rows after the split (training's test rows)."""
        return self.rows.take(self.rows.arrival_ns >= self.cut_ns)


def labelled_rows(feed: str | Path, spec: FeatureSpec, info: dict[str, Any]) -> Labelled:
    """Every row of ``feed`` that has a label, labelled as training labelled (``y`` 0/1/2
    from ``info``'s horizon and theta_bps), split as training split (``info``'s split and
    train_frac, cut on all rows before the unlabelled ones are dropped)."""
    rows, _ = collect(feed, spec)
    ret, later = future_returns(rows.y, rows.key, int(info["horizon"]))
    rows.ret_bps = ret
    rows.y = trading_labels(np.nan_to_num(ret), float(info["theta_bps"]))
    mode: SplitMode = "key" if info.get("split") == "key" else "global"
    cut = split_times(
        rows.arrival_ns,
        rows.key,
        len(rows.keys),
        mode=mode,
        train_frac=float(info.get("train_frac", 0.7)),
    )
    keep = np.isfinite(ret)
    horizon_ns = np.where(later >= 0, rows.arrival_ns[np.maximum(later, 0)], 0)
    return Labelled(rows.take(keep), cut[keep], horizon_ns[keep])


def _imbalance(rows: Samples, spec: FeatureSpec) -> npt.NDArray[np.float64]:
    col = (spec.window - 1) * spec.row_width + TRADING_ROW.index("l1_imbalance")
    return rows.x[:, col].astype(np.float64)


def fit_imbalance_rule(q: npt.NDArray[np.float64], y: I64, train_feed: str) -> ImbalanceRule:
    """The (lo, hi) pair of candidate thresholds with the best macro-F1 on ``(q, y)``."""
    if q.shape[0] == 0:
        raise EngineError(f"feed {train_feed}: no labelled training rows to fit the rule on")
    cands = np.unique(np.concatenate([np.percentile(q, IMBALANCE_GRID), [0.0]]))
    n_true = np.bincount(y, minlength=3)
    # below[c, i] = rows of class c with q < cands[i]; above[c, i] = rows with q > cands[i].
    below = np.stack([np.searchsorted(np.sort(q[y == c]), cands, "left") for c in range(3)])
    above = np.stack(
        [n_true[c] - np.searchsorted(np.sort(q[y == c]), cands, "right") for c in range(3)]
    )
    n_below, n_above = below.sum(axis=0), above.sum(axis=0)
    best = (-1.0, 0.0, 0.0)
    for i, lo in enumerate(cands):
        for j in range(i, cands.shape[0]):
            tp = np.array([below[0, i], n_true[1] - below[1, i] - above[1, j], above[2, j]])
            pred = np.array([n_below[i], q.shape[0] - n_below[i] - n_above[j], n_above[j]])
            f1 = np.where(tp > 0, 2 * tp / np.maximum(pred + n_true, 1), 0.0)
            macro = float(f1.mean())
            if macro > best[0]:
                best = (macro, float(lo), float(cands[j]))
    return ImbalanceRule(
        lo=best[1],
        hi=best[2],
        train_feed=train_feed,
        train_rows=int(q.shape[0]),
        train_macro_f1=best[0],
    )


def _baselines(
    train_feed: str | Path, bundle: Bundle, spec: FeatureSpec, info: dict[str, Any]
) -> tuple[ImbalanceRule, int]:
    """The imbalance rule and the majority class, both from the bundle's training rows."""
    _check_feed(train_feed, bundle)
    want = bundle.metadata.data.get("feed_sha256")
    got = sha256_file(Path(train_feed))
    if want is not None and got != want:
        raise EngineError(
            f"--train-feed {train_feed}: sha256 {got} is not the feed bundle {bundle.path} "
            f"was trained on ({info.get('feed')}, sha256 {want})"
        )
    train = labelled_rows(train_feed, spec, info).train()
    y = train.y
    rule = fit_imbalance_rule(_imbalance(train, spec), y, str(train_feed))
    return rule, int(np.argmax(np.bincount(y, minlength=3)))


def _model_outputs(bundle: Bundle, precision: str, x: npt.NDArray[np.float32]) -> Any:
    from engines.export import onnx_outputs

    if precision not in bundle.metadata.models:
        raise EngineError(
            f"bundle {bundle.path}: no {precision} model (has "
            f"{', '.join(sorted(bundle.metadata.models))})"
        )
    return onnx_outputs(bundle.model_path(precision).read_bytes(), x)


def _check_teacher(teacher: Bundle, bundle: Bundle, spec: FeatureSpec) -> None:
    where = f"teacher bundle {teacher.path}"
    if teacher.metadata.task != bundle.metadata.task:
        raise EngineError(
            f"{where}: task {teacher.metadata.task!r} does not match bundle "
            f"{bundle.path} task {bundle.metadata.task!r}"
        )
    if _spec(teacher) != spec:
        raise EngineError(f"{where}: feature spec differs from bundle {bundle.path}'s")


def evaluate(
    bundle_path: str | Path,
    feed: str | Path,
    *,
    train_feed: str | Path,
    teacher_path: str | Path | None = None,
    rows: RowsPart = "all",
    precision: str = "fp32",
) -> Evaluation:
    """Score the bundle, its teacher and both baselines on ``feed`` (module docstring)."""
    bundle = Bundle.load(bundle_path)
    info = _dataset_info(bundle)
    spec = _spec(bundle)
    teacher = Bundle.load(teacher_path) if teacher_path is not None else None
    if teacher is not None:
        _check_teacher(teacher, bundle, spec)
    _check_feed(feed, bundle)
    labels = list(bundle.metadata.labels)
    rule, majority = _baselines(train_feed, bundle, spec, info)
    labelled = labelled_rows(feed, spec, info)
    data = labelled.test() if rows == "test" else labelled.rows
    if len(data) == 0:
        raise EngineError(f"feed {feed}: no labelled rows ({rows}) with window {spec.window}")
    y = data.y
    preds: dict[str, I64] = {
        "student": np.argmax(_model_outputs(bundle, precision, data.x), axis=1),
    }
    if teacher is not None:
        preds["teacher"] = np.argmax(_model_outputs(teacher, "fp32", data.x), axis=1)
    preds["majority"] = np.full(len(data), majority, dtype=np.int64)
    preds["imbalance"] = rule.predict(_imbalance(data, spec))
    return Evaluation(
        bundle=str(bundle.path),
        model_version=bundle.metadata.model_version,
        precision=precision,
        feed=str(feed),
        rows=rows,
        n_rows=len(data),
        horizon=int(info["horizon"]),
        theta_bps=float(info["theta_bps"]),
        labels=labels,
        class_counts=np.bincount(y, minlength=len(labels)).tolist(),
        majority=labels[majority],
        imbalance_rule=rule,
        models={name: score(y, p, labels) for name, p in preds.items()},
        teacher_bundle=str(teacher.path) if teacher is not None else None,
    )


def format_evaluation(ev: Evaluation) -> str:
    """The table ``weir model eval`` prints: one row per model, P/R/F1 per class."""
    counts = " / ".join(f"{n} {c:,}" for n, c in zip(ev.labels, ev.class_counts, strict=True))
    rule = ev.imbalance_rule
    lines = [
        f"{ev.model_version} ({ev.precision}) on {ev.feed}: {ev.n_rows:,} rows ({ev.rows}), "
        f"horizon {ev.horizon}, theta {ev.theta_bps:.4g} bps; classes {counts}",
        f"imbalance rule: SELL if l1_imbalance < {rule.lo:.4f}, BUY if > {rule.hi:.4f} "
        f"(fit on {rule.train_rows:,} training rows of {rule.train_feed}, "
        f"macro-F1 {rule.train_macro_f1:.4f} there); majority: {ev.majority}",
        f"{'model':<10} {'macro-F1':>8}"
        + "".join(f"  {n + ' P/R/F1':>20}" for n in ev.labels)
        + "  predicted",
    ]
    for name, s in ev.models.items():
        cells = "".join(
            f"  {c.precision:>6.4f} {c.recall:.4f} {c.f1:.4f}" for c in s.per_class.values()
        )
        pred = "/".join(str(n) for n in s.predicted)
        lines.append(f"{name:<10} {s.macro_f1:>8.4f}{cells}  {pred}")
    student = ev.models["student"].macro_f1
    teacher = ev.models.get("teacher")
    if teacher is not None and teacher.macro_f1 > 0:
        lines.append(f"student keeps {student / teacher.macro_f1:.1%} of the teacher's macro-F1")
    lines.append(
        f"student - imbalance rule: {student - ev.models['imbalance'].macro_f1:+.4f} macro-F1"
    )
    return "\n".join(lines)
