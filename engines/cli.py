"""``weir model``: inspect and profile model bundles.

    weir model describe BUNDLE [--engine onnx]        bundle metadata + engine description
    weir model profile BUNDLE [--engine onnx --threads N --spinning --max-batch 64
                              --iterations 500 --precision fp32 --save]
                                                      per-bucket p50/p99/p99.9 table

    weir model build --feed FEED --out DIR [--task trading|sensor --window N --horizon K
                     --theta-bps X --epochs N --teacher-epochs N --student-epochs N
                     --temperature T --alpha A --prune F --seed S --threads N ...]
                                                      train, distil, export, quantize, bundle
    weir model verify BUNDLE                          ONNX Runtime parity against the stored
                                                      sample at every bucket; exit 1 on mismatch
    weir model eval BUNDLE --feed FEED --train-feed TRAIN [--teacher T --rows all|test
                    --precision fp32 --json OUT]      macro-F1 and per-class P/R/F1 of the
                                                      bundle, its teacher, the majority class
                                                      and the level-1 imbalance rule on FEED

``build`` needs the ``train`` extra (PyTorch) and imports it only when run
(``engines.train``); ``verify`` and ``eval`` need onnxruntime only (``engines.parity``,
``engines.evaluation``).
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from engines.base import DEFAULT_MAX_BATCH, Engine
from engines.bundle import Bundle
from engines.profile import format_stats
from engines.registry import ENGINE_KINDS, load_engine


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.engine == "onnx":
        return {"threads": args.threads, "spinning": args.spinning}
    return {}


def _open(bundle: Bundle, args: argparse.Namespace) -> Engine:
    return load_engine(
        bundle,
        args.engine,
        precision=args.precision,
        max_batch=args.max_batch,
        options=_engine_options(args),
    )


def _add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--engine", choices=ENGINE_KINDS, default="onnx", help="default: onnx")
    p.add_argument("--precision", default="fp32", help="model precision (default: fp32)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=DEFAULT_MAX_BATCH,
        help=f"largest bucket (default: {DEFAULT_MAX_BATCH})",
    )
    p.add_argument("--threads", type=int, default=1, help="onnx intra-op threads (default: 1)")
    p.add_argument(
        "--spinning", action="store_true", help="let onnx pool threads spin (default: off)"
    )


def _describe(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    meta = bundle.metadata
    summary = {
        "path": str(bundle.path),
        "model_version": meta.model_version,
        "task": meta.task,
        "labels": meta.labels,
        "n_features": meta.n_features,
        "n_outputs": meta.n_outputs,
        "models": meta.models,
        "files": {name: d.sha256 for name, d in meta.files.items()},
        "metrics": meta.metrics,
        "profiles": [f"{p.engine}/{p.precision}/{p.device}" for p in meta.profiles],
    }
    engine = _open(bundle, args)
    try:
        info = engine.describe()
    finally:
        engine.close()
    out = {"bundle": summary, "engine": info}
    print(msgspec.json.format(msgspec.json.encode(out), indent=2).decode())
    return 0


def _profile(args: argparse.Namespace) -> int:
    bundle = Bundle.load(args.bundle)
    engine = _open(bundle, args)
    try:
        profile = engine.warm_up(args.iterations)
        info = engine.describe()
    finally:
        engine.close()
    opts = " ".join(f"{k}={v}" for k, v in sorted(info.options.items()))
    print(f"{info.kind} {info.precision} on {info.device} ({opts})")
    print(format_stats(profile.stats()))
    if args.save:
        bundle.record_profile(info.kind, info.precision, info.device, profile, info.options)
        print(f"saved to {bundle.path / 'metadata.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``model`` group to the ``weir`` parser."""
    group = subparsers.add_parser("model", help="inspect and profile model bundles")
    actions = group.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    describe = actions.add_parser("describe", help="print a bundle's metadata and engine")
    _add_engine_arguments(describe)
    describe.set_defaults(func=_describe)

    profile = actions.add_parser("profile", help="measure p50/p99/p99.9 per batch bucket")
    _add_engine_arguments(profile)
    profile.add_argument(
        "--iterations", type=int, default=500, help="timed runs per bucket (default: 500)"
    )
    profile.add_argument(
        "--save", action="store_true", help="store the profile in the bundle's metadata.json"
    )
    profile.set_defaults(func=_profile)

    _register_build(actions)
    _register_verify(actions)
    _register_eval(actions)


# -- the model pipeline: build and verify ----------------------------------------------


def _build(args: argparse.Namespace) -> int:
    import sys

    from engines.errors import EngineError
    from engines.train import BuildConfig, build_bundle

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    teacher_epochs = args.teacher_epochs if args.teacher_epochs is not None else args.epochs
    student_epochs = args.student_epochs if args.student_epochs is not None else 2 * args.epochs
    cfg = BuildConfig(
        task=args.task,
        window=args.window,
        horizon=args.horizon,
        theta_bps=args.theta_bps,
        train_frac=args.train_frac,
        split=args.split,
        teacher_epochs=teacher_epochs,
        student_epochs=student_epochs,
        batch_size=args.batch_size,
        temperature=args.temperature,
        alpha=args.alpha,
        student_hidden=tuple(args.hidden),
        drop_features=tuple(args.drop_features),
        relative_features=(
            tuple(args.relative_features) if args.relative_features is not None else None
        ),
        prune=args.prune,
        int8=not args.no_int8,
        fp16=not args.no_fp16,
        alert_quantile=args.alert_quantile,
        max_events=args.max_events,
        max_train_rows=args.max_train_rows,
        seed=args.seed,
        threads=args.threads,
        model_version=args.model_version,
    )
    try:
        result = build_bundle(args.feed, args.out, cfg, log=log, teacher_out=args.teacher_out)
    except EngineError as exc:
        print(f"weir model build: {exc}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {
        "bundle": result.path,
        "model_version": result.model_version,
        "metrics": result.metrics,
    }
    if result.teacher_path:
        summary["teacher_bundle"] = result.teacher_path
    print(msgspec.json.format(msgspec.json.encode(summary), indent=2).decode())
    return 0


def _register_build(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engines.models import DEFAULT_ALPHA, DEFAULT_STUDENT_HIDDEN, DEFAULT_TEMPERATURE

    p = actions.add_parser(
        "build",
        help="train a teacher, distil a student, export ONNX (fp32/int8/fp16) into a bundle",
    )
    p.add_argument("--feed", required=True, help="feed file (Parquet) to train on")
    p.add_argument("--out", required=True, help="bundle directory to write (emptied first)")
    p.add_argument("--task", choices=("trading", "sensor"), help="default: from the feed")
    p.add_argument("--window", type=int, default=32, help="events per window (default: 32)")
    p.add_argument(
        "--horizon", type=int, default=20, help="trading label horizon in events (default: 20)"
    )
    p.add_argument(
        "--theta-bps",
        type=float,
        help="trading HOLD band in bps (default: balanced on the training rows)",
    )
    p.add_argument(
        "--train-frac", type=float, default=0.7, help="train on this first part of time (0.7)"
    )
    p.add_argument(
        "--split",
        choices=("global", "key"),
        default="global",
        help="time split over the whole feed or per key (default: global)",
    )
    p.add_argument(
        "--epochs", type=int, default=6, help="teacher epochs; the student gets twice (6)"
    )
    p.add_argument("--teacher-epochs", type=int, help="override the teacher's epochs")
    p.add_argument("--student-epochs", type=int, help="override the student's epochs")
    p.add_argument("--batch-size", type=int, default=256, help="mini-batch (default: 256)")
    p.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help=f"distillation temperature (default: {DEFAULT_TEMPERATURE})",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help=f"weight of the soft (teacher) loss (default: {DEFAULT_ALPHA})",
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(DEFAULT_STUDENT_HIDDEN),
        help=f"student hidden widths (default: {' '.join(map(str, DEFAULT_STUDENT_HIDDEN))})",
    )
    p.add_argument(
        "--drop-features",
        nargs="+",
        default=[],
        metavar="COLUMN",
        help="row columns the models never see, e.g. symbol-scaled spread_bps (default: none)",
    )
    p.add_argument(
        "--relative-features",
        nargs="*",
        metavar="COLUMN",
        help="row columns divided by their window's mean magnitude inside the models; "
        "none given: no column (default: trading mid_ret_bps spread_bps "
        "signed_log_trade trade_dev_bps log_gap_ms, sensor none)",
    )
    p.add_argument(
        "--prune", type=float, default=0.0, help="magnitude-prune this fraction (default: 0)"
    )
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 model")
    p.add_argument("--no-fp16", action="store_true", help="skip the FP16 model")
    p.add_argument(
        "--alert-quantile",
        type=float,
        default=0.995,
        help="sensor: alert threshold = this quantile of train scores (default: 0.995)",
    )
    p.add_argument("--max-events", type=int, help="read at most this many feed events")
    p.add_argument("--max-train-rows", type=int, help="keep at most this many train rows")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--model-version", help="default: <task>-w<window>-<onnx sha256[:12]>")
    p.add_argument("--teacher-out", help="also write the teacher as a bundle (latency checks)")
    p.set_defaults(func=_build)


def _verify(args: argparse.Namespace) -> int:
    import sys

    from engines.errors import BundleError, EngineError
    from engines.parity import format_checks, verify_bundle

    try:
        checks = verify_bundle(args.bundle, threads=args.threads)
    except (BundleError, EngineError) as exc:
        print(f"weir model verify: {exc}", file=sys.stderr)
        return 1
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1


def _register_verify(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "verify", help="re-run ONNX Runtime parity against the bundle's stored sample"
    )
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--threads", type=int, default=1, help="onnx intra-op threads (default: 1)")
    p.set_defaults(func=_verify)


def _eval(args: argparse.Namespace) -> int:
    import sys

    from engines.errors import EngineError
    from engines.evaluation import evaluate, format_evaluation

    try:
        ev = evaluate(
            args.bundle,
            args.feed,
            train_feed=args.train_feed,
            teacher_path=args.teacher,
            rows=args.rows,
            precision=args.precision,
        )
    except EngineError as exc:
        print(f"weir model eval: {exc}", file=sys.stderr)
        return 1
    print(format_evaluation(ev))
    if args.json:
        from pathlib import Path

        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(ev), indent=2))
        print(f"wrote {args.json}")
    return 0


def _register_eval(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "eval",
        help="a trading bundle's macro-F1 per class on a feed, next to the baselines",
    )
    p.add_argument("bundle", help="bundle directory (built by weir model build)")
    p.add_argument("--feed", required=True, help="feed file (Parquet) to score on")
    p.add_argument(
        "--train-feed",
        required=True,
        help="the feed the bundle was trained on (its sha256 is checked): the imbalance "
        "rule's thresholds and the majority class are chosen on its training rows",
    )
    p.add_argument("--teacher", help="teacher bundle (weir model build --teacher-out)")
    p.add_argument(
        "--rows",
        choices=("all", "test"),
        default="all",
        help="all labelled rows, or only those after the bundle's time split (default: all)",
    )
    p.add_argument("--precision", default="fp32", help="bundle model to score (default: fp32)")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.set_defaults(func=_eval)
