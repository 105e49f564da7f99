"""Faults the runtime must meet by stopping or by pausing, never by losing: a background
task that dies, and a produce path slower than the input.

Both run ``python -m chaos.worker`` (the real runtime around a scripted fake engine; its
stats file gives readiness, pauses, the sink's in-flight messages and bytes, task deaths).

- ``dispatcher_death``: the engine raises something other than ``EngineError``, so the
  dispatcher task dies. The worker must fail readiness, stop with the cause and exit
  non-zero, committing nothing more; restarted (as ``weir serve --workers`` or Kubernetes
  would), it resumes from the last commit and every input gets its decision.
- ``slow_produce``: the producer takes at most ``rate`` messages a second for a while.
  The decisions produced but not acknowledged stay within ``max_inflight_decisions`` and
  ``max_inflight_bytes``, consumption pauses (the backlog waits in Kafka) and resumes,
  memory stays bounded, and nothing is lost.
"""

from __future__ import annotations

import time
from typing import Any

from chaos.context import Clock, Context, Row, drive
from chaos.pressure import RSS_BOUND_MB, start_worker, worker_stats
from chaos.procs import ServiceProc
from chaos.worker import Fault, Plan
from engines.fake import LatencyModel

__all__ = ["dispatcher_death", "slow_produce"]

STOP_BOUND_S = 5.0
"""Stated bound on the time from the dispatcher's death to the worker's exit."""


def _first(stats: list[dict[str, Any]], fault: str) -> dict[str, Any] | None:
    return next((s for s in stats if s["fault"] == fault), None)


async def dispatcher_death(ctx: Context) -> Row:
    """The dispatcher dies mid-stream: readiness fails, the worker exits non-zero with the
    cause, the restarted worker decides everything from the last commit (lost == 0)."""
    name = "dispatcher_death"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    cfg = ctx.config(name, topics, delivery={"commit_interval_ms": 100})
    latency = LatencyModel(base_ns=1_000_000, per_row_ns=50_000)
    lead = ctx.scale(2.0, 6.0)
    plan = Plan(latency=latency, faults=[Fault(kind="crash", at_s=lead, for_s=3600.0)])
    first, first_stats = await start_worker(ctx, name, cfg, plan)
    second: ServiceProc | None = None
    second_stats = None
    seen: dict[str, Any] = {}

    async def timeline(clock: Clock) -> None:
        nonlocal second, second_stats
        seen["status"] = await first.wait(lead + 60.0)
        seen["exit_wall_ns"] = time.time_ns()
        second, second_stats = await start_worker(
            ctx, f"{name}-restarted", cfg, Plan(latency=latency)
        )

    seconds = lead + ctx.scale(6.0, 20.0)
    try:
        run = await drive(
            ctx, topics, rate=300.0, seconds=seconds, timeline=timeline, complete_timeout_s=90
        )
    finally:
        await first.terminate(10)
        restarted_status = await second.terminate(30) if second is not None else None
    row.apply(run.ledger.tally())
    procs = [p for p in (first, second) if p is not None]
    row.peak_rss_mb = round(max(p.peak_rss_kb for p in procs) / 1024, 1)
    stats = worker_stats(first_stats)
    final = stats[-1] if stats and stats[-1].get("final") else None
    crash = _first(stats, "crash")
    stop_s = (final["wall_ns"] - crash["wall_ns"]) / 1e9 if final and crash else None
    status = seen.get("status")
    died = "background task 'weir-dispatch' died"
    row.recovery_s = round(stop_s, 2) if stop_s is not None else None
    row.figures.update(
        exit_status=status,
        stop_after_fault_s=round(stop_s, 2) if stop_s is not None else None,
        readiness_at_exit=final["readiness"] if final else None,
        task_deaths=final["task_deaths"] if final else None,
        restarted_exit_status=restarted_status,
        cause_logged=died in first.text(),
    )
    row.checks = {
        "lost == 0 after the restart": row.lost == 0 and run.complete,
        "exited non-zero": status not in (None, 0),
        f"stopped within {STOP_BOUND_S:g} s of the fault": stop_s is not None
        and stop_s < STOP_BOUND_S,
        "readiness failed with the cause": final is not None
        and final["readiness"][0] is False
        and died in final["readiness"][1],
        "death counted": final is not None and final["task_deaths"] == {"weir-dispatch": 1},
        "cause in the log": died in first.text(),
        "restarted worker clean exit": restarted_status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()


async def slow_produce(ctx: Context) -> Row:
    """The produce path is throttled far below the input rate for a while: in-flight
    decisions stay within their bounds, consumption pauses and resumes, RSS stays bounded,
    nothing is lost."""
    name = "slow_produce"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    max_inflight = 300
    max_bytes = 128 * 1024
    cfg = ctx.config(
        name,
        topics,
        delivery={
            "commit_interval_ms": 100,
            "max_inflight_decisions": max_inflight,
            "max_inflight_bytes": max_bytes,
        },
    )
    lead = ctx.scale(2.0, 5.0)
    throttle_s = ctx.scale(4.0, 20.0)
    rate = ctx.scale(1000.0, 3000.0)
    produce_rate = 100.0
    plan = Plan(
        latency=LatencyModel(base_ns=1_000_000, per_row_ns=20_000),
        faults=[Fault(kind="throttle", at_s=lead, for_s=throttle_s, rate=produce_rate)],
    )
    svc, stats_path = await start_worker(ctx, name, cfg, plan)
    seconds = lead + throttle_s + ctx.scale(3.0, 8.0)
    try:
        run = await drive(ctx, topics, rate=rate, seconds=seconds, complete_timeout_s=120)
        alive = svc.returncode is None
    finally:
        status = await svc.terminate(30)
    stats = worker_stats(stats_path)
    row.apply(run.ledger.tally())
    row.peak_rss_mb = round(svc.peak_rss_kb / 1024, 1) if svc.peak_rss_kb else None
    throttled = [s for s in stats if s["fault"] == "throttle"]
    live = [s for s in stats if not s.get("final")]
    max_seen = max((s["sink_inflight"] for s in stats), default=0)
    max_seen_bytes = max((s["sink_bytes"] for s in stats), default=0)
    waits = max((s["sink_waits"] for s in stats), default=0)
    end = throttled[-1]["wall_ns"] if throttled else None
    row.recovery_s = (
        round((run.done_wall_ns - end) / 1e9, 2) if end is not None and run.complete else None
    )
    row.figures.update(
        rate_per_s=rate,
        produce_rate_per_s=produce_rate,
        throttle_s=throttle_s,
        max_inflight=max_inflight,
        max_inflight_seen=max_seen,
        max_inflight_bytes=max_bytes,
        max_inflight_bytes_seen=max_seen_bytes,
        sends_that_waited=waits,
        pauses=max((s["pauses"] for s in stats), default=0),
        rss_bound_mb=RSS_BOUND_MB,
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "in-flight decisions within the bound": 0 < max_seen <= max_inflight,
        "in-flight bytes within the bound": max_seen_bytes <= max_bytes,
        "consumption paused while throttled": any(s["paused"] for s in throttled),
        "resumed afterwards": bool(live) and not live[-1]["paused"],
        f"peak RSS < {RSS_BOUND_MB:g} MB": row.peak_rss_mb is not None
        and row.peak_rss_mb < RSS_BOUND_MB,
        "service stayed up": alive,
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()
