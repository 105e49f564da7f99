"""Engine latency per bucket, and what ONNX Runtime's thread spinning costs the process.

Run from the repository root (as a module: ``bench/engines.py`` would shadow the package)::

    python -m bench.engines                  # built-in MLP 64 -> 128 -> 64 -> 3 (+ its INT8)
    python -m bench.engines BUNDLE           # a bundle's fp32 model (and its int8 if listed)
    python -m bench.engines --int8 q.onnx    # also time a quantized ONNX model

Part 1, closed loop: every engine/precision/thread setting available here runs each bucket
``--iterations`` times back to back; p50/p99 per bucket in microseconds.

Part 2, the service's situation: one worker thread calls ``infer`` (bucket
``--paced-bucket``) at a fixed rate with idle gaps, beside a thread standing in for the
asyncio loop (wakes every 500 us, runs ~100 us of Python). Printed per setting: infer
p50/p99, the process's CPU use in cores (CPU time / wall time), the loop's wake-up lag
p99 and its burst duration p50/p99. Spinning pool threads show up as cores burnt in the
idle gaps and as a later, slower loop. Figures are measurements of this host at this
moment; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines import Bundle, Engine, FakeEngine, LatencyModel, OnnxEngine, tiny_mlp_onnx
from engines.profile import bucket_sizes

N_FEATURES = 64


@dataclass(frozen=True)
class Setting:
    """One engine configuration to time."""

    label: str
    make: Callable[[], Engine]


def _quantize(fp32: Path, out: Path, n_features: int) -> bool:
    """Static INT8 (QDQ) quantization of ``fp32`` with random calibration rows."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError:
        return False

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._batches = iter(
                [
                    {"input": rng.standard_normal((32, n_features), dtype=np.float32)}
                    for _ in range(16)
                ]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint per call
    try:
        quantize_static(
            str(fp32),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        root.setLevel(level)
    return True


def _settings(args: argparse.Namespace, work: Path) -> list[Setting]:
    mb = args.max_batch
    version = "builtin-mlp"
    if args.bundle:
        bundle = Bundle.load(args.bundle)
        fp32 = bundle.model_path("fp32")
        version = bundle.metadata.model_version
        int8 = bundle.model_path("int8") if "int8" in bundle.metadata.models else None
    else:
        fp32 = work / "mlp.onnx"
        fp32.write_bytes(tiny_mlp_onnx(N_FEATURES, (128, 64), 3, seed=0))
        int8 = work / "mlp.int8.onnx"
        if not _quantize(fp32, int8, N_FEATURES):
            int8 = None
    if args.int8:
        int8 = Path(args.int8)

    def onnx(path: Path, threads: int, spinning: bool, precision: str) -> Callable[[], Engine]:
        return lambda: OnnxEngine(
            path,
            max_batch=mb,
            threads=threads,
            spinning=spinning,
            precision=precision,
            model_version=version,
        )

    out = [
        Setting(f"onnx fp32 threads=1 spin={s}", onnx(fp32, 1, s, "fp32")) for s in (False, True)
    ]
    out += [
        Setting(f"onnx fp32 threads=2 spin={s}", onnx(fp32, 2, s, "fp32")) for s in (False, True)
    ]
    if int8 is not None:
        out += [Setting("onnx int8 threads=1 spin=False", onnx(int8, 1, False, "int8"))]
        out += [Setting("onnx int8 threads=2 spin=False", onnx(int8, 2, False, "int8"))]
    out += _torch_settings(args, n_features=OnnxEngine(fp32, max_batch=1).n_features)
    out += _gpu_settings(args, fp32)
    n_features = OnnxEngine(fp32, max_batch=1).n_features
    out += [
        Setting(
            "fake spin (lognormal 30us + 0.5us/row)",
            lambda: FakeEngine(
                n_features=n_features,
                max_batch=mb,
                wait="spin",
                latency=LatencyModel(base_ns=30_000, per_row_ns=500, sigma=0.1),
            ),
        )
    ]
    return out


def _torch_settings(args: argparse.Namespace, n_features: int) -> list[Setting]:
    """Torch reference engine (same MLP shape, random weights) where torch is installed."""
    try:
        import torch
    except ImportError:
        return []
    from engines.torch import TorchEngine

    def mlp() -> Any:
        return torch.nn.Sequential(
            torch.nn.Linear(n_features, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 3),
            torch.nn.Softmax(dim=-1),
        )

    out = [
        Setting(
            "torch fp32 cpu eager threads=1",
            lambda: TorchEngine(mlp(), n_features=n_features, max_batch=args.max_batch, threads=1),
        )
    ]
    if torch.cuda.is_available():
        out.append(
            Setting(
                "torch fp32 cuda graphs",
                lambda: TorchEngine(
                    mlp(), n_features=n_features, max_batch=args.max_batch, device="cuda"
                ),
            )
        )
    return out


def _gpu_settings(args: argparse.Namespace, fp32: Path) -> list[Setting]:
    """TensorRT settings where tensorrt and a GPU are present (else none)."""
    try:
        from engines.tensorrt import TensorRTEngine, build_plan, host_plan_key

        host_plan_key()
    except Exception:  # noqa: BLE001 - any failure here means "no GPU engine on this host"
        return []
    buckets = bucket_sizes(args.max_batch)
    plans = {p: build_plan(fp32, buckets=buckets, precision=p) for p in ("fp32", "fp16")}
    return [
        Setting(
            f"tensorrt {p} cuda graphs",
            lambda p=p: TensorRTEngine(plans[p], max_batch=args.max_batch, precision=p),  # type: ignore[misc]
        )
        for p in plans
    ]


@contextlib.contextmanager
def _engine(setting: Setting) -> Iterator[Engine]:
    engine = setting.make()
    try:
        yield engine
    finally:
        engine.close()


def closed_loop(settings: list[Setting], iterations: int) -> None:
    """Part 1: p50/p99 per bucket, back-to-back calls."""
    print(f"== closed loop: {iterations} timed calls per bucket (microseconds) ==")
    for setting in settings:
        with _engine(setting) as engine:
            profile = engine.warm_up(iterations)
            cells = "  ".join(
                f"b{s.bucket}:{s.p50_ns / 1e3:.1f}/{s.p99_ns / 1e3:.1f}" for s in profile.stats()
            )
            print(f"{setting.label:<42} p50/p99  {cells}")


def plain_session_run(setting: Setting, iterations: int) -> None:
    """For comparison: the same session through ``session.run`` (allocates per call)."""
    with _engine(setting) as engine:
        if not isinstance(engine, OnnxEngine):
            return
        sess = engine.session
        cells = []
        for b in engine.buckets:
            feed = {sess.get_inputs()[0].name: engine.input_buffer(b)}
            for _ in range(10):
                sess.run(None, feed)
            t = np.empty(iterations, dtype=np.int64)
            for i in range(iterations):
                t0 = time.perf_counter_ns()
                sess.run(None, feed)
                t[i] = time.perf_counter_ns() - t0
            p50, p99 = np.percentile(t, (50, 99)) / 1e3
            cells.append(f"b{b}:{p50:.1f}/{p99:.1f}")
    label = "onnx fp32 threads=1 session.run (no IOBinding)"
    print(f"{label:<42} p50/p99  {'  '.join(cells)}")


def _loop(stop: threading.Event, lags: list[int], bursts: list[int], period_ns: int) -> None:
    """A stand-in event loop: wake every ``period_ns``, do ~100 us of Python, repeat.

    Records how late each wake-up was (loop lag) and how long each burst took (CPU
    stolen from it shows as longer bursts).
    """
    target = time.perf_counter_ns() + period_ns
    while not stop.is_set():
        delay = target - time.perf_counter_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        woke = time.perf_counter_ns()
        lags.append(max(0, woke - target))
        n = 0
        for i in range(2500):
            n += i
        bursts.append(time.perf_counter_ns() - woke)
        target = max(target + period_ns, time.perf_counter_ns())


def paced(engine: Engine | None, bucket: int, rate_hz: float, seconds: float) -> dict[str, float]:
    """Part 2 for one engine (``None``: the loop alone, the baseline)."""
    stop = threading.Event()
    lat: list[int] = []
    lags: list[int] = []
    bursts: list[int] = []

    def caller() -> None:
        assert engine is not None
        period = 1.0 / rate_hz
        buf = engine.input_buffer(bucket)
        buf[:] = np.random.default_rng(0).standard_normal(buf.shape, dtype=np.float32)
        next_t = time.perf_counter()
        while not stop.is_set():
            t0 = time.perf_counter_ns()
            engine.infer(bucket)
            lat.append(time.perf_counter_ns() - t0)
            next_t += period
            delay = next_t - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    workers = [threading.Thread(target=caller)] if engine is not None else []
    loop = threading.Thread(target=_loop, args=(stop, lags, bursts, 500_000))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for t in [*workers, loop]:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in [*workers, loop]:
        t.join()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0

    def q(xs: list[int], p: float) -> float:
        return float(np.percentile(np.asarray(xs or [0]), p)) / 1e3

    return {
        "p50_us": q(lat, 50),
        "p99_us": q(lat, 99),
        "cores": cpu / wall,
        "lag99_us": q(lags, 99),
        "burst50_us": q(bursts, 50),
        "burst99_us": q(bursts, 99),
    }


def spinning_cost(settings: list[Setting], bucket: int, rate_hz: float, seconds: float) -> None:
    """Part 2: paced calls from a worker thread next to a stand-in event loop thread."""
    print(
        f"\n== paced: bucket {bucket} at {rate_hz:.0f} Hz from a worker thread beside a "
        f"stand-in loop thread (100 us of Python every 500 us), {seconds:.0f} s each =="
    )
    head = ("infer50", "infer99", "cores", "lag99", "burst50", "burst99")
    print(
        f"{'setting (microseconds; cores = CPU s / wall s)':<42} "
        + " ".join(f"{h:>8}" for h in head)
    )

    def row(label: str, r: dict[str, float]) -> None:
        keys = ("p50_us", "p99_us", "cores", "lag99_us", "burst50_us", "burst99_us")
        cells = " ".join(f"{r[k]:>8.2f}" if k == "cores" else f"{r[k]:>8.1f}" for k in keys)
        print(f"{label:<42} {cells}")

    row("(loop alone)", paced(None, bucket, rate_hz, seconds))
    for setting in settings:
        if not setting.label.startswith("onnx fp32"):
            continue
        with _engine(setting) as engine:
            engine.warm_up(50)
            row(setting.label, paced(engine, bucket, rate_hz, seconds))


def main(argv: list[str] | None = None) -> int:
    """Run both parts and print the tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__)
    parser.add_argument("bundle", nargs="?", help="bundle directory (default: built-in MLP)")
    parser.add_argument("--int8", help="a quantized ONNX model to time as well")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--paced-bucket", type=int, default=8)
    parser.add_argument("--rate-hz", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--skip-paced", action="store_true")
    args = parser.parse_args(argv)
    import onnxruntime

    print(
        f"host: {os.cpu_count()} logical CPUs; onnxruntime {onnxruntime.__version__}; "
        f"numpy {np.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(args, Path(tmp))
        closed_loop(settings, args.iterations)
        plain_session_run(settings[0], args.iterations)
        if not args.skip_paced:
            spinning_cost(settings, args.paced_bucket, args.rate_hz, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
