"""Scheduler benchmark: weir's EDF against per-event, fixed-window and greedy batching.

Prints figures, asserts nothing about speed. Three parts:

1. Wake-up error of the dispatch loop's timers (call_at vs timerfd, asyncio vs uvloop).
2. Discrete-event simulation on the real arrival times of two Binance captures (spot, and
   bursty USD-M futures) replayed at 1x, 10x, 100x, with (a) a CPU profile measured now
   on ONNX Runtime (small MLP 64-64-32-3, one thread) or loaded with ``--profile``, and
   (b) an assumed GPU-like profile. One table: SLO attainment, latency, batches.
3. The same traces through the service's own pipeline (``service.pipeline``: decode, per-key
   state, the scheduler's dispatch loop, ONNX Runtime inline, decisions to an in-memory sink;
   no Kafka) on a real event loop, next to the simulation of the same cut.

Run: ``PYTHONPATH=. python -m bench.scheduler`` (about 3-4 minutes; ``--quick`` for less).
Only the leading ns stamp of each feed line is read; events get one of 16 keys at random.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import gzip
import json
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.engine_samples import (
    GPU_NOTE,
    MlpEngine,
    Samples,
    build_mlp,
    describe,
    gpu_like,
    load_profile,
    measure_ort,
)
from bench.openloop import bench_settings, feed_open_loop
from engines.head import Head
from engines.onnx import OnnxEngine
from engines.profile import LatencyProfile, bucket_sizes
from schemas.codec import event_codec
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from service.memory import MemoryRecord
from service.pipeline import Pipeline
from service.publisher import STATUS_HEADER
from service.scheduler import (
    EdfScheduler,
    EmpiricalService,
    FixedWindowScheduler,
    GreedyScheduler,
    PerEventScheduler,
    Scheduler,
    SimResult,
    make_timer,
    simulate,
)
from service.scheduler.sim import EXPIRED, OK, SHED

FEEDS = Path(__file__).resolve().parents[1].parent / "shared" / "feeds" / "binance"
TRACES = {"spot": "btcusdt_20240808.gz", "futures": "btcusdt_usdm_20240808.gz"}
N_KEYS = 16


# -- traces --------------------------------------------------------------------------------


def load_trace(name: str, feeds: Path) -> np.ndarray:
    """Arrival times (ns, from 0) of a capture: the leading ns stamp of each line."""
    with gzip.open(feeds / TRACES[name], "rb") as f:
        stamps = [int(line[: line.index(b" ")]) for line in f]
    arr = np.asarray(stamps, dtype=np.int64)
    arr.sort(kind="stable")
    return arr - arr[0]


def cut(arr: np.ndarray, speed: float, seconds: float | None, limit: int | None) -> np.ndarray:
    """The trace replayed at ``speed``, cut to ``seconds`` of replay time and ``limit`` events."""
    out = (arr / speed).astype(np.int64)
    if seconds is not None:
        out = out[out <= int(seconds * 1e9)]
    if limit is not None:
        out = out[:limit]
    return out


# -- schedulers ----------------------------------------------------------------------------


SCHEDULERS = ("weir", "per-event", "fixed-1ms", "greedy")


def make_scheduler(
    name: str, prof: LatencyProfile, budget_ns: int, hold_ns: int | None
) -> Scheduler[int]:
    """A fresh scheduler by name."""
    if name == "weir":
        return EdfScheduler(prof, budget_ns=budget_ns)
    if name.startswith("weir/h"):
        return EdfScheduler(prof, budget_ns=budget_ns, max_hold_ns=hold_ns)
    if name == "per-event":
        return PerEventScheduler(prof)
    if name == "fixed-1ms":
        return FixedWindowScheduler(prof, max_wait_ns=1_000_000)
    return GreedyScheduler(prof)


# -- figures -------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    events: int
    attain: float
    expired: int
    shed: int
    late: int
    p50: float
    p99: float
    p999: float
    thr: float
    util: float
    batches: int
    bmean: float
    bp99: float
    bmax: int
    pauses: int


def figures(
    arrival: np.ndarray,
    deadline: np.ndarray,
    decided: np.ndarray,
    outcome: np.ndarray,
    sizes: list[int],
    busy_ns: int,
    pauses: int,
) -> Row:
    """Attainment (ok and decided by the deadline), latency of ok decisions, batches."""
    ok = outcome == OK
    hit = ok & (decided <= deadline)
    lat = (decided[ok] - arrival[ok]) / 1e3
    q = np.percentile(lat, [50, 99, 99.9]) if lat.size else np.zeros(3)
    span = max(1, int(decided.max() - arrival.min()))
    bs = np.asarray(sizes) if sizes else np.zeros(1)
    return Row(
        events=int(arrival.size),
        attain=100.0 * float(hit.mean()),
        expired=int((outcome == EXPIRED).sum()),
        shed=int((outcome == SHED).sum()),
        late=int((ok & ~hit).sum()),
        p50=float(q[0]),
        p99=float(q[1]),
        p999=float(q[2]),
        thr=arrival.size / (span / 1e9),
        util=100.0 * busy_ns / span,
        batches=len(sizes),
        bmean=float(bs.mean()),
        bp99=float(np.percentile(bs, 99)),
        bmax=int(bs.max()),
        pauses=pauses,
    )


def sim_row(res: SimResult) -> Row:
    """Figures of a simulation run."""
    return figures(
        res.arrival_ns,
        res.deadline_ns,
        res.decided_ns,
        res.outcome,
        res.batch_sizes,
        res.busy_ns,
        res.pauses,
    )


HEADER = (
    f"{'trace':<8}{'x':>4} {'profile':<5} {'scheduler':<10}{'events':>7} {'attain%':>8} "
    f"{'exp':>5} {'shed':>5} {'late':>5} {'p50us':>7} {'p99us':>7} {'p99.9us':>8} "
    f"{'ev/s':>7} {'util%':>6} {'batches':>7} {'mean':>5} {'p99':>4} {'max':>4} {'pause':>5}"
)


def fmt(trace: str, speed: float, prof: str, sched: str, r: Row) -> str:
    """One table line."""
    return (
        f"{trace:<8}{speed:>3g}x {prof:<5} {sched:<10}{r.events:>7} {r.attain:>8.3f} "
        f"{r.expired:>5} {r.shed:>5} {r.late:>5} {r.p50:>7.0f} {r.p99:>7.0f} {r.p999:>8.0f} "
        f"{r.thr:>7.0f} {r.util:>6.1f} {r.batches:>7} {r.bmean:>5.1f} {r.bp99:>4.0f} "
        f"{r.bmax:>4} {r.pauses:>5}"
    )


# -- part 1: timer wake-up error -----------------------------------------------------------


async def _wake_errors(kind: str, n: int) -> np.ndarray:
    loop = asyncio.get_running_loop()
    errs = np.empty(n, dtype=np.int64)
    state: dict[str, Any] = {}

    def fire() -> None:
        state["fut"].set_result(time.monotonic_ns())

    timer = make_timer(fire, kind=kind)  # type: ignore[arg-type]
    rng = random.Random(4)
    for i in range(n):
        state["fut"] = loop.create_future()
        target = time.monotonic_ns() + rng.randint(20_000, 2_000_000)
        timer.arm(target)
        errs[i] = await state["fut"] - target
    timer.close()
    return errs


def run_on(loop_name: str, coro: Any) -> Any:
    """Run a coroutine on a fresh asyncio or uvloop loop."""
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def wake_bench(n: int) -> dict[tuple[str, str], np.ndarray]:
    """Wake-up error (actual - armed, ns) per loop and timer kind."""
    out = {}
    print(f"\n== timer wake-up error: {n} one-shot wakes each, 20 us - 2 ms ahead ==")
    print(
        f"{'loop':<8} {'timer':<8} {'p50us':>8} {'p99us':>8} {'p99.9us':>8} {'min':>8} "
        f"{'early%':>7}"
    )
    for loop_name in ("asyncio", "uvloop"):
        for kind in ("call_at", "timerfd"):
            e = run_on(loop_name, _wake_errors(kind, n))
            out[(loop_name, kind)] = e
            q = np.percentile(e, [50, 99, 99.9]) / 1e3
            print(
                f"{loop_name:<8} {kind:<8} {q[0]:>8.1f} {q[1]:>8.1f} {q[2]:>8.1f} "
                f"{e.min() / 1e3:>8.1f} {100 * (e < 0).mean():>7.2f}"
            )
    return out


# -- part 3: the pipeline on a real loop ---------------------------------------------------


SPEC = FeatureSpec(task=Task.TRADING, window=8)
"""The features the pipeline computes for part 3 (quotes of 16 symbols)."""
TOPIC = "bench.quotes"
OTHER = 3
"""Outcome code of a decision that is neither ok, expired nor shed (warming, error)."""
STATUS_CODES = {b"ok": OK, b"expired": EXPIRED, b"shed": SHED}


def pipeline_engine(max_batch: int, reps: int) -> tuple[OnnxEngine, Samples]:
    """ORT on one thread running the MLP on the pipeline's feature rows, warmed up with
    ``reps`` timed calls per bucket (its profile, which the pipeline needs), and those
    wall-time samples."""
    engine = OnnxEngine(
        build_mlp(SPEC.n_features),
        max_batch=max_batch,
        threads=1,
        input_name="x",
        output_name="y",
        model_version="bench-mlp",
    )
    return engine, engine.warm_up(reps).samples_ns()


def quote_records(keys: np.ndarray, first_offset: int = 0) -> list[MemoryRecord]:
    """One encoded quote per key in ``keys`` (symbol ``S<key>``), offsets counting up."""
    codec = event_codec()
    rng = np.random.default_rng(9)
    mids = 100.0 + np.cumsum(rng.normal(0.0, 0.01, keys.size))
    qty = rng.uniform(0.1, 5.0, (keys.size, 2))
    out = []
    for j, k in enumerate(keys.tolist()):
        symbol = f"S{k}"
        q = Quote(
            symbol=symbol,
            bid_px=float(mids[j]) - 0.01,
            bid_qty=float(qty[j, 0]),
            ask_px=float(mids[j]) + 0.01,
            ask_qty=float(qty[j, 1]),
        )
        out.append(MemoryRecord(TOPIC, 0, first_offset + j, codec.encode(q), key=symbol.encode()))
    return out


class OutcomeSink:
    """The pipeline's sink: stamps each decision's hand-over time and outcome, by offset."""

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.decided = np.zeros(n, dtype=np.int64)
        self.outcome = np.full(n, -1, dtype=np.int8)
        self.remaining = n
        self.all_decided = loop.create_future()

    async def send(
        self, topic: str, key: Any, value: bytes, headers: Any, token: Any, on_ack: Any
    ) -> None:
        _, j = token  # the publisher's: the partition's offsets and the offset
        self.decided[j] = time.monotonic_ns()
        self.outcome[j] = STATUS_CODES.get(dict(headers)[STATUS_HEADER], OTHER)
        on_ack(token, None)
        self.remaining -= 1
        if self.remaining == 0 and not self.all_decided.done():
            self.all_decided.set_result(None)

    async def flush(self) -> None:
        return None


class BatchLog:
    """The pipeline's batch observer: batch sizes and engine busy time."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.busy_ns = 0

    def on_batch(
        self,
        bucket: int,
        items: Any,
        ingest_ns: Any,
        kafka_ts_ns: Any,
        source_ts_ns: Any,
        dispatch_ns: int,
        done_ns: int,
    ) -> None:
        self.sizes.append(len(items))
        self.busy_ns += done_ns - dispatch_ns

    def on_published(self, end_ns: int, mono_to_wall_ns: int) -> None:
        return None


async def real_run(
    sched: Scheduler[int],
    engine: OnnxEngine,
    arrivals: np.ndarray,
    keys: np.ndarray,
    budget_ns: int,
) -> Row:
    """Replay ``arrivals`` open-loop into a pipeline running ``sched``; measure from intended.

    Each key's feature window is filled first (``Pipeline.warm``), so no decision is
    ``warming``. Deadlines are anchored at ingest (the service's default); attainment and
    latency are measured from the intended arrival time, so a late feed wake counts.
    """
    loop = asyncio.get_running_loop()
    n = int(arrivals.size)
    sink = OutcomeSink(n, loop)
    log = BatchLog()
    settings = bench_settings(budget_ms=budget_ns / 1e6, max_queue=20_000)
    pipe = Pipeline(
        settings=settings,
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=SPEC,
        sink=sink,
        model_version="bench",
        scheduler=sched,
        observer=log,
    )
    pipe.warm(quote_records(np.repeat(np.arange(N_KEYS), SPEC.window), first_offset=-(10**9)))
    records = quote_records(keys)
    pipe.start()
    intended = arrivals + time.monotonic_ns() + 20_000_000
    try:
        await feed_open_loop(pipe, records, intended)
        await sink.all_decided
    finally:
        await pipe.close()
    return figures(
        intended, intended + budget_ns, sink.decided, sink.outcome, log.sizes, log.busy_ns, 0
    )


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--budget-ms", type=float, default=5.0, help="deadline budget (default 5)")
    ap.add_argument("--speeds", default="1,10,100", help="replay speeds (default 1,10,100)")
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="cut each simulated trace to this many seconds of replay time",
    )
    ap.add_argument("--limit", type=int, default=None, help="at most this many events per trace")
    ap.add_argument("--max-batch", type=int, default=256, help="largest bucket (default 256)")
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="CPU profile JSON to simulate with instead of the MLP measured now",
    )
    ap.add_argument(
        "--wall-profile",
        action="store_true",
        help="simulate with the MLP's wall-clock samples (this host's load included) "
        "instead of its thread CPU time (a dedicated core)",
    )
    ap.add_argument(
        "--save-profile",
        type=Path,
        default=None,
        help="write the CPU samples simulated with to this JSON file",
    )
    ap.add_argument(
        "--hold-ms",
        type=float,
        default=0.0,
        help="also run weir with max_hold_ns = this, row 'weir/h<ms>' (default 0: dispatch "
        "as soon as the engine is free; negative: skip)",
    )
    ap.add_argument(
        "--real-seconds",
        type=float,
        default=10.0,
        help="wall seconds of each real-loop run (default 10; 0 skips part 3)",
    )
    ap.add_argument("--real-loop", choices=("asyncio", "uvloop"), default="uvloop")
    ap.add_argument("--wake-n", type=int, default=1500, help="wakes per timer (default 1500)")
    ap.add_argument("--feeds", type=Path, default=FEEDS, help="directory of the Binance feeds")
    ap.add_argument("--quick", action="store_true", help="short cuts everywhere (smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds = args.seconds or 30.0
        args.real_seconds = min(args.real_seconds, 3.0)
        args.wake_n = min(args.wake_n, 300)
    budget = int(args.budget_ms * 1e6)
    hold = int(args.hold_ms * 1e6) if args.hold_ms >= 0 else None
    speeds = [float(s) for s in args.speeds.split(",")]
    scheds = ["weir"] + ([f"weir/h{args.hold_ms:g}"] if hold is not None else [])
    scheds += [s for s in SCHEDULERS if s != "weir"]
    t_start = time.monotonic()

    print(
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"python {sys.version.split()[0]}; budget {args.budget_ms:g} ms; buckets "
        f"{list(bucket_sizes(args.max_batch))}\nattain% = decided ok by the deadline (expired, "
        f"shed, late count as misses); latency = ok decisions, from arrival\nweir = EDF, waits "
        f"up to the latest safe start (guard >= 200 us, measured); weir/h<ms> = weir with "
        f"max_hold <ms>; fixed window = 1 ms / 256; 16 keys at random"
    )
    wake = wake_bench(args.wake_n)
    wake_samples = np.maximum(wake[(args.real_loop, "timerfd")], 0)

    traces = {t: load_trace(t, args.feeds) for t in TRACES}
    engine = MlpEngine(max(int(a.size) for a in traces.values()))
    wall, dedicated = measure_ort(engine, args.max_batch, reps=3000)
    if args.profile is not None:
        cpu, cpu_name = load_profile(args.profile), f"from {args.profile}"
    elif args.wall_profile:
        cpu, cpu_name = wall, "ORT 1 thread, MLP 64-64-32-3, gather+run, wall time on this host"
    else:
        cpu, cpu_name = dedicated, "ORT 1 thread, MLP 64-64-32-3, gather+run, thread CPU time"
    if args.save_profile is not None:
        args.save_profile.write_text(
            json.dumps({"samples_ns": {str(b): v.tolist() for b, v in cpu.items()}})
        )
    profiles: Mapping[str, Samples] = {"cpu": cpu, "gpu": gpu_like(args.max_batch)}
    print(f"\ncpu = {cpu_name}\n      {describe(cpu)}")
    print(f"      wall time on this host: {describe(wall)}")
    print(f"gpu = {GPU_NOTE}\n      {describe(profiles['gpu'])}")

    rng = np.random.default_rng(5)
    keys = {t: rng.integers(0, N_KEYS, a.size) for t, a in traces.items()}
    wake_rng = random.Random(6)

    def wake_late() -> int:
        return int(wake_samples[wake_rng.randrange(wake_samples.size)])

    def sim(name: str, samples: Samples, a: np.ndarray, k: np.ndarray) -> Row:
        svc = EmpiricalService(samples, seed=7)
        sched = make_scheduler(name, svc.profile(), budget, hold)
        res = simulate(
            sched, a, service=svc, budget_ns=budget, keys=k.tolist(), wake_late_ns=wake_late
        )
        return sim_row(res)

    print(
        f"\n== simulation: virtual clock, service times drawn from the profile, timer lateness "
        f"drawn from the measured {args.real_loop}+timerfd errors =="
    )
    print(HEADER)
    for trace, arr in traces.items():
        for speed in speeds:
            a = cut(arr, speed, args.seconds, args.limit)
            k = keys[trace][: a.size]
            for pname, samples in profiles.items():
                for name in scheds:
                    print(fmt(trace, speed, pname, name, sim(name, samples, a, k)), flush=True)
    print(f"(simulation done at {time.monotonic() - t_start:.0f} s)")

    if args.real_seconds > 0:
        pengine, pwall = pipeline_engine(args.max_batch, reps=1000)
        print(
            f"\n== the pipeline on a real loop ({args.real_loop} + timerfd; decode, state, "
            f"dispatch loop, ORT inline, in-memory sink; no Kafka) vs the simulation of the "
            f"same cut with the engine's wall-time profile; spot trace, {args.real_seconds:g} s "
            f"wall each ==\nengine: ORT 1 thread, MLP {SPEC.n_features}-64-32-3 on "
            f"{SPEC.task.value} features (window {SPEC.window}); {describe(pwall)}"
        )
        half = f"{'attain%':>8} {'p50us':>7} {'p99us':>7} {'p99.9us':>8} {'mean b':>6}"
        print(f"{'':<21}{'simulated':^38}  {'real':^38}")
        print(f"{'x':>3} {'scheduler':<10}{'events':>7}  {half}  {half}")
        gc.collect()
        gc.freeze()
        for speed in (1.0, 10.0):
            a = cut(traces["spot"], speed, args.real_seconds, args.limit)
            k = keys["spot"][: a.size]
            for name in scheds:
                simulated = sim(name, pwall, a, k)
                sched = make_scheduler(name, LatencyProfile(pwall), budget, hold)
                real = run_on(args.real_loop, real_run(sched, pengine, a, k, budget))
                cols = [
                    f"{r.attain:>8.3f} {r.p50:>7.0f} {r.p99:>7.0f} {r.p999:>8.0f} {r.bmean:>6.1f}"
                    for r in (simulated, real)
                ]
                print(f"{speed:>2g}x {name:<10}{a.size:>7}  " + "  ".join(cols), flush=True)
        gc.unfreeze()
        pengine.close()
    print(f"\ntotal {time.monotonic() - t_start:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
