"""The model pipeline: feed → dataset → teacher → distilled student → ONNX → bundle.

``build_bundle(feed, out, BuildConfig(...))`` runs, seeded and single-threaded by default
(so the same feed and config give the same weights and the same ONNX bytes on one host):

1. :func:`engines.dataset.build_dataset`: rows through ``schemas.features``, time split
   (train = first ``train_frac`` of time, test = the rest), labels/targets, purge.
   The last ``val_frac`` of the train period (by time) is held out for model selection
   (the best epoch by validation macro-F1 / MAE is kept); the test rows are touched only
   to report metrics.
2. Teacher (:mod:`engines.models`): DeepLOB-style conv + GRU (trading, class-weighted
   cross-entropy) or a GRU forecaster (sensor, MSE). What differs by task (models, losses,
   metric, margin rule, task metrics) is one :class:`engines.objective.Objective`; the
   epoch loop is :func:`engines.fitting.fit`.
3. Student: an MLP distilled from the teacher's outputs on the training rows
   (temperature-scaled KL + class-weighted CE; MSE to teacher + MSE to target).
   Optional magnitude pruning (``prune``) with ``prune_epochs`` of masked fine-tuning.
4. Export (:mod:`engines.export`): FP32 ONNX (softmax included for trading), INT8 Q/DQ
   calibrated on training rows, FP16; each is scored on the test rows with ONNX Runtime
   and kept only within its margin of the FP32 student (``int8_margin``/``fp16_margin``:
   macro-F1 points for trading, relative MAE for sensor).
5. Parity (:mod:`engines.parity`): a held-out sample through ``OnnxEngine`` at every
   bucket against PyTorch; the sample ships in the bundle for ``weir model verify``.
6. Sensor: ``alert_threshold`` (a metric, for reference) = the ``alert_quantile`` quantile
   of the student's error ``|last_z - forecast|`` on the training rows. The served
   decision judges that error through each key's likelihood against the package's
   ``decision.threshold`` (``engines.head``).
7. ``Bundle.write``: ONNX + JSON, metrics, parity, dataset description, versions, and
   ``package.json`` (``engines.package``: ``FeatureSpec`` features, the task's head).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import msgspec
import numpy as np

from engines.bundle import Bundle, sha256_file
from engines.dataset import (
    DatasetInfo,
    Samples,
    SplitMode,
    build_dataset,
    check_columns,
    column_stats,
    drop_columns,
    infer_task,
    split_times,
)
from engines.descriptor import DESCRIPTOR_FILE, builtin_descriptor
from engines.errors import EngineError
from engines.export import (
    export_onnx,
    finish_pruning,
    onnx_outputs,
    prune_magnitude,
    quantize_int8,
    to_fp16,
)
from engines.fitting import Log, fit, predict, seed_everything
from engines.models import (
    DEFAULT_ALPHA,
    DEFAULT_STUDENT_HIDDEN,
    DEFAULT_TEMPERATURE,
    count_params,
    exported,
    mlp_student,
    relative_scale,
    torch_module,
    with_input_transform,
)
from engines.objective import LossFn, Objective, objective_class
from engines.parity import (
    PARITY_FILE,
    PARITY_ROWS,
    TOLERANCES,
    Array,
    ParityCheck,
    ParitySample,
    check_parity,
    format_checks,
)
from schemas.features import FeatureSpec, Task

CALIBRATION_ROWS: Final = 2048


class BuildConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of a build (stored in the bundle's ``metadata.data["config"]``)."""

    task: Literal["trading", "sensor"] | None = None
    """None: from the feed's first event."""
    window: int = 32
    horizon: int = 20
    """Trading: label = mid move over the next ``horizon`` events of the key."""
    theta_bps: float | None = None
    """Trading: HOLD band in bps; None = balanced on the training rows."""
    train_frac: float = 0.7
    split: SplitMode = "global"
    val_frac: float = 0.15
    """Last part of the train period (by time) used to pick the best epoch."""
    teacher_epochs: int = 6
    student_epochs: int = 12
    batch_size: int = 256
    teacher_lr: float = 2e-3
    student_lr: float = 3e-3
    weight_decay: float = 1e-5
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA
    student_hidden: tuple[int, ...] = DEFAULT_STUDENT_HIDDEN
    drop_features: tuple[str, ...] = ()
    relative_features: tuple[str, ...] | None = None
    """Row columns divided, inside both models, by their window's mean magnitude
    (:func:`engines.models.relative_scale`) before standardisation: their symbol scale
    goes, their shape within the window stays. None: the task's own
    (``Objective.relative_features``: for trading, every column whose scale is the
    symbol's: returns, spread, trade size, trade price deviation, event gaps)."""
    """Row columns the models never see (fed as 0 by their standardisation): for
    columns whose scale is the symbol's (tick size, base-asset quantity), which a model
    meant for other symbols must not learn from."""
    teacher_channels: int = 32
    teacher_hidden: int = 96
    prune: float = 0.0
    """Fraction of student weights zeroed by magnitude (0 = off)."""
    prune_epochs: int = 2
    int8: bool = True
    fp16: bool = True
    int8_margin: float = 0.03
    fp16_margin: float = 0.01
    alert_quantile: float = 0.995
    parity_rows: int = PARITY_ROWS
    max_events: int | None = None
    max_train_rows: int | None = None
    """Keep at most this many (most recent) training rows, to bound time and memory."""
    seed: int = 0
    threads: int = 1
    model_version: str | None = None


class BuildResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a build produced."""

    path: str
    model_version: str
    metrics: dict[str, float]
    parity: list[ParityCheck]
    teacher_path: str | None = None


class _Rows(NamedTuple):
    """The rows of one build: fit (training), val (best epoch), test (reported only)."""

    fit: Samples
    val: Samples
    test: Samples


# -- the build -------------------------------------------------------------------------


def _split_validation(train: Samples, mode: SplitMode, val_frac: float) -> tuple[Samples, Samples]:
    cut = split_times(
        train.arrival_ns, train.key, len(train.keys), mode=mode, train_frac=1.0 - val_frac
    )
    is_fit = train.arrival_ns < cut
    return train.take(is_fit), train.take(~is_fit)


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that holds anything but bundle files (checked before training)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise EngineError(f"--out {out}: exists and is not a directory")
    for item in out.iterdir():
        ok = item.is_file() and item.suffix in {".onnx", ".json"}
        ok = ok or (item.is_dir() and item.name == "plans")
        if not ok:
            raise EngineError(f"--out {out}: holds {item.name}, which is not bundle output")


def _prepare_out(out: Path) -> None:
    """Make ``out`` empty, deleting only what a bundle holds; refuse anything else."""
    _check_out(out)
    if not out.exists():
        return
    for item in out.iterdir():
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()


def _versions() -> dict[str, str]:
    """Library versions the build ran with (stored in the bundle)."""
    import onnx
    import onnxruntime

    torch = torch_module()
    return {
        "numpy": np.__version__,
        "onnx": str(onnx.__version__),
        "onnxruntime": str(onnxruntime.__version__),
        "torch": str(torch.__version__),
        "python": sys.version.split()[0],
    }


def _rows(
    feed: str | Path, spec: FeatureSpec, cfg: BuildConfig, log: Log
) -> tuple[DatasetInfo, _Rows]:
    """Build the dataset and cut fit/val/test rows; refuse a feed too short for all three."""
    log(f"dataset: {feed} task={spec.task.value} window={spec.window} n_features={spec.n_features}")
    ds = build_dataset(
        feed,
        spec,
        horizon=cfg.horizon,
        theta_bps=cfg.theta_bps,
        train_frac=cfg.train_frac,
        split=cfg.split,
        max_events=cfg.max_events,
    )
    info = ds.info
    log(
        f"dataset: {info.events} events, {info.samples} rows, train {info.train_rows}, "
        f"test {info.test_rows}" + objective_class(spec.task).describe_dataset(info)
    )
    train = ds.train
    if cfg.max_train_rows is not None and len(train) > cfg.max_train_rows:
        train = train.take(np.arange(len(train) - cfg.max_train_rows, len(train)))
    fit_rows, val_rows = _split_validation(train, cfg.split, cfg.val_frac)
    test = ds.test
    if min(len(fit_rows), len(val_rows), len(test)) == 0:
        raise EngineError(
            f"feed {feed}: too few rows to train (fit {len(fit_rows)}, val {len(val_rows)}, "
            f"test {len(test)}); use a longer feed or a shorter window"
        )
    return info, _Rows(fit_rows, val_rows, test)


class _Trainer:
    """Fits one build's models on its fit rows, picking epochs on its val rows."""

    def __init__(
        self, obj: Objective, rows: _Rows, cfg: BuildConfig, rng: np.random.Generator, log: Log
    ) -> None:
        self.obj = obj
        self.rows = rows
        self.cfg = cfg
        self.rng = rng
        self.log = log

    def fit(
        self, model: Any, loss: LossFn, *, epochs: int, lr: float, weight_decay: float, name: str
    ) -> tuple[Any, list[dict[str, float]]]:
        """``engines.fitting.fit`` on the fit rows, validated on the val rows."""
        val = self.rows.val
        obj = self.obj

        def on_val(m: Any) -> float:
            return obj.metric(val.y, predict(m, val.x))

        return fit(
            model,
            loss,
            self.rows.fit.x,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=self.cfg.batch_size,
            rng=self.rng,
            evaluate=on_val,
            objective=obj,
            name=name,
            log=self.log,
        )

    def test(self, model: Any) -> tuple[float, np.ndarray]:
        """The metric of ``model`` on the test rows, and its outputs."""
        out = predict(model, self.rows.test.x)
        return self.obj.metric(self.rows.test.y, out), out


def _prune(
    trainer: _Trainer, student: Any, loss: LossFn, unpruned: float, metrics: dict[str, float]
) -> tuple[Any, list[dict[str, float]]]:
    """Zero the smallest student weights, fine-tune with the mask, make it permanent."""
    cfg, obj = trainer.cfg, trainer.obj
    metrics[f"student_unpruned_test_{obj.metric_key}"] = unpruned
    prune_magnitude(student, cfg.prune)
    student, history = trainer.fit(
        student,
        loss,
        epochs=cfg.prune_epochs,
        lr=cfg.student_lr / 3,
        weight_decay=0.0,
        name="pruned student",
    )
    metrics["student_sparsity"] = finish_pruning(student)
    return student, history


def _variants(trainer: _Trainer, fp32: bytes, metrics: dict[str, float]) -> dict[str, bytes]:
    """fp32 and each reduced precision that stays within its margin of fp32 on the test rows."""
    cfg, obj, rows, log = trainer.cfg, trainer.obj, trainer.rows, trainer.log
    key = obj.metric_key
    models = {"fp32": fp32}
    base = metrics[f"fp32_test_{key}"] = obj.metric(rows.test.y, onnx_outputs(fp32, rows.test.x))
    n_fit = len(rows.fit)
    calib = rows.fit.x[
        np.sort(trainer.rng.choice(n_fit, min(CALIBRATION_ROWS, n_fit), replace=False))
    ]
    variants: list[tuple[str, Callable[[], bytes], float]] = []
    if cfg.int8:
        variants.append(("int8", lambda: quantize_int8(fp32, calib), cfg.int8_margin))
    if cfg.fp16:
        variants.append(("fp16", lambda: to_fp16(fp32), cfg.fp16_margin))
    for precision, make, margin in variants:
        raw = make()
        got = obj.metric(rows.test.y, onnx_outputs(raw, rows.test.x))
        metrics[f"{precision}_test_{key}"] = got
        within = obj.within_margin(got, base, margin)
        metrics[f"{precision}_within_margin"] = float(within)
        log(
            f"{precision}: test {obj.fmt(got)} vs fp32 {obj.fmt(base)} "
            f"(margin {obj.margin_rule(margin)}): {'kept' if within else 'DROPPED'}"
        )
        if within:
            models[precision] = raw
    return models


def _parity(
    trainer: _Trainer, ref_model: Any, models: dict[str, bytes]
) -> tuple[ParitySample, list[ParityCheck]]:
    """Check every kept model against PyTorch on a held-out sample; raise on a mismatch."""
    test = trainer.rows.test
    n = min(trainer.cfg.parity_rows, len(test))
    pick = np.sort(trainer.rng.choice(len(test), n, replace=False))
    rows = np.ascontiguousarray(test.x[pick])
    sample = ParitySample(
        rows=Array.of(rows),
        reference=Array.of(predict(ref_model, rows)),
        outputs={p: Array.of(onnx_outputs(m, rows)) for p, m in models.items() if p != "fp32"},
        tolerances={p: TOLERANCES[p] for p in models},
        classification=trainer.obj.classifier,
    )
    checks = check_parity(models, sample)
    trainer.log(format_checks(checks))
    failed = [c.precision for c in checks if not c.ok]
    if failed:
        raise EngineError(f"parity failed for {failed}:\n{format_checks(checks)}")
    return sample, checks


def _descriptor(obj: Objective, spec: FeatureSpec, version: str) -> bytes:
    """``package.json`` of a built-in model: ``FeatureSpec`` features, its task's head."""
    settings = msgspec.to_builtins(spec)
    return builtin_descriptor(obj.task.value, version, settings, list(obj.labels)).to_json()


def _write_teacher(
    t_out: Path,
    obj: Objective,
    spec: FeatureSpec,
    teacher: Any,
    version: str,
    teacher_test: float,
) -> None:
    """The teacher as a bundle of its own, for latency comparison only."""
    _prepare_out(t_out)
    Bundle.write(
        t_out,
        models={"fp32": export_onnx(exported(teacher, softmax=obj.classifier), spec.n_features)},
        feature_spec=msgspec.to_builtins(spec),
        model_version=f"{version}-teacher",
        task=obj.task.value,
        n_features=spec.n_features,
        n_outputs=obj.n_outputs,
        labels=obj.labels,
        metrics={f"teacher_test_{obj.metric_key}": teacher_test},
        versions=_versions(),
        data={"note": "teacher of " + version + ", for latency comparison only"},
        extra_files={DESCRIPTOR_FILE: _descriptor(obj, spec, f"{version}-teacher")},
    )


def build_bundle(
    feed: str | Path,
    out: str | Path,
    config: BuildConfig | None = None,
    *,
    log: Log = print,
    teacher_out: str | Path | None = None,
) -> BuildResult:
    """Train, distil, export, check and write a bundle (see the module docstring)."""
    cfg = config or BuildConfig()
    out = Path(out)
    _check_out(out)
    if teacher_out is not None:
        _check_out(Path(teacher_out))
    t_start = time.perf_counter()
    task = Task(cfg.task) if cfg.task is not None else infer_task(feed)
    spec = FeatureSpec(task=task, window=cfg.window)
    if cfg.relative_features is None:
        cfg = msgspec.structs.replace(
            cfg, relative_features=objective_class(task).relative_features
        )
    assert cfg.relative_features is not None
    check_columns(spec.row_names, cfg.drop_features, "drop_features")
    check_columns(spec.row_names, cfg.relative_features, "relative_features")
    torch = seed_everything(cfg.seed, cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    info, rows = _rows(feed, spec, cfg, log)
    pre = None
    if cfg.relative_features:
        cols = [spec.row_names.index(n) for n in cfg.relative_features]
        pre = relative_scale(spec.window, spec.row_width, cols)
        log(f"relative features: {', '.join(cfg.relative_features)} (per-window scale)")
        mean, std = column_stats(predict(pre, rows.fit.x), spec.row_width)
    else:
        mean, std = column_stats(rows.fit.x, spec.row_width)
    if cfg.drop_features:
        mean, std = drop_columns(mean, std, spec.row_names, cfg.drop_features)
        log(f"dropped features: {', '.join(cfg.drop_features)} (fed to the models as 0)")
    obj = objective_class(task)(rows.fit.y, temperature=cfg.temperature, alpha=cfg.alpha)
    trainer = _Trainer(obj, rows, cfg, rng, log)
    key = obj.metric_key

    # -- teacher, then the student distilled from it ---------------------------------
    teacher = obj.teacher(spec, mean, std, channels=cfg.teacher_channels, hidden=cfg.teacher_hidden)
    if pre is not None:
        teacher = with_input_transform(pre, teacher)
    log(f"teacher: {type(teacher).__name__} {count_params(teacher):,} params")
    teacher, t_hist = trainer.fit(
        teacher,
        obj.teacher_loss(),
        epochs=cfg.teacher_epochs,
        lr=cfg.teacher_lr,
        weight_decay=cfg.weight_decay,
        name="teacher",
    )
    soft = torch.from_numpy(predict(teacher, rows.fit.x))
    student = mlp_student(spec.n_features, obj.n_outputs, mean, std, cfg.student_hidden)
    if pre is not None:
        student = with_input_transform(pre, student)
    student_loss = obj.student_loss(soft)
    log(f"student: MLP {cfg.student_hidden} {count_params(student):,} params")
    student, s_hist = trainer.fit(
        student,
        student_loss,
        epochs=cfg.student_epochs,
        lr=cfg.student_lr,
        weight_decay=cfg.weight_decay,
        name="student",
    )

    metrics: dict[str, float] = {}
    teacher_test, _ = trainer.test(teacher)
    student_test, student_out = trainer.test(student)
    prune_hist: list[dict[str, float]] = []
    if cfg.prune > 0.0:
        unpruned = student_test
        student, prune_hist = _prune(trainer, student, student_loss, unpruned, metrics)
        student_test, student_out = trainer.test(student)
        log(
            f"pruned {metrics['student_sparsity']:.0%} of student weights: test "
            f"{obj.fmt(student_test)} (unpruned {obj.fmt(unpruned)})"
        )
    metrics |= {
        f"teacher_test_{key}": teacher_test,
        f"student_test_{key}": student_test,
        "teacher_params": float(count_params(teacher)),
        "student_params": float(count_params(student)),
    }
    metrics |= obj.test_metrics(
        info, rows.test.y, student_out, teacher=teacher_test, student=student_test
    )
    log(f"test: teacher {obj.fmt(teacher_test)}, student {obj.fmt(student_test)}")

    # -- export, reduced precisions, serving metrics, parity -------------------------
    ref_model = exported(student, softmax=obj.classifier)
    models = _variants(trainer, export_onnx(ref_model, spec.n_features), metrics)
    metrics |= obj.serving_metrics(student, rows.fit, cfg.alert_quantile, predict, log)
    sample, checks = _parity(trainer, ref_model, models)
    fp32_check = next(c for c in checks if c.precision == "fp32")
    metrics["parity_fp32_max_abs_diff"] = fp32_check.max_abs_diff

    # -- bundle ------------------------------------------------------------------------
    digest = hashlib.sha256(models["fp32"]).hexdigest()[:12]
    version = cfg.model_version or f"{task.value}-w{spec.window}-{digest}"
    data = {
        "dataset": msgspec.to_builtins(info),
        "feed_sha256": sha256_file(Path(feed)),
        "config": msgspec.to_builtins(cfg),
        "teacher": {
            "model": type(teacher).__name__,
            "history": t_hist,
            "loss": obj.teacher_loss_name,
            "class_weights": obj.class_weights.tolist(),
        },
        "student": {
            "model": f"MLP {list(cfg.student_hidden)}",
            "history": s_hist + prune_hist,
            "loss": obj.student_loss_name(),
        },
        "split": f"train = first {cfg.train_frac:.0%} of recv time, test = the rest; "
        f"val = last {cfg.val_frac:.0%} of train (best epoch)",
        "parity_tolerances": {p: msgspec.to_builtins(t) for p, t in sample.tolerances.items()},
        "build_seconds": round(time.perf_counter() - t_start, 1),
    }
    _prepare_out(out)
    bundle = Bundle.write(
        out,
        models=models,
        feature_spec=msgspec.to_builtins(spec),
        model_version=version,
        task=task.value,
        n_features=spec.n_features,
        n_outputs=obj.n_outputs,
        labels=obj.labels,
        metrics=metrics,
        parity=[c.result() for c in checks],
        versions=_versions(),
        data=data,
        extra_files={
            PARITY_FILE: sample.to_json(),
            DESCRIPTOR_FILE: _descriptor(obj, spec, version),
        },
    )
    log(f"wrote {bundle.path} ({version}) in {time.perf_counter() - t_start:.0f}s")

    teacher_path = None
    if teacher_out is not None:
        t_out = Path(teacher_out)
        _write_teacher(t_out, obj, spec, teacher, version, teacher_test)
        teacher_path = str(t_out)
        log(f"wrote teacher bundle {t_out}")
    return BuildResult(
        path=str(bundle.path),
        model_version=version,
        metrics=metrics,
        parity=checks,
        teacher_path=teacher_path,
    )
