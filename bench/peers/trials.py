"""One trial of the peer benchmark and the loads it replays: ``run_trial`` replays a plan
into one contender session and takes its figures; ``Plans`` holds the prepared loads;
``ramp_rates`` and ``bisect_rate`` pick the fixed rates of a ramp. Used by the harness and
by the scenarios (``bench.peers.scenarios``), which must not import the harness back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.peers import opsprobe, procstat
from bench.peers.results import MIN_ATTAINMENT, MIN_SEND_RATIO, ClassFigures, Trial
from bench.peers.session import Options, Session
from replay.kafka import KafkaTransport
from replay.measure import Recorder
from replay.pacing import Pacing
from replay.plan import Plan, load_plan
from replay.results import RunResult, write_result

# -- plans --------------------------------------------------------------------------------------


def tile_plan(plan: Plan, n: int) -> Plan:
    """``n`` events: the plan's events repeated in order (for ramps longer than the feed)."""
    idx = np.arange(n) % plan.n
    laps = np.arange(n) // plan.n
    recv = plan.recv_rel[idx] + laps * (int(plan.recv_rel[-1]) + 1)
    return Plan(
        path=plan.path,
        feed_rows=plan.feed_rows,
        keys=[plan.keys[i] for i in idx.tolist()],
        events=[plan.events[i] for i in idx.tolist()],
        recv_rel=recv.astype(np.int64),
        excess=plan.excess[idx],
        encoding=plan.encoding,
        source_ts=plan.source_ts,
    )


# -- one trial ----------------------------------------------------------------------------------


def _rate(r: float | None) -> str:
    return "-" if r is None else f"{r:,.0f}/s"


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _loadavg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def trial_of(
    result: RunResult,
    *,
    contender: str,
    load: str,
    repeat: int,
    budget_ms: float,
    cpu_s: float | None,
    harness_cpu_s: float | None = None,
    broker_cpu_s: float | None = None,
    peak_rss: int | None,
    loadavg: tuple[float, float],
    result_file: str,
    workers: int = 1,
) -> Trial:
    """The table's figures of one replay result."""
    e2e = result.latency["e2e"]
    c = result.completeness
    s = result.sender
    p99 = e2e.pct(99.0)
    per_1k = 1000 / c.inputs if c.inputs else None

    def per(cpu: float | None) -> float | None:
        return None if cpu is None or per_1k is None else cpu * per_1k

    batches = result.batch_sizes
    rows = sum(batches.values())
    batch_mean = sum(int(b) * n for b, n in batches.items()) / rows if rows else None
    harness_limited = bool(s.intended_rate and s.achieved_rate < MIN_SEND_RATIO * s.intended_rate)
    sustainable = (
        p99 is not None
        and p99 <= budget_ms
        and c.lost == 0
        and (c.attainment or 0.0) >= MIN_ATTAINMENT
        and not harness_limited
    )
    return Trial(
        contender=contender,
        load=load,
        repeat=repeat,
        offered_rate=s.intended_rate,
        events=c.inputs,
        p50_ms=e2e.pct(50.0),
        p99_ms=p99,
        p999_ms=e2e.pct(99.9),
        max_ms=e2e.max_ms,
        attainment=c.attainment,
        lost=c.lost,
        duplicated=c.duplicated,
        by_status={k: v for k, v in c.by_status.items() if v},
        unmatched=c.unmatched,
        sender_behind=s.behind,
        harness_limited=harness_limited,
        sender_lag_max_ms=s.lag.max_ms or 0.0,
        throughput=result.throughput,
        cpu_s=cpu_s,
        cpu_s_per_1k=per(cpu_s),
        harness_cpu_s_per_1k=per(harness_cpu_s),
        broker_cpu_s_per_1k=per(broker_cpu_s),
        peak_rss_mib=None if peak_rss is None else peak_rss / 2**20,
        loadavg=loadavg,
        stages_p99_ms={k: v.pct(99.0) for k, v in result.stages.items() if v.count},
        batch_mean=batch_mean,
        sustainable=sustainable,
        result_file=result_file,
        notes=list(result.config.notes),
        dead_lettered=c.dead_lettered,
        misses=c.misses,
        planned_s=(s.sent / s.intended_rate) if s.intended_rate else None,
        workers=workers,
    )


def _cpu(pids: list[int]) -> float | None:
    vals = [procstat.cpu_seconds(pid) for pid in pids]
    return None if any(v is None for v in vals) else sum(v or 0.0 for v in vals)


async def run_trial(
    session: Session,
    plan: Plan,
    pacing: Pacing,
    *,
    load: str,
    repeat: int,
    name: str,
    transport: KafkaTransport | None = None,
    classes: Callable[[Recorder], dict[str, ClassFigures]] | None = None,
) -> Trial:
    """Replay ``plan`` into the session's contender and take its figures (and, with
    ``classes``, each deadline class's figures from the recorder)."""
    opts = session.opts
    pids = session.pids
    me = os.getpid()
    broker = session.broker_pid
    cpu0 = _cpu(pids)
    own0 = procstat.cpu_seconds(me)
    brk0 = procstat.cpu_seconds(broker) if broker else None
    load0 = _loadavg()
    ops0 = await opsprobe.sample(session.ops_port)
    planned = pacing.planned_s(plan.n, plan.span_s) or plan.span_s
    result, rec = await session.measure(
        plan, pacing, quiet_s=opts.quiet_s, max_s=3 * planned + 60.0, transport=transport
    )
    cpu1 = _cpu(pids)
    own1 = procstat.cpu_seconds(me)
    brk1 = procstat.cpu_seconds(broker) if broker else None
    ops1 = await opsprobe.sample(session.ops_port)
    loop_held, gc_pause = opsprobe.holds(ops0, ops1)
    session.sample_rss()
    path = opts.out / "runs" / f"{name}.json"
    write_result(result, path)
    trial = trial_of(
        result,
        contender=session.label,
        load=load,
        repeat=repeat,
        budget_ms=session.cfg.budget_ms,
        cpu_s=_delta(cpu0, cpu1),
        harness_cpu_s=_delta(own0, own1),
        broker_cpu_s=_delta(brk0, brk1),
        peak_rss=session.peak_rss,
        loadavg=(load0, _loadavg()),
        result_file=str(path.relative_to(opts.out)),
        workers=session.workers,
    )
    trial.loop_held_ms, trial.gc_pause_ms = loop_held, gc_pause
    trial.mean_batch = opsprobe.mean_batch(ops0, ops1)
    if classes is not None:
        trial.classes = classes(rec)
    return trial


# -- one contender, one repeat ---------------------------------------------------------------


class Plans:
    """The prepared loads."""

    def __init__(self, opts: Options, feed: Path) -> None:
        self.warm = load_plan(feed, limit=opts.warmup_events)
        self.x1 = load_plan(feed, seconds=opts.seconds_1x)
        self.x10 = load_plan(feed, seconds=opts.seconds_10x)
        self.base = load_plan(feed)

    def at_rate(self, rate: float, seconds: float) -> Plan:
        """``seconds`` worth of events at ``rate``/s (the feed repeated as needed)."""
        return tile_plan(self.base, max(1, round(rate * seconds)))


def ramp_rates(start: float, factor: float, top: float) -> list[float]:
    """``start``, ``start * factor``, ... up to ``top``."""
    rates = []
    r = start
    while r <= top * (1 + 1e-9):
        rates.append(float(round(r)))
        r *= factor
    return rates


def bisect_rate(lo: float, hi: float) -> float:
    """The geometric midpoint of ``lo`` and ``hi``, to two significant digits."""
    mid = math.sqrt(lo * hi)
    mag = 10 ** (math.floor(math.log10(mid)) - 1)
    return float(round(mid / mag) * mag)
