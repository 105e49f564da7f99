"""Open-loop replay of a prepared feed into the service, measuring every decision that comes back.

Event ``i`` of the feed is due at ``start + (recv_i - recv_0) / speed`` (or
``start + i / rate``; ``replay.pacing``). The sender sends whatever is due, in bursts, and
never waits for a decision: it waits only for the clock, or when the transport pushes back
(a full producer buffer), and that wait shows as sender lag and, because latency counts
from the *intended* send time, in the latency (coordinated-omission correct, see
``replay.measure``). A concurrent reader matches every decision (and dead letter) to its
input by ``(topic, partition, offset)``. The run ends when every input has an outcome or
nothing arrived for ``quiet_s`` after the last send. :func:`build_result` turns the
recording into a ``RunResult`` with its verdict.

Transports (the seam, ``replay.base.Transport``): ``replay.kafka.KafkaTransport`` through
a broker, ``replay.inprocess.InProcessTransport`` into a pipeline on this event loop. The
command line (``weir replay run``) is ``replay.commands``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec

from replay.base import Clock, Transport
from replay.diagnose import Diagnosis
from replay.inprocess import InProcessTransport
from replay.kafka import KafkaTransport
from replay.measure import DEFAULT_LAG_THRESHOLD_MS, Recorder
from replay.pacing import Pacing
from replay.plan import Plan
from replay.progress import Progress
from replay.results import RunConfig, RunResult
from replay.slo import Slo, evaluate
from service.pauses import GcPauses, LoopLag
from service.settings import Settings

Sleep = Callable[[float], Awaitable[None]]
"""Waits that many seconds (``asyncio.sleep``), injected with the clock so tests can move
time themselves."""

DEFAULT_QUIET_S: Final = 10.0
_LEAD_NS: Final = 50_000_000
_BURST: Final = 512


class Timing(msgspec.Struct, kw_only=True):
    """When the replay began and ended (wall ns)."""

    started_wall_ns: int
    ended_wall_ns: int


async def replay(
    plan: Plan,
    transport: Transport,
    *,
    pacing: Pacing,
    recorder: Recorder | None = None,
    quiet_s: float = DEFAULT_QUIET_S,
    progress: Progress | None = None,
    clock: Clock = time.time_ns,
    sleep: Sleep = asyncio.sleep,
    lag_probe: LoopLag | None = None,
    gc_pauses: GcPauses | None = None,
) -> tuple[Recorder, Timing]:
    """Send ``plan`` through ``transport`` on schedule and record every outcome.

    Every wait for the schedule (and for the last outcomes) goes through ``sleep``, every
    reading of time through ``clock``: a test hands in a clock it moves itself.
    ``lag_probe`` (``service.pauses.LoopLag``) runs on this loop while the replay does;
    ``gc_pauses`` times this process's collections meanwhile (after the freeze below).
    """
    rec = recorder or Recorder(plan.n, clock=clock)
    # The plan's events live for the whole run: keep the collector from rescanning them
    # (a full collection over ~100k objects is a sender stall of tens of ms).
    gc.collect()
    gc.freeze()
    if gc_pauses is not None:
        gc_pauses.install()
    started = clock()
    await transport.open(rec)
    ticker: asyncio.Task[None] | None = None
    probe: asyncio.Task[None] | None = None
    try:
        if lag_probe is not None:
            probe = asyncio.get_running_loop().create_task(lag_probe.run())
        if progress is not None:
            ticker = asyncio.get_running_loop().create_task(progress.run(rec))
        await _send_all(plan, transport, rec, pacing, clock, sleep)
        await transport.flush()
        sent_done = clock()
        quiet_ns = int(quiet_s * 1e9)
        while rec.outstanding > 0:
            if clock() - max(sent_done, rec.last_outcome_ns) > quiet_ns:
                break
            await sleep(0.02)
    finally:
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            if progress is not None:
                progress.draw(rec)
                progress.done()
        await transport.close()
        if gc_pauses is not None:
            gc_pauses.uninstall()
        gc.unfreeze()
    return rec, Timing(started_wall_ns=started, ended_wall_ns=clock())


async def _send_all(
    plan: Plan, transport: Transport, rec: Recorder, pacing: Pacing, clock: Clock, sleep: Sleep
) -> None:
    offsets = pacing.offsets(plan.recv_rel)
    start = clock() + _LEAD_NS
    due: list[int] | None = None if offsets is None else (offsets + start).tolist()
    keys = plan.keys
    payload = plan.payload
    send = transport.send
    sent = rec.sent
    n = plan.n
    i = 0
    while i < n:
        now = clock()
        if due is not None and due[i] > now:
            await sleep((due[i] - now) / 1e9)
            continue
        stop = min(n, i + _BURST)
        while i < stop and (due is None or due[i] <= now):
            intended = clock() if due is None else due[i]
            await send(i, keys[i], payload(i, intended))
            # Stamped once the transport took it: a send held up by backpressure is late.
            sent(i, intended, clock())
            i += 1
        await transport.end_burst()
        await asyncio.sleep(0)


def environment() -> dict[str, str]:
    """Where the run happened (host load matters on a shared machine)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count() or 0),
        "loadavg_at_end": load,
    }


def build_result(
    rec: Recorder,
    timing: Timing,
    *,
    config: RunConfig,
    slo: Slo,
    pacing: Pacing,
    lag_threshold_ms: float = DEFAULT_LAG_THRESHOLD_MS,
) -> RunResult:
    """All figures of a finished replay, with the verdict against ``slo``."""
    m = rec.finish(budget_ms=slo.budget_ms, lag_threshold_ms=lag_threshold_ms, paced=pacing.paced)
    verdict = evaluate(slo, latency=m.latency, completeness=m.completeness, sender=m.sender)
    notes = list(config.notes)
    if m.sender.behind:
        notes.append(
            f"the sender fell behind its schedule by up to {m.sender.lag.max_ms or 0:,.1f} ms "
            f"(threshold {lag_threshold_ms:g} ms): the harness, not only the service, was slow"
        )
    if not pacing.paced:
        notes.append("speed max: no schedule, so e2e latency counts from the actual send")
    if m.completeness.unmatched:
        notes.append(
            f"{m.completeness.unmatched:,} decisions named no input of this run "
            "(another producer on the input topic, or a service replaying older records)"
        )
    config = msgspec.structs.replace(
        config, budget_ms=slo.budget_ms, co_corrected=pacing.paced, notes=notes
    )
    return RunResult(
        config=config,
        started_wall_ns=timing.started_wall_ns,
        ended_wall_ns=timing.ended_wall_ns,
        send_span_s=m.send_span_s,
        sender=m.sender,
        completeness=m.completeness,
        throughput=m.throughput,
        latency=m.latency,
        stages=m.stages,
        batch_sizes=m.batch_sizes,
        series=m.series,
        verdict=verdict,
        env=environment(),
    )


def config_for(
    plan: Plan,
    pacing: Pacing,
    settings: Settings,
    transport: KafkaTransport | InProcessTransport | Transport,
    *,
    budget_source: str,
    quiet_s: float,
    prefix_s: float | None = None,
    limit: int | None = None,
    service: str = "",
) -> RunConfig:
    """The ``RunConfig`` of a replay of ``plan`` through ``transport``."""
    k = settings.kafka
    kafka = isinstance(transport, KafkaTransport)
    return RunConfig(
        feed=str(plan.path),
        feed_rows=plan.feed_rows,
        rows_replayed=plan.n,
        feed_span_s=plan.span_s,
        mode="kafka" if kafka else "in-process",
        service=service or transport.description,
        speed=pacing.label(),
        rate=pacing.rate,
        co_corrected=pacing.paced,
        bootstrap=k.bootstrap_servers if kafka else "",
        input_topic=getattr(transport, "topic", k.input_topics[0]),
        decision_topic=k.decision_topic,
        dlq_topic=k.dlq_topic,
        partitions=int(getattr(transport, "partitions", 0)),
        encoding=plan.encoding.value,
        decision_encoding=k.output_encoding,
        fetch_max_wait_ms=transport.fetch_max_wait_ms
        if isinstance(transport, KafkaTransport)
        else 0,
        source_ts=plan.source_ts,
        prefix_s=prefix_s,
        limit=limit,
        budget_source=budget_source,
        quiet_s=quiet_s,
    )


async def run_feed(
    plan: Plan,
    transport: Transport,
    *,
    pacing: Pacing,
    slo: Slo,
    config: RunConfig,
    quiet_s: float = DEFAULT_QUIET_S,
    lag_threshold_ms: float = DEFAULT_LAG_THRESHOLD_MS,
    progress: Progress | None = None,
    diagnosis: Diagnosis | None = None,
) -> RunResult:
    """Replay ``plan`` through ``transport`` and return every figure with the verdict;
    with ``diagnosis``, time this process's collections and loop lag meanwhile and keep
    the per-window figures there (``replay.diagnose``)."""
    rec, timing = await replay(
        plan,
        transport,
        pacing=pacing,
        quiet_s=quiet_s,
        progress=progress,
        lag_probe=None if diagnosis is None else diagnosis.harness_lag,
        gc_pauses=None if diagnosis is None else diagnosis.harness_gc,
    )
    if diagnosis is not None:
        diagnosis.recorded(rec)
    return build_result(
        rec, timing, config=config, slo=slo, pacing=pacing, lag_threshold_ms=lag_threshold_ms
    )
