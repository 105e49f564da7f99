"""What trace context costs per event, in process: no headers vs forwarded vs OpenTelemetry.

Run from the repository root::

    python -m bench.trace                         # 40,000 events, 5 rounds
    python -m bench.trace --events 100000 --rounds 7 --chunk 256

No broker: pre-encoded quotes are handed to ``service.pipeline.Pipeline`` in fetch-sized
chunks (the dispatcher runs between chunks), decisions go to a sink that acknowledges at
once, and the engine is ``engines.fake.FakeEngine`` (no inference work), so what is
measured is weir's own per-event path: decode, state, scheduling, decision building and
publishing, plus the trace context. The modes:

- ``none``: records without headers (the path every untraced record takes);
- ``forward``: a ``traceparent`` and a ``tracestate`` on every record, OpenTelemetry off
  (validated at ingest, forwarded unchanged on the decision);
- ``otel-untraced``: OpenTelemetry on, records without headers (one ``weir.batch`` span
  per batch, nothing per event);
- ``otel-links``: OpenTelemetry on with ``event_spans = false``, every record traced (a
  batch span with a link per event; decisions forward the input's context);
- ``otel``: OpenTelemetry on, every record traced (a batch span with a link per event and
  one ``weir.event`` span per event, whose context the decision carries).

Spans go to an in-memory exporter through a ``SimpleSpanProcessor``, so their export is
counted in the process's CPU time too.

The modes run interleaved (each round runs every mode once, in a rotated order) and each
figure is the median of the rounds with its spread (min-max): process CPU time per event
and wall time per event, in microseconds, and the median's difference from ``none``.
Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.openloop import bench_settings
from engines.fake import FakeEngine, LatencyModel
from engines.head import Head
from schemas.codec import event_codec
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.base import BatchTracer
from service.memory import MemoryRecord
from service.pipeline import Pipeline

TOPIC = "weir.events"
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
MODES = ("none", "forward", "otel-untraced", "otel-links", "otel")


class _AckSink:
    """Acknowledges at once; counts decisions and those that carry a traceparent."""

    def __init__(self) -> None:
        self.n = 0
        self.traced = 0

    async def send(
        self, topic: str, key: Any, value: bytes, headers: Any, token: Any, on_ack: Any
    ) -> None:
        self.n += 1
        if len(headers) > 2:
            self.traced += 1
        on_ack(token, None)

    async def flush(self) -> None:
        return None


def _records(n: int, keys: int, traced: bool) -> list[MemoryRecord]:
    enc = event_codec().encode
    headers = [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)] if traced else []
    out = []
    for i in range(n):
        k = f"SYM{i % keys}"
        q = Quote(symbol=k, bid_px=100.0 + i % 7, bid_qty=1.0, ask_px=100.5 + i % 7, ask_qty=2.0)
        out.append(MemoryRecord(TOPIC, 0, i, enc(q), key=k.encode(), timestamp=i, headers=headers))
    return out


def _otel() -> tuple[Callable[[bool], BatchTracer], Callable[[], int]]:
    """A tracer factory (``event_spans``) over an SDK provider exporting to memory, and a
    drain of what it exported (the span count)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from service.otel import OtelBatchTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def drain() -> int:
        n = len(exporter.get_finished_spans())
        exporter.clear()
        return n

    def make(event_spans: bool) -> BatchTracer:
        return OtelBatchTracer(provider.get_tracer("bench"), event_spans=event_spans)

    return make, drain


async def _run(
    records: list[MemoryRecord], tracer: BatchTracer | None, chunk: int, max_batch: int
) -> tuple[float, float, _AckSink]:
    spec = FeatureSpec(task=Task.TRADING, window=8)
    engine = FakeEngine(
        n_features=spec.n_features,
        max_batch=max_batch,
        latency=LatencyModel(base_ns=20_000, per_row_ns=200),
    )
    engine.warm_up(50)
    settings = bench_settings(budget_ms=600_000, max_queue=100_000)
    sink = _AckSink()
    pipe = Pipeline(
        settings=settings,
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=spec,
        sink=sink,
        model_version="bench",
        tracer=tracer,
    )
    pipe.start()
    gc.collect()
    c0 = time.process_time_ns()
    w0 = time.perf_counter_ns()
    for i in range(0, len(records), chunk):
        await pipe.ingest(records[i : i + chunk])
        await asyncio.sleep(0)  # the dispatcher runs the chunk's batches
    await pipe.drain(120.0)
    cpu = (time.process_time_ns() - c0) / 1e3
    wall = (time.perf_counter_ns() - w0) / 1e3
    await pipe.close()
    if sink.n != len(records):
        raise RuntimeError(f"decided {sink.n} of {len(records)} records")
    return cpu / len(records), wall / len(records), sink


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.2f} ({min(xs):6.2f}-{max(xs):6.2f})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.trace", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=40_000, help="events per run (default 40000)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, each mode once (min 3)")
    ap.add_argument("--chunk", type=int, default=64, help="records per ingest call")
    ap.add_argument("--keys", type=int, default=16, help="distinct keys")
    ap.add_argument("--max-batch", type=int, default=64, help="engine's largest batch")
    args = ap.parse_args(argv)
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (the spread needs them)")
    plain = _records(args.events, args.keys, traced=False)
    traced = _records(args.events, args.keys, traced=True)
    make_tracer, drain = _otel()
    cases: dict[str, tuple[list[MemoryRecord], Callable[[], BatchTracer | None]]] = {
        "none": (plain, lambda: None),
        "forward": (traced, lambda: None),
        "otel-untraced": (plain, lambda: make_tracer(True)),
        "otel-links": (traced, lambda: make_tracer(False)),
        "otel": (traced, lambda: make_tracer(True)),
    }
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    wall: dict[str, list[float]] = {m: [] for m in MODES}
    spans: dict[str, int] = dict.fromkeys(MODES, 0)
    carried: dict[str, int] = dict.fromkeys(MODES, 0)
    asyncio.run(_run(plain[:2000], None, args.chunk, args.max_batch))  # warm the code paths
    for r in range(args.rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for mode in order:
            records, tracer = cases[mode]
            c, w, sink = asyncio.run(_run(records, tracer(), args.chunk, args.max_batch))
            cpu[mode].append(c)
            wall[mode].append(w)
            spans[mode] = drain()
            carried[mode] = sink.traced
    print(
        f"{args.events} events x {args.rounds} rounds (interleaved), chunk {args.chunk}, "
        f"{args.keys} keys, fake engine; per event, us: median (min-max)"
    )
    print(
        f"{'mode':<14} {'CPU/event':>22} {'vs none':>8} {'wall/event':>22} {'vs none':>8} "
        f"{'traced out':>10} {'spans/run':>9}"
    )
    base_c = statistics.median(cpu["none"])
    base_w = statistics.median(wall["none"])
    for mode in MODES:
        dc = statistics.median(cpu[mode]) - base_c
        dw = statistics.median(wall[mode]) - base_w
        print(
            f"{mode:<14} {_spread(cpu[mode]):>22} {dc:>+8.2f} {_spread(wall[mode]):>22} "
            f"{dw:>+8.2f} {carried[mode]:>10} {spans[mode]:>9}"
        )


if __name__ == "__main__":
    main()
