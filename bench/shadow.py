"""What a shadow candidate costs the primary: its latency with shadow off vs on, in process.

Run from the repository root::

    python -m bench.shadow                         # default bundle, 5000 events/s, 5 rounds
    python -m bench.shadow --rate 20000 --seconds 3 --rounds 7 --bundle DIR

Each round runs the same pre-encoded quotes through a fresh pipeline twice, shadow off
then on (the order alternates between rounds, so drift over the run does not favour one
side): open loop at a fixed offered rate, the primary on ONNX Runtime, the shadow a second
engine of the same bundle (another version string) in its own thread (``service.shadow``).
The primary's latency per event is the moment the sink got its decision minus the event's
intended arrival (coordinated-omission correct); shadow decisions are counted, not timed.
Printed per round and as median [min - max] over the rounds; nothing is asserted (a speed
on a shared host is a measurement, not an invariant).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

import numpy as np

from bench.openloop import StampSink, bench_settings, feed_open_loop
from bench.service import _model, _records
from engines.onnx import OnnxEngine
from engines.version import ModelVersion
from service.memory import MemoryRecord
from service.pipeline import Pipeline
from service.shadow import Shadow

DECISIONS = "weir.decisions"
SHADOW = "weir.decisions.shadow"


async def _run(
    primary: ModelVersion,
    candidate: ModelVersion | None,
    records: list[MemoryRecord],
    rate: float,
    budget_ms: float,
) -> dict[str, float]:
    settings = bench_settings(budget_ms=budget_ms, max_queue=50_000)
    n = len(records)
    sink = StampSink(n, topic=DECISIONS)
    pipe = Pipeline(
        settings=settings,
        engine=primary.engine,
        head=primary.head,
        spec=primary.features,  # type: ignore[arg-type]
        sink=sink,
        model_version=primary.version,
    )
    pipe.start()
    shadow = None
    if candidate is not None:
        shadow = Shadow(
            candidate,
            sink=sink,
            topic=SHADOW,
            counters=pipe.counters,
            queue=4,
            primary_idle=lambda: pipe.idle,
        )
        pipe.shadow = shadow
        runner = pipe.tasks.spawn(shadow.run(), "weir-shadow")
    gc.collect()
    gc.disable()
    t0 = time.monotonic_ns()
    intended = t0 + (np.arange(n) * (1e9 / rate)).astype(np.int64)
    try:
        await feed_open_loop(pipe, records, intended)
        await pipe.drain(30)
        if shadow is not None:
            await asyncio.wait_for(shadow.drained(), 30)
    finally:
        gc.enable()
        if shadow is not None:
            runner.cancel()
            await asyncio.wait([runner])
            pipe.shadow = None
        await pipe.close()
    ok = sink.done > 0
    lat_us = (sink.done[ok] - intended[ok]) / 1e3
    c = pipe.counters
    return {
        "p50": float(np.percentile(lat_us, 50)),
        "p99": float(np.percentile(lat_us, 99)),
        "p999": float(np.percentile(lat_us, 99.9)),
        "decided": float(ok.sum()),
        "misses": float(sum(n for s, n in c.decisions.items() if s.value in ("expired", "shed"))),
        "shadow_run": float(c.shadow["run"]),
        "shadow_dropped": float(c.shadow["dropped"]),
        "shadow_decisions": float(sink.others),
    }


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.0f} [{min(values):.0f} - {max(values):.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="bundle dir (default: the committed default bundle)")
    ap.add_argument("--rate", type=float, default=5000.0, help="offered events/s")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    ap.add_argument("--rounds", type=int, default=5, help="off/on pairs")
    ap.add_argument("--keys", type=int, default=8, help="distinct keys")
    ap.add_argument("--budget-ms", type=float, default=5.0, help="deadline budget")
    args = ap.parse_args()
    engine, head, spec, what = _model(args.bundle)
    engine.warm_up(200)
    second, _, _, _ = _model(args.bundle)
    assert isinstance(second, OnnxEngine)
    second.warm_up(200)
    primary = ModelVersion(version="primary", engine=engine, head=head, features=spec)
    candidate = ModelVersion(version="shadow", engine=second, head=head, features=spec)
    records = _records(int(args.rate * args.seconds), args.keys, seed=1)
    print(
        f"model: {what}; {args.rate:.0f} events/s for {args.seconds} s; budget {args.budget_ms} ms"
    )
    print("primary e2e latency (us, sink stamp - intended arrival), per run:")
    print(
        f"{'round':>5} {'shadow':>6} {'p50':>8} {'p99':>8} {'p99.9':>8} {'misses':>7} "
        f"{'sh.run':>7} {'sh.drop':>7} {'sh.dec':>7}"
    )
    figures: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for on in order:
            got = asyncio.run(
                _run(primary, candidate if on else None, records, args.rate, args.budget_ms)
            )
            figures[on].append(got)
            print(
                f"{r:>5} {'on' if on else 'off':>6} {got['p50']:>8.0f} {got['p99']:>8.0f} "
                f"{got['p999']:>8.0f} {got['misses']:>7.0f} {got['shadow_run']:>7.0f} "
                f"{got['shadow_dropped']:>7.0f} {got['shadow_decisions']:>7.0f}"
            )
    print(f"\nmedian [min - max] over {args.rounds} rounds (us):")
    print(f"{'':>10} {'shadow off':>26} {'shadow on':>26}")
    for q in ("p50", "p99", "p999"):
        off = [f[q] for f in figures[False]]
        on_ = [f[q] for f in figures[True]]
        print(f"{q:>10} {_spread(off):>26} {_spread(on_):>26}")
    dropped = sum(f["shadow_dropped"] for f in figures[True])
    ran = sum(f["shadow_run"] for f in figures[True])
    print(f"shadow batches run {ran:.0f}, dropped {dropped:.0f}")


if __name__ == "__main__":
    main()
