"""Engine faults and overload, with the real runtime around a scripted fake engine.

The service is ``python -m chaos.worker`` (``service.runtime.Runtime`` + a sleeping
``FakeEngine`` with a fault plan), which also reports every 100 ms whether its partitions
are paused, its queue, its engine profile and its memory (``<work>/<name>.stats.jsonl``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson

from chaos.context import Context, Row, drive, ok_timing, quantile
from chaos.load import recovery_s
from chaos.procs import ServiceProc
from chaos.worker import Fault, Plan
from engines.fake import LatencyModel

__all__ = [
    "RSS_BOUND_MB",
    "engine_faults",
    "overload",
    "overload_paused",
    "start_worker",
    "worker_stats",
]

RSS_BOUND_MB = 400.0
"""Stated bound on the worker's resident memory under overload."""


def worker_stats(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a ``chaos.worker`` wrote to its ``--stats`` file."""
    if not path.is_file():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def start_worker(ctx: Context, name: str, cfg: Path, plan: Plan) -> tuple[ServiceProc, Path]:
    """Start ``python -m chaos.worker`` with ``plan``; return it, once its partitions are
    assigned, and its stats file."""
    plan_path = ctx.work / f"{name}.plan.json"
    plan_path.write_bytes(msgspec.json.encode(plan))
    stats = ctx.work / f"{name}.stats.jsonl"
    stats.unlink(missing_ok=True)
    args = ["--config", str(cfg), "--plan", str(plan_path), "--stats", str(stats)]
    svc = ctx.service(name, args, module="chaos.worker")
    await svc.start()
    await svc.wait_event("partitions_assigned", timeout_s=90)
    return svc, stats


async def engine_faults(ctx: Context) -> Row:
    """The engine raises for a while, then runs 10x slower than its profile (past the budget)
    for a while: ``error`` then ``expired`` decisions, the loop keeps going, the profile
    follows."""
    name = "engine_faults"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    cfg = ctx.config(name, topics, scheduler={"budget_ms": 40.0})
    fail_s = ctx.scale(2.0, 6.0)
    slow_s = ctx.scale(9.0, 12.0)
    lead = ctx.scale(3.0, 8.0)
    latency = LatencyModel(base_ns=4_000_000, per_row_ns=200_000)
    factor = 10.0
    plan = Plan(
        latency=latency,
        faults=[
            Fault(kind="fail", at_s=lead, for_s=fail_s),
            Fault(kind="slow", at_s=lead + fail_s + 2.0, for_s=slow_s, factor=factor),
        ],
    )
    svc, stats_path = await start_worker(ctx, name, cfg, plan)
    seconds = lead + fail_s + 2.0 + slow_s + ctx.scale(4.0, 10.0)
    try:
        run = await drive(ctx, topics, rate=300.0, seconds=seconds, complete_timeout_s=60)
        alive = svc.returncode is None
    finally:
        status = await svc.terminate(30)
    stats = worker_stats(stats_path)
    row.apply(run.ledger.tally())
    row.peak_rss_mb = round(svc.peak_rss_kb / 1024, 1) if svc.peak_rss_kb else None
    # The profile of each bucket before the faults, and its highest p99 while slow.
    before: dict[str, float] = {}
    for s in stats:
        if s["ready"] and s["fault"] == "" and s["engine_errors"] == 0 and s["p99_ms"]:
            before = s["p99_ms"]
    during: dict[str, float] = {}
    for s in stats:
        if s["fault"] == "slow":
            for b, v in s["p99_ms"].items():
                during[b] = max(during.get(b, 0.0), v)
    ratios = {b: round(during[b] / before[b], 1) for b in during if before.get(b)}
    slow_walls = [s["wall_ns"] for s in stats if s["fault"] == "slow"]
    # Adapted: a bucket's profiled p99 reached the slowed engine's median (90 % of it). The
    # bar is the injected latency, not a ratio to the measured p99 before: host noise only
    # raises measured latencies, so a busy host cannot fail this check (it could a ratio).
    slowed_ms = {b: factor * latency.median_ns(int(b)) / 1e6 for b in during}
    tracked = {b for b, v in during.items() if v >= 0.9 * slowed_ms[b]}
    adapted = [
        s["wall_ns"]
        for s in stats
        if s["fault"] == "slow"
        and any(v >= 0.9 * slowed_ms[b] for b, v in s["p99_ms"].items() if b in slowed_ms)
    ]
    adapt_s = round((adapted[0] - slow_walls[0]) / 1e9, 2) if adapted and slow_walls else None
    ok_after = decided_after = 0
    if slow_walls:
        last_fault = slow_walls[-1]
        for seq, c in run.ledger.coords.items():
            o = run.ledger.outcomes.get(c)
            if run.ledger.sent_wall_ns[seq] > last_fault + 2e9 and o is not None:
                decided_after += 1
                ok_after += o.statuses[:1] == ["ok"]
        row.recovery_s = round(recovery_s(run.ledger, last_fault), 2)
    engine_errors = max((s["engine_errors"] for s in stats), default=0)
    timing = ok_timing(run.ledger)
    missed = timing.published_late
    row.figures.update(
        engine_errors=engine_errors,
        p99_ms_before=before,
        p99_ms_slow_max=during,
        p99_ratio_slow=ratios,
        profile_adapted_after_s=adapt_s,
        ok_published_after_deadline=missed,
        ok_late_not_flagged=timing.unflagged_late,
        decided_after_faults=decided_after,
        ok_after_faults=ok_after,
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "error decisions while failing": row.errors > 0 and engine_errors > 0,
        "slow: expired, or deadlines still met": row.expired > 0 or missed == 0,
        "loop kept running": alive and decided_after > 0,
        "ok decisions again after the spike": ok_after > 0,
        "profile adapted (a bucket's p99 reached the slowed engine's)": bool(tracked),
        "ok past deadline flagged late": timing.unflagged_late == 0,
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()


async def overload(ctx: Context) -> Row:
    """3x the sustainable rate, default settings: bounded memory, admitted events in their
    SLO, the rest shed or expired (never dropped), consumption going on while weir's queue
    sheds (the partitions stay, almost always, unpaused), the queue below its bound."""
    return await _overload(ctx, "overload", pause=False)


async def overload_paused(ctx: Context) -> Row:
    """3x the sustainable rate with ``[scheduler] pause_on_overload = true``: the same
    checks, except that the partitions are paused and resumed, and the lag drained
    afterwards."""
    return await _overload(ctx, "overload_paused", pause=True)


async def _overload(ctx: Context, name: str, *, pause: bool) -> Row:
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    budget_ms = 150.0
    max_batch = 16
    max_queue = 2000
    latency = LatencyModel(base_ns=20_000_000, per_row_ns=1_000_000)
    capacity = max_batch / (latency.median_ns(max_batch) / 1e9)
    rate = 3 * capacity
    cfg = ctx.config(
        name,
        topics,
        scheduler={
            "budget_ms": budget_ms,
            "anchor": "kafka",
            "max_queue": max_queue,
            **({"pause_on_overload": True} if pause else {}),
        },
        engine={"max_batch": max_batch},
        kafka={"max_poll_records": 500},
    )
    svc, stats_path = await start_worker(ctx, name, cfg, Plan(latency=latency))
    seconds = ctx.scale(8.0, 30.0)
    try:
        run = await drive(
            ctx,
            topics,
            rate=rate,
            seconds=seconds,
            anchor="kafka",
            complete_timeout_s=120,
        )
        alive = svc.returncode is None
        await asyncio.sleep(0.5)
    finally:
        status = await svc.terminate(30)
    stats = worker_stats(stats_path)
    row.apply(run.ledger.tally())
    row.peak_rss_mb = round(svc.peak_rss_kb / 1024, 1) if svc.peak_rss_kb else None
    timing = ok_timing(run.ledger)
    delays, missed = timing.delays_ms, timing.published_late
    pauses = max((s["pauses"] for s in stats), default=0)
    paused_at_end = bool(stats and stats[-1]["paused"])
    paused_share = sum(bool(s["paused"]) for s in stats) / max(1, len(stats))
    max_queued = max((s["queued"] for s in stats), default=0)
    drain_s = (run.done_wall_ns - run.load_end_wall_ns) / 1e9
    row.recovery_s = round(max(0.0, drain_s), 2)
    ok = row.figures["statuses"].get("ok", 0)
    row.figures.update(
        capacity_per_s=round(capacity),
        rate_per_s=round(rate),
        seconds=seconds,
        budget_ms=budget_ms,
        ok_ms_p50_p99_max=[
            quantile(delays, 0.5),
            quantile(delays, 0.99),
            round(delays[-1], 1) if delays else None,
        ],
        ok_published_after_deadline=missed,
        ok_inferred_after_deadline=timing.inferred_late,
        ok_late_not_flagged=timing.unflagged_late,
        ok_mean_batch=round(
            sum(o.batch_size for o in run.ledger.outcomes.values() if o.batch_size)
            / max(1, sum(1 for o in run.ledger.outcomes.values() if o.batch_size)),
            1,
        ),
        goodput_ok_per_s=round(row.figures["statuses"].get("ok", 0) / seconds),
        pauses=pauses,
        paused_share=round(paused_share, 3),
        max_queued=max_queued,
        rss_bound_mb=RSS_BOUND_MB,
        sender_max_lag_ms=round(run.sent.max_lag_ms, 1),
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        f"peak RSS < {RSS_BOUND_MB:g} MB": row.peak_rss_mb is not None
        and row.peak_rss_mb < RSS_BOUND_MB,
        "ok decisions in deadline (>= 99%)": ok > 0 and missed <= 0.01 * ok,
        "excess shed or expired": row.expired + row.shed > 0,
        "ok past deadline flagged late": timing.unflagged_late == 0,
        **(
            {"partitions paused and resumed": pauses > 0 and not paused_at_end}
            if pause
            else {
                "kept consuming (paused < 10 % of the time)": paused_share < 0.1,
                f"queue below its bound ({max_queue})": max_queued < max_queue,
            }
        ),
        "service stayed up": alive,
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()
