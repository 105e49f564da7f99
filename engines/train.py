"""The model pipeline: feed → dataset → teacher → distilled student → ONNX → bundle.

``build_bundle(feed, out, BuildConfig(...))`` runs, seeded and single-threaded by default
(so the same feed and config give the same weights and the same ONNX bytes on one host):

1. :func:`engines.dataset.build_dataset`: rows through ``schemas.features``, time split
   (train = first ``train_frac`` of time, test = the rest), labels/targets, purge.
   The last ``val_frac`` of the train period (by time) is held out for model selection
   (the best epoch by validation macro-F1 / MAE is kept); the test rows are touched only
   to report metrics.
2. Teacher (:mod:`engines.models`): DeepLOB-style conv + GRU (trading, class-weighted
   cross-entropy) or a GRU forecaster (sensor, MSE).
3. Student: an MLP distilled from the teacher's outputs on the training rows
   (temperature-scaled KL + class-weighted CE; MSE to teacher + MSE to target).
   Optional magnitude pruning (``prune``) with ``prune_epochs`` of masked fine-tuning.
4. Export (:mod:`engines.export`): FP32 ONNX (softmax included for trading), INT8 Q/DQ
   calibrated on training rows, FP16; each is scored on the test rows with ONNX Runtime
   and kept only within its margin of the FP32 student (``int8_margin``/``fp16_margin``:
   macro-F1 points for trading, relative MAE for sensor).
5. Parity (:mod:`engines.parity`): a held-out sample through ``OnnxEngine`` at every
   bucket against PyTorch; the sample ships in the bundle for ``weir model verify``.
6. Sensor: ``alert_threshold`` = the ``alert_quantile`` quantile of the student's score
   ``|last_z - forecast|`` on the training rows.
7. ``Bundle.write``: ONNX + JSON, metrics, parity, dataset description, versions.
"""

from __future__ import annotations

import copy
import hashlib
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import numpy as np

from engines.bundle import Bundle, sha256_file
from engines.dataset import (
    TRADING_LABELS,
    Dataset,
    Samples,
    SplitMode,
    build_dataset,
    column_stats,
    infer_task,
    split_times,
)
from engines.errors import EngineError
from engines.export import (
    export_onnx,
    finish_pruning,
    onnx_outputs,
    prune_magnitude,
    quantize_int8,
    to_fp16,
)
from engines.models import (
    DEFAULT_ALPHA,
    DEFAULT_STUDENT_HIDDEN,
    DEFAULT_TEMPERATURE,
    class_weights,
    count_params,
    deeplob_teacher,
    distill_loss,
    exported,
    forecast_distill_loss,
    gru_forecaster,
    mlp_student,
    torch_module,
)
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

Log = Callable[[str], None]
EVAL_BATCH: Final = 4096
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


# -- metrics ---------------------------------------------------------------------------


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


def task_metric(task: Task, y: np.ndarray, out: np.ndarray) -> float:
    """Macro-F1 of arg-maxes (trading, higher is better) or MAE of ``out[:, 0]`` (sensor)."""
    if task is Task.TRADING:
        return macro_f1(y, out.argmax(axis=1))
    return float(np.mean(np.abs(out[:, 0].astype(np.float64) - y)))


def _better(task: Task, new: float, best: float) -> bool:
    return new > best if task is Task.TRADING else new < best


# -- torch helpers ---------------------------------------------------------------------


def seed_everything(seed: int, threads: int) -> Any:
    """Seed torch, fix its threads, make it deterministic; return ``torch``."""
    torch = torch_module()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return torch


def predict(model: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """``model`` outputs on ``x`` (eval mode, no grad), float32."""
    torch = torch_module()
    model.eval()
    with torch.inference_mode():
        outs = [
            model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))).numpy()
            for i in range(0, x.shape[0], batch)
        ]
    if not outs:
        return np.zeros((0, 1), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def fit(
    model: Any,
    loss_fn: Callable[[Any, np.ndarray], Any],
    x: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    rng: np.random.Generator,
    evaluate: Callable[[Any], float],
    task: Task,
    name: str,
    log: Log,
) -> tuple[Any, list[dict[str, float]]]:
    """Adam over shuffled mini-batches; keep the weights of the best validation epoch.

    ``loss_fn(outputs, batch_indices)`` gives the loss of a batch. Returns the model (best
    weights loaded) and the per-epoch history.
    """
    torch = torch_module()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    xt = torch.from_numpy(x)
    best = -math.inf if task is Task.TRADING else math.inf
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    n = x.shape[0]
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[torch.from_numpy(idx)]), idx)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
        sched.step()
        val = evaluate(model)
        kept = _better(task, val, best)
        if kept:
            best = val
            best_state = copy.deepcopy(model.state_dict())
        metric = "val macro-F1" if task is Task.TRADING else "val MAE"
        log(
            f"{name} epoch {epoch}/{epochs}  loss {total / max(n, 1):.4f}  {metric} {val:.4f}"
            f"{'  *' if kept else ''}  {time.perf_counter() - t0:.1f}s"
        )
        history.append({"epoch": epoch, "loss": total / max(n, 1), "val": val})
    model.load_state_dict(best_state)
    model.eval()
    return model, history


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


def _fmt(task: Task, v: float) -> str:
    return f"macro-F1 {v:.4f}" if task is Task.TRADING else f"MAE {v:.4f}"


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
    torch = seed_everything(cfg.seed, cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    trading = task is Task.TRADING

    log(f"dataset: {feed} task={task.value} window={spec.window} n_features={spec.n_features}")
    ds: Dataset = build_dataset(
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
        f"test {info.test_rows}"
        + (
            f", horizon {info.horizon}, theta {info.theta_bps:.4g} bps ({info.theta_rule}), "
            f"train classes {info.train_class_counts}, test classes {info.test_class_counts}"
            if trading
            else ""
        )
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
    mean, std = column_stats(fit_rows.x, spec.row_width)
    n_out = 3 if trading else 1

    # -- teacher -------------------------------------------------------------------
    if trading:
        teacher = deeplob_teacher(
            spec.window,
            spec.row_width,
            mean,
            std,
            channels=cfg.teacher_channels,
            hidden=cfg.teacher_hidden,
        )
        cw = class_weights(fit_rows.y, 3)
        weight = torch.from_numpy(cw)
        y_fit = torch.from_numpy(fit_rows.y)

        def teacher_loss(o: Any, idx: np.ndarray) -> Any:
            return torch.nn.functional.cross_entropy(o, y_fit[torch.from_numpy(idx)], weight=weight)

    else:
        teacher = gru_forecaster(spec.window, spec.row_width, mean, std)
        cw = np.ones(1, dtype=np.float32)
        y_fit = torch.from_numpy(fit_rows.y.astype(np.float32))

        def teacher_loss(o: Any, idx: np.ndarray) -> Any:
            return torch.nn.functional.mse_loss(o[:, 0], y_fit[torch.from_numpy(idx)])

    def on_val(model: Any) -> float:
        return task_metric(task, val_rows.y, predict(model, val_rows.x))

    log(f"teacher: {type(teacher).__name__} {count_params(teacher):,} params")
    teacher, t_hist = fit(
        teacher,
        teacher_loss,
        fit_rows.x,
        epochs=cfg.teacher_epochs,
        lr=cfg.teacher_lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        rng=rng,
        evaluate=on_val,
        task=task,
        name="teacher",
        log=log,
    )
    soft = torch.from_numpy(predict(teacher, fit_rows.x))

    # -- student -------------------------------------------------------------------
    student = mlp_student(spec.n_features, n_out, mean, std, cfg.student_hidden)

    if trading:

        def student_loss(o: Any, idx: np.ndarray) -> Any:
            i = torch.from_numpy(idx)
            return distill_loss(
                o,
                soft[i],
                y_fit[i],
                temperature=cfg.temperature,
                alpha=cfg.alpha,
                weight=weight,
            )

    else:

        def student_loss(o: Any, idx: np.ndarray) -> Any:
            i = torch.from_numpy(idx)
            return forecast_distill_loss(o, soft[i], y_fit[i], alpha=cfg.alpha)

    log(f"student: MLP {cfg.student_hidden} {count_params(student):,} params")
    student, s_hist = fit(
        student,
        student_loss,
        fit_rows.x,
        epochs=cfg.student_epochs,
        lr=cfg.student_lr,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        rng=rng,
        evaluate=on_val,
        task=task,
        name="student",
        log=log,
    )

    metrics: dict[str, float] = {}
    key = "macro_f1" if trading else "mae"
    teacher_test = task_metric(task, test.y, predict(teacher, test.x))
    student_out = predict(student, test.x)
    student_test = task_metric(task, test.y, student_out)
    prune_hist: list[dict[str, float]] = []
    if cfg.prune > 0.0:
        metrics[f"student_unpruned_test_{key}"] = student_test
        prune_magnitude(student, cfg.prune)
        student, prune_hist = fit(
            student,
            student_loss,
            fit_rows.x,
            epochs=cfg.prune_epochs,
            lr=cfg.student_lr / 3,
            weight_decay=0.0,
            batch_size=cfg.batch_size,
            rng=rng,
            evaluate=on_val,
            task=task,
            name="pruned student",
            log=log,
        )
        sparsity = finish_pruning(student)
        student_out = predict(student, test.x)
        student_test = task_metric(task, test.y, student_out)
        metrics["student_sparsity"] = sparsity
        log(
            f"pruned {sparsity:.0%} of student weights: test {_fmt(task, student_test)} "
            f"(unpruned {_fmt(task, metrics[f'student_unpruned_test_{key}'])})"
        )

    metrics |= {
        f"teacher_test_{key}": teacher_test,
        f"student_test_{key}": student_test,
        "teacher_params": float(count_params(teacher)),
        "student_params": float(count_params(student)),
    }
    if trading:
        metrics["student_f1_retention"] = student_test / teacher_test if teacher_test else 0.0
        metrics["theta_bps"] = info.theta_bps
        metrics["horizon_events"] = float(info.horizon)
        for name, f1 in zip(
            TRADING_LABELS, per_class_f1(test.y, student_out.argmax(1)), strict=True
        ):
            metrics[f"student_test_f1_{name}"] = f1
    log(f"test: teacher {_fmt(task, teacher_test)}, student {_fmt(task, student_test)}")

    # -- export --------------------------------------------------------------------
    ref_model = exported(student, softmax=trading)
    fp32 = export_onnx(ref_model, spec.n_features)
    models: dict[str, bytes] = {"fp32": fp32}
    ort_fp32 = onnx_outputs(fp32, test.x)
    metrics[f"fp32_test_{key}"] = task_metric(task, test.y, ort_fp32)
    calib = fit_rows.x[
        np.sort(rng.choice(len(fit_rows), min(CALIBRATION_ROWS, len(fit_rows)), replace=False))
    ]
    variants: list[tuple[str, Callable[[], bytes], float]] = []
    if cfg.int8:
        variants.append(("int8", lambda: quantize_int8(fp32, calib), cfg.int8_margin))
    if cfg.fp16:
        variants.append(("fp16", lambda: to_fp16(fp32), cfg.fp16_margin))
    base = metrics[f"fp32_test_{key}"]
    for precision, make, margin in variants:
        raw = make()
        got = task_metric(task, test.y, onnx_outputs(raw, test.x))
        metrics[f"{precision}_test_{key}"] = got
        within = got >= base - margin if trading else got <= base * (1.0 + margin)
        metrics[f"{precision}_within_margin"] = float(within)
        rule = f"-{margin} macro-F1" if trading else f"+{margin:.0%} MAE"
        log(
            f"{precision}: test {_fmt(task, got)} vs fp32 {_fmt(task, base)} "
            f"(margin {rule}): {'kept' if within else 'DROPPED'}"
        )
        if within:
            models[precision] = raw

    if not trading:
        scores = np.abs(fit_rows.y - predict(student, fit_rows.x)[:, 0])
        metrics["alert_threshold"] = float(np.quantile(scores, cfg.alert_quantile))
        metrics["alert_quantile"] = cfg.alert_quantile
        log(
            f"alert threshold {metrics['alert_threshold']:.3f} "
            f"(train score quantile {cfg.alert_quantile})"
        )

    # -- parity --------------------------------------------------------------------
    pick = np.sort(rng.choice(len(test), min(cfg.parity_rows, len(test)), replace=False))
    rows = np.ascontiguousarray(test.x[pick])
    sample = ParitySample(
        rows=Array.of(rows),
        reference=Array.of(predict(ref_model, rows)),
        outputs={p: Array.of(onnx_outputs(m, rows)) for p, m in models.items() if p != "fp32"},
        tolerances={p: TOLERANCES[p] for p in models},
        classification=trading,
    )
    checks = check_parity(models, sample)
    log(format_checks(checks))
    failed = [c.precision for c in checks if not c.ok]
    if failed:
        raise EngineError(f"parity failed for {failed}:\n{format_checks(checks)}")
    fp32_check = next(c for c in checks if c.precision == "fp32")
    metrics["parity_fp32_max_abs_diff"] = fp32_check.max_abs_diff

    # -- bundle --------------------------------------------------------------------
    digest = hashlib.sha256(fp32).hexdigest()[:12]
    version = cfg.model_version or f"{task.value}-w{spec.window}-{digest}"
    data = {
        "dataset": msgspec.to_builtins(info),
        "feed_sha256": sha256_file(Path(feed)),
        "config": msgspec.to_builtins(cfg),
        "teacher": {
            "model": type(teacher).__name__,
            "history": t_hist,
            "loss": "class-weighted cross-entropy" if trading else "MSE",
            "class_weights": cw.tolist(),
        },
        "student": {
            "model": f"MLP {list(cfg.student_hidden)}",
            "history": s_hist + prune_hist,
            "loss": (
                f"{cfg.alpha} * T^2 * KL(teacher/T || student/T) + {1 - cfg.alpha} * "
                f"weighted CE, T={cfg.temperature}"
                if trading
                else f"{cfg.alpha} * MSE(teacher) + {1 - cfg.alpha} * MSE(target)"
            ),
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
        n_outputs=n_out,
        labels=TRADING_LABELS if trading else (),
        metrics=metrics,
        parity=[c.result() for c in checks],
        versions=_versions(),
        data=data,
        extra_files={PARITY_FILE: sample.to_json()},
    )
    log(f"wrote {bundle.path} ({version}) in {time.perf_counter() - t_start:.0f}s")

    teacher_path = None
    if teacher_out is not None:
        t_out = Path(teacher_out)
        _prepare_out(t_out)
        Bundle.write(
            t_out,
            models={"fp32": export_onnx(exported(teacher, softmax=trading), spec.n_features)},
            feature_spec=msgspec.to_builtins(spec),
            model_version=f"{version}-teacher",
            task=task.value,
            n_features=spec.n_features,
            n_outputs=n_out,
            labels=TRADING_LABELS if trading else (),
            metrics={f"teacher_test_{key}": teacher_test},
            versions=_versions(),
            data={"note": "teacher of " + version + ", for latency comparison only"},
        )
        teacher_path = str(t_out)
        log(f"wrote teacher bundle {t_out}")
    return BuildResult(
        path=str(bundle.path),
        model_version=version,
        metrics=metrics,
        parity=checks,
        teacher_path=teacher_path,
    )
