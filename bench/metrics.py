"""Metrics overhead per event, in process: the pipeline with and without its observer.

Run from the repository root::

    python -m bench.metrics                    # fake engine (no model cost), 100k events x 7
    python -m bench.metrics --engine onnx      # a tiny ONNX MLP instead
    python -m bench.metrics --events 200000 --rounds 9

Variants, interleaved round by round so machine noise hits them alike:

- ``head``: ``service/pipeline.py`` as committed at git ``HEAD`` (before metrics), when git
  is there and that file still imports;
- ``off``: this tree's pipeline, ``observer=None`` (only the per-(topic, kind) counter);
- ``on``: this tree's pipeline with ``observer=Metrics(...)`` (per-batch stage histograms).

Records go in at the maximum rate (chunks of ``--chunk``, one loop turn between chunks),
then the pipeline drains. Figures are CPU ns per event (``process_time``; less sensitive
to other tenants than wall time) and wall ns per event, median over rounds. Also the cost
of one ``/metrics`` render. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engines.fake import FakeEngine, LatencyModel, tiny_mlp_onnx
from engines.head import Head
from engines.onnx import OnnxEngine
from schemas.codec import event_codec
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.memory import MemoryRecord
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import load_settings
from service.view import InMemoryView

TOPIC = "weir.events"


class NullSink:
    """Acknowledges every message at once and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    async def send(
        self, topic: str, key: Any, value: bytes, headers: Any, token: Any, on_ack: Any
    ) -> None:
        self.count += 1
        on_ack(token, None)

    async def flush(self) -> None:
        return None


def _records(n: int, keys: int) -> list[MemoryRecord]:
    rng = np.random.default_rng(7)
    mids = 100.0 + np.cumsum(rng.normal(0, 0.01, n))
    codec = event_codec()
    now_ms = time.time_ns() // 1_000_000
    return [
        MemoryRecord(
            TOPIC,
            i % 4,
            i,
            codec.encode(
                Quote(
                    symbol=f"SYM{i % keys}",
                    bid_px=float(mids[i]) - 0.01,
                    bid_qty=1.0,
                    ask_px=float(mids[i]) + 0.01,
                    ask_qty=2.0,
                )
            ),
            timestamp=now_ms,
        )
        for i in range(n)
    ]


def _head_pipeline() -> ModuleType | None:
    try:
        src = subprocess.run(
            ["git", "show", "HEAD:service/pipeline.py"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "_pipeline_head.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("_pipeline_head", path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except ImportError:
        return None
    return mod


def _engine(kind: str, spec: FeatureSpec) -> Any:
    if kind == "onnx":
        path = Path(tempfile.mkdtemp()) / "m.onnx"
        path.write_bytes(tiny_mlp_onnx(spec.n_features, (64, 32), 3))
        eng: Any = OnnxEngine(path, max_batch=64, threads=1)
    else:
        eng = FakeEngine(
            n_features=spec.n_features,
            n_outputs=3,
            max_batch=64,
            latency=LatencyModel(base_ns=20_000, per_row_ns=0),
        )
    eng.warm_up(50)
    return eng


async def _once(
    variant: str, cls: Any, engine: Any, spec: FeatureSpec, records: list[MemoryRecord], chunk: int
) -> tuple[float, float, float]:
    settings = load_settings(
        env={
            "WEIR_SCHEDULER__BUDGET_MS": "1000",
            "WEIR_SCHEDULER__MAX_QUEUE": str(len(records) + 1),
            "WEIR_ENGINE__MAX_BATCH": "64",
        }
    )
    head = Head("trading", ["SELL", "HOLD", "BUY"])
    kw: dict[str, Any] = {}
    metrics = None
    if variant == "on":
        view = InMemoryView(settings, engine, None, "bench")
        metrics = Metrics(view)
        kw["observer"] = metrics
    pipe = cls(
        settings=settings,
        engine=engine,
        head=head,
        spec=spec,
        sink=NullSink(),
        model_version="bench",
        **kw,
    )
    if metrics is not None:
        metrics.view.pipeline = pipe  # type: ignore[misc]
    pipe.start()
    gc.collect()
    gc.disable()
    c0, w0 = time.process_time_ns(), time.perf_counter_ns()
    try:
        for i in range(0, len(records), chunk):
            await pipe.ingest(records[i : i + chunk])
            await asyncio.sleep(0)
        assert await pipe.drain(60.0)
        c1, w1 = time.process_time_ns(), time.perf_counter_ns()
    finally:
        gc.enable()
    render_us = 0.0
    if metrics is not None:
        t = time.perf_counter_ns()
        for _ in range(20):
            metrics.render()
        render_us = (time.perf_counter_ns() - t) / 20 / 1e3
    await pipe.close()
    n = len(records)
    return (c1 - c0) / n, (w1 - w0) / n, render_us


def _isolated(engine: Any, batch: int, reps: int = 20_000) -> tuple[float, float]:
    """CPU ns per event of the observer alone (``on_batch`` + ``on_published`` of a full
    batch) and of the per-(topic, kind) counter line of ``ingest``."""
    from service.scheduler.base import Item
    from service.scheduler.deadline import Deadline

    settings = load_settings(env={})
    metrics = Metrics(InMemoryView(settings, engine, None, "bench"))
    items = [Item(i, f"K{i}", Deadline(0)) for i in range(batch)]
    now = time.monotonic_ns()
    ingest = [now - 50_000 - 1_000 * i for i in range(batch)]
    wall = time.time_ns()
    kafka: list[int | None] = [wall - 2_000_000] * batch
    source: list[int | None] = [wall - 3_000_000] * batch
    t0 = time.process_time_ns()
    for _ in range(reps):
        metrics.on_batch(batch, items, ingest, kafka, source, now, now + 40_000)
        metrics.on_published(now + 60_000, wall - now)
    observer = (time.process_time_ns() - t0) / reps / batch
    kinds: dict[tuple[str, type | None], int] = {}
    event = Quote(symbol="K", bid_px=1.0, bid_qty=1.0, ask_px=1.0, ask_qty=1.0)
    topic = TOPIC
    n = reps * batch
    t0 = time.process_time_ns()
    for _ in range(n):
        tk = (topic, type(event))
        kinds[tk] = kinds.get(tk, 0) + 1
    t1 = time.process_time_ns()
    for _ in range(n):
        pass
    t2 = time.process_time_ns()
    return observer, ((t1 - t0) - (t2 - t1)) / n


async def _main(args: argparse.Namespace) -> None:
    spec = FeatureSpec(task=Task.TRADING, window=16)
    engine = _engine(args.engine, spec)
    records = _records(args.events, args.keys)
    variants: dict[str, Any] = {}
    head = _head_pipeline() if not args.no_head else None
    if head is not None:
        variants["head"] = head.Pipeline
    variants["off"] = Pipeline
    variants["on"] = Pipeline
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    wall: dict[str, list[float]] = {v: [] for v in variants}
    render: list[float] = []
    for name, cls in variants.items():  # warm caches and the JIT-less interpreter alike
        await _once(name, cls, engine, spec, records[: min(5000, len(records))], args.chunk)
    for r in range(args.rounds):
        order = list(variants.items())
        if r % 2:
            order.reverse()
        for name, cls in order:
            c, w, ru = await _once(name, cls, engine, spec, records, args.chunk)
            cpu[name].append(c)
            wall[name].append(w)
            if ru:
                render.append(ru)
    print(
        f"engine={args.engine} events={args.events} chunk={args.chunk} keys={args.keys} "
        f"rounds={args.rounds} python={sys.version.split()[0]}"
    )
    print(f"{'variant':<8} {'cpu ns/event':>13} {'wall ns/event':>14} {'cpu IQR':>9}")
    for name in variants:
        q = np.percentile(cpu[name], [25, 75])
        print(
            f"{name:<8} {statistics.median(cpu[name]):>13.0f} "
            f"{statistics.median(wall[name]):>14.0f} {q[1] - q[0]:>9.0f}"
        )
    on, off = statistics.median(cpu["on"]), statistics.median(cpu["off"])
    print(f"observer on - off: {on - off:+.0f} cpu ns/event ({(on - off) / off * 100:+.1f} %)")
    if "head" in cpu:
        base = statistics.median(cpu["head"])
        print(
            f"on - head:         {on - base:+.0f} cpu ns/event ({(on - base) / base * 100:+.1f} %)"
        )
    print(f"/metrics render: {statistics.median(render):.0f} us (median)")
    obs = [_isolated(engine, b) for b in (1, 8, 64)]
    print(
        "isolated, cpu ns/event: observer at batch 1/8/64 = "
        + "/".join(f"{o:.0f}" for o, _ in obs)
        + f"; kind counter = {statistics.median(k for _, k in obs):.0f}"
    )


def main() -> None:
    """Parse arguments and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", choices=("fake", "onnx"), default="fake")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--keys", type=int, default=64)
    p.add_argument("--no-head", action="store_true", help="skip the git HEAD variant")
    asyncio.run(_main(p.parse_args()))


if __name__ == "__main__":
    main()
