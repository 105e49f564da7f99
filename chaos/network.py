"""Network faults between the service and the broker, through :class:`chaos.proxy.ChaosProxy`.

The service reaches the broker only through the proxy (the broker's ``PROXIED`` listener is
advertised at the proxy's port); the load and the collector use the plain listener, so only
the service's traffic suffers. On the timeline: added latency, a stall shorter than the
session timeout, every connection reset twice, new connections refused for a second.
"""

from __future__ import annotations

import asyncio
import time

from chaos.context import Clock, Context, Row, drive
from chaos.load import recovery_s
from chaos.proxy import ChaosProxy

__all__ = ["network"]


async def network(ctx: Context) -> Row:
    """Latency, a stall, dropped and refused connections between service and broker."""
    name = "network"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    assert ctx.broker.proxy_port is not None
    proxy = ChaosProxy(ctx.broker.proxy_port, ctx.broker.inner_address)
    await proxy.start()
    cfg = ctx.config(name, topics, bootstrap=ctx.broker.proxied_bootstrap)
    svc = ctx.service(name, ["serve", "--config", str(cfg)])
    latency_ms = 50.0
    stall_s = ctx.scale(3.0, 4.0)
    phase = ctx.scale(2.0, 5.0)
    marks: list[tuple[str, float]] = []
    await svc.start()
    try:
        await svc.wait_event("partitions_assigned", timeout_s=90)
        await asyncio.sleep(0.5)

        async def timeline(clock: Clock) -> None:
            def mark(what: str) -> None:
                marks.append((what, round(clock(), 2)))

            await asyncio.sleep(phase)
            mark(f"latency +{latency_ms:g} ms")
            proxy.latency_s = latency_ms / 1000
            await asyncio.sleep(phase)
            proxy.latency_s = 0.0
            mark("stall")
            proxy.stall()
            await asyncio.sleep(stall_s)
            proxy.unstall()
            mark("unstall")
            await asyncio.sleep(phase)
            mark("drop")
            await proxy.drop()
            await asyncio.sleep(phase / 2)
            mark("drop + refuse 1 s")
            proxy.refuse = True
            await proxy.drop()
            await asyncio.sleep(1.0)
            proxy.refuse = False
            mark("healed")
            marks.append(("healed_wall_ns", time.time_ns()))

        seconds = 4.5 * phase + stall_s + 1.0 + ctx.scale(4.0, 10.0)
        run = await drive(
            ctx,
            topics,
            rate=300.0,
            seconds=seconds,
            timeline=timeline,
            complete_timeout_s=60,
        )
        alive = svc.returncode is None
    finally:
        status = await svc.terminate(30)
        await proxy.close()
    row.apply(run.ledger.tally())
    row.peak_rss_mb = round(svc.peak_rss_kb / 1024, 1) if svc.peak_rss_kb else None
    healed = int(dict(marks)["healed_wall_ns"])
    first_fault = healed - int((seconds - 4.0) * 1e9)
    row.recovery_s = round(recovery_s(run.ledger, healed, window_start_ns=first_fault), 2)
    row.figures.update(
        timeline=[m for m in marks if m[0] != "healed_wall_ns"],
        proxy={
            "connections": proxy.stats.connections,
            "dropped": proxy.stats.dropped,
            "refused": proxy.stats.refused,
        },
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "service stayed up": alive,
        "reconnected after drops": proxy.stats.connections > proxy.stats.dropped > 0,
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()
