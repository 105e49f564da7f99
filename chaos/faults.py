"""Process and broker faults: a worker killed, the broker restarted, a restart from a commit.

Each runs ``weir serve`` as a child process against the chaos broker, drives open-loop
load through it (``chaos.context.drive``) and injects its fault on a timeline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from chaos.context import Clock, Context, Row, Run, Timeline, Topics, drive, http_port
from chaos.load import committed_offsets, recovery_s
from chaos.procs import ServiceProc
from service.http import http_get

__all__ = [
    "broker_restart",
    "kill_worker",
    "kill_worker_eos",
    "restart_commit",
    "stall_worker_eos",
]

_BASE_RATE = 60.0
"""Events per second of the recorded feed the kill scenario replays at 10x."""


async def _ready(svc: ServiceProc, assigned: int = 1, timeout_s: float = 90.0) -> None:
    await svc.wait_event("partitions_assigned", count=assigned, timeout_s=timeout_s)
    await asyncio.sleep(0.5)


def _rss(row: Row, svc: ServiceProc) -> None:
    row.peak_rss_mb = round(svc.peak_rss_kb / 1024, 1) if svc.peak_rss_kb else None


async def _three_workers(
    ctx: Context,
    name: str,
    topics: Topics,
    cfg: Path,
    *,
    seconds: float,
    fault: Callable[[ServiceProc], Timeline],
    committed_only: bool,
) -> tuple[Run, int | None, ServiceProc]:
    """``weir serve --workers 3`` on ``cfg``, once every worker holds partitions driven at
    10x the base rate for ``seconds`` with ``fault(service)`` on the timeline, then
    stopped: the run, the exit status and the service."""
    svc = ctx.service(name, ["serve", "--config", str(cfg), "--workers", "3"])
    await svc.start()
    try:
        await svc.wait_event("serving", count=3, timeout_s=90)
        await _ready(svc, assigned=3)
        run = await drive(
            ctx,
            topics,
            rate=10 * _BASE_RATE,
            seconds=seconds,
            timeline=fault(svc),
            committed_only=committed_only,
            complete_timeout_s=90,
            settle_s=2.0,
        )
    finally:
        status = await svc.terminate(40)
    return run, status, svc


def _tally(row: Row, run: Run, svc: ServiceProc, fault_ns: int) -> list[int]:
    """Fill ``row`` from the run (outcomes, peak RSS, recovery after the fault at
    ``fault_ns``); when partitions were assigned after the fault."""
    row.apply(run.ledger.tally())
    _rss(row, svc)
    row.recovery_s = round(recovery_s(run.ledger, fault_ns), 2)
    return _after(svc, "partitions_assigned", fault_ns)


def _after(svc: ServiceProc, event: str, since_ns: int) -> list[int]:
    """When the service logged ``event`` after ``since_ns`` (wall ns)."""
    return [ts for ts, _ in svc.events(event) if ts > since_ns]


async def kill_worker(ctx: Context, *, eos: bool = False) -> Row:
    """kill -9 one of three workers (``weir serve --workers 3``) mid-replay at 10x."""
    name = "kill_worker_eos" if eos else "kill_worker"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name, partitions=6)
    delivery: dict[str, object] = {"commit_interval_ms": 100}
    if eos:
        delivery = {"mode": "exactly_once", "flush_interval_ms": 100}
    cfg = ctx.config(name, topics, delivery=delivery)
    seconds = ctx.scale(10.0, 30.0)
    killed: dict[str, int] = {}

    def fault(svc: ServiceProc) -> Timeline:
        async def timeline(clock: Clock) -> None:
            await asyncio.sleep(0.4 * seconds)
            victim = svc.worker_pids()[1]
            killed["wall_ns"] = time.time_ns()
            killed["pid"] = victim
            os.kill(victim, signal.SIGKILL)

        return timeline

    run, status, svc = await _three_workers(
        ctx, name, topics, cfg, seconds=seconds, fault=fault, committed_only=eos
    )
    kill_ns = killed["wall_ns"]
    reassigned = _tally(row, run, svc, kill_ns)
    died = svc.events("worker_died")
    row.figures.update(
        rate=10 * _BASE_RATE,
        seconds=seconds,
        killed_pid=killed["pid"],
        reassigned_s=round((reassigned[0] - kill_ns) / 1e9, 2) if reassigned else None,
        restarted=len(svc.worker_pids()) - 3,
        sender_max_lag_ms=round(run.sent.max_lag_ms, 1),
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "worker restarted": bool(died) and len(svc.worker_pids()) >= 4,
        "partitions reassigned": bool(reassigned),
        "clean exit": status == 0,
    }
    if eos:
        row.checks["duplicated == 0 (read_committed)"] = row.duplicated == 0
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()


async def kill_worker_eos(ctx: Context) -> Row:
    """``kill_worker`` in exactly-once mode: exactly one committed decision per input."""
    return await kill_worker(ctx, eos=True)


async def stall_worker_eos(ctx: Context) -> Row:
    """SIGSTOP one of three exactly-once workers past its session timeout, then SIGCONT it.

    The group expires the stopped member and gives its partitions to the other two, which
    read on from the last commit. The stopped worker wakes with a transaction open over
    inputs that are now theirs: it must commit none of it (aiokafka's ``TxnOffsetCommit``
    carries no generation, so the broker would take it), then rejoin and serve on.
    """
    name = "stall_worker_eos"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name, partitions=6)
    session_ms = 6000  # ``Context.config``'s
    cfg = ctx.config(name, topics, delivery={"mode": "exactly_once", "flush_interval_ms": 100})
    stall_s = session_ms / 1000 + 4.0
    before_s = 3.0
    seconds = before_s + stall_s + ctx.scale(6.0, 15.0)
    marks: dict[str, int] = {}

    def fault(svc: ServiceProc) -> Timeline:
        async def timeline(clock: Clock) -> None:
            await asyncio.sleep(before_s)
            victim = svc.worker_pids()[1]
            marks["pid"] = victim
            marks["stopped"] = time.time_ns()
            os.kill(victim, signal.SIGSTOP)
            try:
                await asyncio.sleep(stall_s)
            finally:
                os.kill(victim, signal.SIGCONT)

        return timeline

    run, status, svc = await _three_workers(
        ctx, name, topics, cfg, seconds=seconds, fault=fault, committed_only=True
    )
    stopped = marks["stopped"]
    reassigned = _tally(row, run, svc, stopped)
    row.figures.update(
        rate=10 * _BASE_RATE,
        seconds=seconds,
        stall_s=stall_s,
        stopped_pid=marks["pid"],
        reassigned_s=round((reassigned[0] - stopped) / 1e9, 2) if reassigned else None,
        partitions_lost=len(_after(svc, "partitions_lost", stopped)),
        commits_held=len(_after(svc, "loop_stalled", stopped)),
        restarted=len(svc.worker_pids()) - 3,
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "duplicated == 0 (read_committed)": row.duplicated == 0,
        "partitions reassigned": bool(reassigned),
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()


async def broker_restart(ctx: Context) -> Row:
    """Stop the broker for 10 s mid-stream and start it again (same state dir and port)."""
    name = "broker_restart"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    port = http_port()
    # The outage is 10 s plus the broker's own restart (a JVM start: 20 s and more on a busy
    # 2-core host); decisions produced meanwhile wait in the producer for up to
    # request_timeout_ms, after which the worker stops by design (restart from the commit).
    # Riding the outage out is what this scenario checks, so the wait allows for the restart.
    cfg = ctx.config(
        name,
        topics,
        http={"enabled": True, "port": port},
        kafka={"request_timeout_ms": 120_000},
    )
    svc = ctx.service(name, ["serve", "--config", str(cfg)])
    await svc.start()
    outage_s = 10.0
    before_s = ctx.scale(3.0, 10.0)
    after_s = ctx.scale(5.0, 15.0)
    marks: dict[str, int] = {}
    probes: list[tuple[int, int]] = []
    stop_probe = asyncio.Event()

    async def probe() -> None:
        while not stop_probe.is_set():
            code, _ = await http_get(port, "/readyz", timeout_s=0.5)
            probes.append((time.time_ns(), code))
            await asyncio.sleep(0.1)

    try:
        await _ready(svc)
        prober = asyncio.create_task(probe())

        async def timeline(clock: Clock) -> None:
            await asyncio.sleep(before_s)
            marks["down"] = time.time_ns()
            await asyncio.to_thread(ctx.broker.stop)
            marks["stopped"] = time.time_ns()
            await asyncio.sleep(outage_s)
            marks["starting"] = time.time_ns()
            await asyncio.to_thread(ctx.broker.start)
            marks["up"] = time.time_ns()

        # The load spans the outage: the load producer buffers and retries like any other.
        seconds = before_s + outage_s + 10.0 + after_s
        run = await drive(
            ctx,
            topics,
            rate=200.0,
            seconds=seconds,
            timeline=timeline,
            complete_timeout_s=90,
        )
        stop_probe.set()
        await prober
        alive = svc.returncode is None
    finally:
        stop_probe.set()
        status = await svc.terminate(30)
    row.apply(run.ledger.tally())
    _rss(row, svc)
    down, up = marks["down"], marks["up"]
    during = [c for ts, c in probes if marks["stopped"] + 2e9 <= ts <= marks["starting"]]
    after = [ts for ts, c in probes if ts > up and c == 200]
    before = [c for ts, c in probes if ts < down]
    row.recovery_s = round(recovery_s(run.ledger, up, window_start_ns=down), 2)
    warnings: dict[str, int] = {}
    plain = 0
    for _, line in svc.lines:
        if not line.startswith("{"):
            plain += 1  # aiokafka's own (stdlib logging) lines, outside structlog
        elif '"level":"warning"' in line or '"level":"error"' in line:
            ev = line.split('"event":"', 1)[-1].split('"', 1)[0]
            warnings[ev] = warnings.get(ev, 0) + 1
    row.figures.update(
        outage_s=round((marks["starting"] - marks["stopped"]) / 1e9, 1),
        broker_restart_s=round((up - marks["starting"]) / 1e9, 1),
        ready_again_s=round((after[0] - up) / 1e9, 2) if after else None,
        readyz_during_outage=sorted(set(during)),
        warnings=warnings,
        plain_text_log_lines=plain,
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "service stayed up": alive,
        "ready before": bool(before) and before[-1] == 200,
        "not ready during outage": bool(during) and all(c != 200 for c in during),
        "ready after": bool(after),
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()


async def restart_commit(ctx: Context) -> Row:
    """kill -9 the service, restart it: it resumes from the committed offsets, and only the
    decided-but-uncommitted tail is decided again."""
    name = "restart_commit"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    cfg = ctx.config(name, topics, delivery={"commit_interval_ms": 1000})
    first = ctx.service(f"{name}-1", ["serve", "--config", str(cfg)])
    second = ctx.service(f"{name}-2", ["serve", "--config", str(cfg)])
    seconds = ctx.scale(8.0, 30.0)
    at_kill: dict[str, object] = {}
    await first.start()
    try:
        await _ready(first)

        async def timeline(clock: Clock) -> None:
            await asyncio.sleep(0.45 * seconds)
            await first.kill()
            at_kill["wall_ns"] = time.time_ns()
            at_kill["committed"] = await committed_offsets(
                ctx.bootstrap, topics.group, topics.inp, topics.partitions
            )
            await second.start()

        run = await drive(
            ctx, topics, rate=400.0, seconds=seconds, timeline=timeline, complete_timeout_s=60
        )
    finally:
        await first.terminate(5)
        status = await second.terminate(30)
    row.apply(run.ledger.tally())
    row.peak_rss_mb = round(max(first.peak_rss_kb, second.peak_rss_kb) / 1024, 1)
    committed: list[int] = at_kill["committed"]  # type: ignore[assignment]
    kill_ns: int = at_kill["wall_ns"]  # type: ignore[assignment]
    # The uncommitted tail: inputs the first process decided (published before it died)
    # at or past the offset the group had committed.
    tail = {
        c
        for c, o in run.ledger.outcomes.items()
        if o.publish_wall_ns and o.publish_wall_ns[0] < kill_ns and c[1] >= committed[c[0]]
    }
    dups = {c for c, o in run.ledger.outcomes.items() if len(o.statuses) > 1}
    outside = {c for c in dups if c[1] < committed[c[0]]}
    row.recovery_s = round(recovery_s(run.ledger, kill_ns), 2)
    row.figures.update(
        committed_at_kill=committed,
        uncommitted_decided_tail=len(tail),
        reprocessed=len(dups),
        reprocessed_below_commit=len(outside),
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "reprocessed only the uncommitted tail": not outside and dups <= tail,
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()
