"""Service overhead per event, in process: decode → state → schedule → infer → encode.

Run from the repository root::

    python -m bench.service                      # default bundle if present, else a built-in MLP
    python -m bench.service --bundle DIR --rates 5000,20000,50000 --seconds 5

No broker: records are pre-encoded quotes (the synthetic market feed's shape) handed to the
pipeline open loop at a fixed offered rate, in the chunks a 1 ms fetch loop would see; the
sink stamps each decision when the pipeline hands it over. Latency per event is that stamp
minus the event's *intended* arrival time (coordinated-omission correct: a stalled loop
shows up as latency, not as a lower rate). Then the same at ``max`` rate gives the maximum
sustainable throughput of one worker. Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from pathlib import Path

import msgspec
import numpy as np

from bench.openloop import StampSink, bench_settings, feed_open_loop
from engines.bundle import Bundle
from engines.defaults import default_bundle_path
from engines.fake import tiny_mlp_onnx
from engines.head import Head
from engines.onnx import OnnxEngine
from schemas.codec import event_codec
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.memory import MemoryRecord
from service.pipeline import Pipeline

TOPIC = "weir.events"


def _records(n: int, keys: int, seed: int) -> list[MemoryRecord]:
    rng = np.random.default_rng(seed)
    mids = 100.0 + np.cumsum(rng.normal(0, 0.01, n))
    codec = event_codec()
    out = []
    for i in range(n):
        k = f"SYM{i % keys}"
        q = Quote(
            symbol=k,
            bid_px=float(mids[i]) - 0.01,
            bid_qty=float(rng.uniform(0.1, 5)),
            ask_px=float(mids[i]) + 0.01,
            ask_qty=float(rng.uniform(0.1, 5)),
        )
        out.append(MemoryRecord(TOPIC, 0, i, codec.encode(q), key=k.encode(), timestamp=i))
    return out


def _model(bundle: str | None) -> tuple[OnnxEngine, Head, FeatureSpec, str]:
    path = Path(bundle) if bundle else default_bundle_path()
    if (path / "metadata.json").exists():
        b = Bundle.load(path)
        spec = msgspec.convert(b.feature_spec, FeatureSpec)
        return OnnxEngine.from_bundle(b, max_batch=64), Head.from_bundle(b), spec, str(path)
    spec = FeatureSpec(task=Task.TRADING, window=16)
    import tempfile

    tmp = Path(tempfile.mkdtemp()) / "m.onnx"
    tmp.write_bytes(tiny_mlp_onnx(spec.n_features, (64, 32), 3))
    eng = OnnxEngine(tmp, max_batch=64, threads=1)
    return (
        eng,
        Head("trading", ["SELL", "HOLD", "BUY"]),
        spec,
        f"built-in MLP {spec.n_features}-64-32-3",
    )


async def _run(
    engine: OnnxEngine,
    head: Head,
    spec: FeatureSpec,
    records: list[MemoryRecord],
    rate: float | None,
    budget_ms: float,
) -> dict[str, float]:
    settings = bench_settings(budget_ms=budget_ms, max_queue=50_000)
    n = len(records)
    sink = StampSink(n)
    pipe = Pipeline(
        settings=settings, engine=engine, head=head, spec=spec, sink=sink, model_version="bench"
    )
    pipe.start()
    intended = np.zeros(n, dtype=np.int64)
    handed = np.zeros(n, dtype=np.int64)
    gc.collect()
    gc.disable()
    t0 = time.monotonic_ns()
    sent = 0
    try:
        if rate is None:
            chunk = 500
            while sent < n:
                now = time.monotonic_ns()
                intended[sent : sent + chunk] = now
                handed[sent : sent + chunk] = now
                await pipe.ingest(records[sent : sent + chunk])
                sent += chunk
                await asyncio.sleep(0)
        else:
            intended[:] = t0 + (np.arange(n) * (1e9 / rate)).astype(np.int64)
            await feed_open_loop(pipe, records, intended, handed=handed)
        await pipe.drain(30)
        t1 = time.monotonic_ns()
    finally:
        gc.enable()
        await pipe.close()
    c = pipe.counters
    ok = sink.done > 0
    lat_us = (sink.done[ok] - intended[ok]) / 1e3
    svc_us = (sink.done[ok] - handed[ok]) / 1e3
    return {
        "svc_p50_us": float(np.percentile(svc_us, 50)),
        "svc_p99_us": float(np.percentile(svc_us, 99)),
        "events": float(n),
        "decided": float(sink.count),
        "seconds": (t1 - t0) / 1e9,
        "throughput": n / ((t1 - t0) / 1e9),
        "p50_us": float(np.percentile(lat_us, 50)),
        "p99_us": float(np.percentile(lat_us, 99)),
        "p999_us": float(np.percentile(lat_us, 99.9)),
        "mean_batch": c.batch_rows / max(1, c.batches),
        "expired": float(c.decisions[next(s for s in c.decisions if s.value == "expired")]),
        "shed": float(c.decisions[next(s for s in c.decisions if s.value == "shed")]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="bundle dir (default: the committed default bundle)")
    ap.add_argument(
        "--rates", default="5000,20000,30000,40000,50000,60000", help="offered rates, events/s"
    )
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each rate's run")
    ap.add_argument("--keys", type=int, default=8, help="distinct keys (instruments)")
    ap.add_argument("--budget-ms", type=float, default=5.0, help="deadline budget")
    args = ap.parse_args()
    engine, head, spec, what = _model(args.bundle)
    engine.warm_up(200)
    print(f"model: {what}; n_features={spec.n_features}; engine=onnxruntime threads=1")
    print(
        f"budget {args.budget_ms} ms; keys {args.keys}. e2e = decision handed to sink - intended "
        "arrival (CO-correct); svc = same - hand-over to the pipeline (service overhead); us"
    )
    print(
        f"{'offered/s':>10} {'events':>8} {'achieved/s':>11} {'svc p50':>8} {'svc p99':>8} "
        f"{'e2e p50':>8} {'e2e p99':>8} {'e2e p99.9':>9} {'batch':>6} {'expired':>8} {'shed':>6}"
    )
    best = 0.0
    failed = False
    rates: list[float | None] = [float(r) for r in args.rates.split(",")] + [None]
    for rate in rates:
        n = int((rate or 50_000) * args.seconds)
        recs = _records(n, args.keys, seed=1)
        r = asyncio.run(_run(engine, head, spec, recs, rate, args.budget_ms))
        label = "max" if rate is None else f"{int(rate)}"
        print(
            f"{label:>10} {int(r['events']):>8} {r['throughput']:>11.0f} {r['svc_p50_us']:>8.0f} "
            f"{r['svc_p99_us']:>8.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} "
            f"{r['p999_us']:>9.0f} {r['mean_batch']:>6.1f} {int(r['expired']):>8} {int(r['shed']):>6}"
        )
        fine = r["expired"] == 0 and r["shed"] == 0 and r["p99_us"] <= args.budget_ms * 1e3
        if rate is not None and not failed:
            if fine and r["throughput"] >= 0.98 * rate:
                best = rate
            else:
                failed = True
    print(f"max sustainable offered rate (no expired/shed, e2e p99 <= budget): {best:.0f} events/s")


if __name__ == "__main__":
    main()
