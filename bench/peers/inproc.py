"""Each contender's decision path without Kafka: CPU microseconds per event, in process.

The feed's records are handed to each decision path in fetch-sized chunks; every decision
is encoded, as on the wire, and handed to the same publisher, one that acknowledges at once
(weir's ``Sink`` interface: what each contender's ``producer.send`` stands for); no
consumer, no producer, no broker. The peers await its ``send`` per decision, as they await
aiokafka's ``producer.send``; weir's publisher calls its ``send_now``, as it does its
``KafkaSink``'s, which queues a decision that needs no wait without a coroutine. What is
left is decode, features, batching or scheduling, inference, decision building and the
hand-off:

- ``naive``: ``NaiveCore.handle`` per record (one bucket-1 inference each);
- ``fixed-window``: ``FixedWindowBatcher`` (windows closed by size; each chunk flushed);
- ``weir``: ``service.pipeline.Pipeline`` (EDF scheduler, offset tracker, slab) with a sink
  that acknowledges at once, each chunk ingested, then the dispatcher let run.

Faust's and Quix's own machinery cannot run without their clients, so they are left out;
their decision bodies are ``TakeCore`` / ``ApplyCore`` (the fixed-window and naive paths).
Every path runs on the event loop the side-by-side run gives every contender (``loop``:
uvloop by default, as ``weir serve`` runs; ``asyncio`` on request), so what weir's
dispatcher task costs per loop turn is what it costs in the service. Figures are the best
of ``repeats`` (least disturbed by the rest of the host); the paths take turns within each
repeat, each after a full collection, so every path starts from the same collector state
and pays for the collections its own allocations trigger, not for one the harness's
40,000 loaded records were about to cause.

``python -m bench.peers.inproc --feed F [--events N] [--repeats R] [--loop L]`` prints one JSON line
of the three figures and weir's CPU over the fixed window's in each repeat (a Binance
``.gz`` capture is imported under ``--out`` first, as ``python -m bench.peers`` does). Each
run is one sample: compare trees by interleaving runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.peers.base import LOOPS, run_async
from bench.peers.fixed_window import FixedWindowBatcher
from bench.peers.model import PeerModel
from bench.peers.naive import NaiveCore
from replay.plan import Plan
from schemas.codec import event_codec
from service.memory import MemoryRecord

_T0_MS = 1_700_000_000_000


def records_of(plan: Plan, limit: int) -> list[MemoryRecord]:
    """The plan's first ``limit`` events as consumed records (1 partition, 10 per ms)."""
    enc = event_codec("json").encode
    return [
        MemoryRecord("in", 0, i, enc(e), key=e.key.encode(), timestamp=_T0_MS + i // 10)
        for i, e in enumerate(plan.events[:limit])
    ]


class _AckSink:
    """Every path's publisher: takes each encoded decision and acknowledges it at once."""

    def __init__(self) -> None:
        self.n = 0

    async def send(
        self, topic: str, key: Any, value: bytes, headers: Any, token: Any, on_ack: Any
    ) -> None:
        self.send_now(topic, key, value, headers, token, on_ack)

    def send_now(
        self, topic: str, key: Any, value: bytes, headers: Any, token: Any, on_ack: Any
    ) -> bool:
        """``send`` without its coroutine, as weir's ``KafkaSink`` offers it where the
        message needs no wait (its publisher calls it; the other paths await ``send``)."""
        self.n += 1
        on_ack(token, None)
        return True

    async def flush(self) -> None:
        return None


def _no_ack(token: Any, error: BaseException | None) -> None:
    return None


def _check(name: str, sink: _AckSink, recs: list[MemoryRecord]) -> None:
    if sink.n != len(recs):
        raise RuntimeError(f"{name} decided {sink.n} of {len(recs)} records")


def _naive(model: PeerModel, recs: list[MemoryRecord], chunk: int, loop: str) -> float:
    core = NaiveCore(model)
    encode = model.encode
    sink = _AckSink()

    async def run() -> float:
        send = sink.send
        c0 = time.process_time()
        for r in recs:
            d = core.handle(r)
            await send("out", d.key.encode(), encode(d), (), None, _no_ack)
        return time.process_time() - c0

    used = run_async(run(), loop)
    _check("naive", sink, recs)
    return used


def _fixed(model: PeerModel, recs: list[MemoryRecord], chunk: int, loop: str) -> float:
    b = FixedWindowBatcher(model, max_batch=model.engine.max_batch, max_wait_ns=10**15)
    encode = model.encode
    sink = _AckSink()

    async def run() -> float:
        send = sink.send
        c0 = time.process_time()
        for i in range(0, len(recs), chunk):
            for r in recs[i : i + chunk]:
                for d in b.add(r):
                    await send("out", d.key.encode(), encode(d), (), None, _no_ack)
            for d in b.flush():
                await send("out", d.key.encode(), encode(d), (), None, _no_ack)
        return time.process_time() - c0

    used = run_async(run(), loop)
    _check("fixed-window", sink, recs)
    return used


def _weir(model: PeerModel, recs: list[MemoryRecord], chunk: int, loop: str) -> float:
    from service.pipeline import Pipeline
    from service.settings import load_settings

    sink = _AckSink()

    async def run() -> float:
        pipe = Pipeline(
            settings=load_settings(None, env={"WEIR_SCHEDULER__BUDGET_MS": "600000"}),
            engine=model.engine,
            head=model.head,
            spec=model.spec,
            sink=sink,
            model_version=model.model_version,
        )
        pipe.start()
        c0 = time.process_time()
        for i in range(0, len(recs), chunk):
            await pipe.ingest(recs[i : i + chunk])
            await asyncio.sleep(0)  # the dispatcher runs the chunk's batch
        await pipe.drain(60.0)
        used = time.process_time() - c0
        await pipe.close()
        return used

    used = run_async(run(), loop)
    _check("weir", sink, recs)
    return used


PATHS = {"naive": _naive, "fixed-window": _fixed, "weir": _weir}


def measure_paired(
    plan: Plan,
    *,
    events: int = 40_000,
    chunk: int = 64,
    repeats: int = 3,
    bundle: str = "",
    loop: str = "uvloop",
) -> tuple[dict[str, float], list[float]]:
    """Contender -> CPU microseconds per event of its decision path (best of ``repeats``,
    the paths taking turns within each repeat so a noisy stretch of the host hits them
    all), and weir's CPU over the fixed window's in each repeat: the two paths ran within
    seconds of each other there, so the ratio of one repeat is less disturbed by the host
    than the ratio of two bests taken minutes apart. ``bundle``: the model every path
    serves (default: the committed bundle); ``loop``: the event loop every path runs on
    (``bench.peers.base.LOOPS``)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    recs = records_of(plan, events)
    base = PeerModel.load(bundle, warmup_iters=50)
    best = dict.fromkeys(PATHS, float("inf"))
    ratios: list[float] = []
    for _ in range(repeats):
        used: dict[str, float] = {}
        for name, path in PATHS.items():
            model = PeerModel(base.engine, base.head, base.spec, base.model_version)
            gc.collect()
            used[name] = path(model, recs, chunk, loop)
            best[name] = min(best[name], used[name])
        if used["fixed-window"] > 0:
            ratios.append(used["weir"] / used["fixed-window"])
    return {name: t / len(recs) * 1e6 for name, t in best.items()}, ratios


def main(argv: list[str] | None = None) -> int:
    """Measure the feed's first ``--events`` events and print the figures as JSON."""
    from replay.plan import load_plan

    p = argparse.ArgumentParser(
        prog="python -m bench.peers.inproc", description=(__doc__ or "").splitlines()[0]
    )
    p.add_argument("--feed", type=Path, required=True, help="feed (.parquet) or Binance .gz")
    p.add_argument("--events", type=int, default=40_000, help="events measured")
    p.add_argument("--chunk", type=int, default=64, help="records handed in at a time")
    p.add_argument("--repeats", type=int, default=3, help="runs per path (best kept)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="where a .gz is imported")
    p.add_argument("--bundle", default="", help="model bundle (default: the committed one)")
    p.add_argument(
        "--loop", choices=LOOPS, default="uvloop", help="event loop of every path (weir's: uvloop)"
    )
    args = p.parse_args(argv)
    feed: Path = args.feed
    if feed.suffix == ".gz":
        target = args.out / f"{feed.name.removesuffix('.gz')}.parquet"
        if not target.exists():
            from replay.importers.binance import import_binance

            print(f"importing {feed} -> {target}", file=sys.stderr)
            import_binance([feed], target)
        feed = target
    plan = load_plan(feed, limit=args.events)
    got, ratios = measure_paired(
        plan,
        events=plan.n,
        chunk=args.chunk,
        repeats=args.repeats,
        bundle=args.bundle,
        loop=args.loop,
    )
    print(json.dumps({"events": plan.n, "us_cpu_per_event": got, "weir_vs_fixed": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
