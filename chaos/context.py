"""What every scenario shares: where it runs, the result row, and the service it starts.

A scenario is ``async def run(ctx: Context) -> Row``. The :class:`Context` holds the chaos
broker (:class:`chaos.broker.ChaosKafka`: a plain listener for the load and the service, a
proxied one and a SASL_SSL one), a work directory for settings files and logs, the model
bundle, and ``fast`` (the CI subset's shorter durations and smaller counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from chaos.broker import ChaosKafka, ScramUser
from chaos.load import (
    Collector,
    Ledger,
    Payload,
    SendStats,
    Tally,
    create_topics,
    produce_open_loop,
    quote,
)
from chaos.procs import ServiceProc, write_toml
from chaos.tls import Pki
from service.broker._process import free_port
from service.settings import Secret

__all__ = [
    "Clock",
    "Context",
    "OkTiming",
    "Row",
    "Run",
    "Topics",
    "drive",
    "http_port",
    "make_bundle",
    "ok_timing",
    "quantile",
]

WINDOW = 4


class Row(msgspec.Struct, kw_only=True):
    """One scenario's figures and verdict."""

    scenario: str
    events: int = 0
    """Inputs the broker acknowledged."""
    lost: int = 0
    """Acknowledged inputs without any decision or dead letter."""
    duplicated: int = 0
    """Decisions beyond the first, over all inputs."""
    expired: int = 0
    shed: int = 0
    errors: int = 0
    """``error`` decisions."""
    dead: int = 0
    """Inputs dead-lettered."""
    recovery_s: float | None = None
    peak_rss_mb: float | None = None
    """Largest resident set of one service process."""
    verdict: str = "FAIL"
    checks: dict[str, bool] = msgspec.field(default_factory=dict)
    """Each invariant by name; the verdict is PASS when all hold."""
    figures: dict[str, Any] = msgspec.field(default_factory=dict)
    duration_s: float = 0.0
    notes: str = ""

    def judge(self) -> Row:
        """Set the verdict from the checks (PASS when there is at least one and all hold)."""
        self.verdict = "PASS" if self.checks and all(self.checks.values()) else "FAIL"
        return self

    def apply(self, tally: Tally) -> None:
        """Copy a ledger tally's counts in."""
        st = tally.statuses
        self.events = tally.events
        self.lost = tally.lost
        self.duplicated = tally.duplicated
        self.expired = st.get("expired", 0)
        self.shed = st.get("shed", 0)
        self.errors = st.get("error", 0)
        self.dead = st.get("dead", 0)
        self.figures["statuses"] = dict(sorted(st.items()))
        if tally.send_failed:
            self.figures["send_failed"] = tally.send_failed
        if tally.lost_sample:
            self.figures["lost_sample"] = tally.lost_sample


@dataclass(frozen=True)
class Topics:
    """The input, decision and dead-letter topics and the group of one run."""

    inp: str
    out: str
    dlq: str
    group: str
    partitions: int


def make_bundle(path: Path) -> Path:
    """A small trading bundle (window of 4 events) for the service under test."""
    from engines.fake import write_tiny_trading_bundle

    if (path / "metadata.json").is_file():
        return path
    write_tiny_trading_bundle(path, window=WINDOW, model_version="chaos-1")
    return path


@dataclass
class Context:
    """Where scenarios run (module docstring)."""

    broker: ChaosKafka
    work: Path
    bundle: Path
    fast: bool = True
    user: ScramUser = field(default_factory=lambda: ScramUser("weir", Secret("")))
    pki: Pki | None = None

    @property
    def bootstrap(self) -> str:
        """The broker's plain listener (load, collector, admin, most services)."""
        state = self.broker.status()
        assert state.bootstrap is not None
        return state.bootstrap

    async def topics(self, name: str, partitions: int = 3) -> Topics:
        """Fresh topics and group for one run of scenario ``name``."""
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        t = Topics(
            f"chaos.{tag}.in", f"chaos.{tag}.out", f"chaos.{tag}.dlq", f"chaos-{tag}", partitions
        )
        await create_topics(self.bootstrap, {t.inp: partitions, t.out: partitions, t.dlq: 1})
        return t

    def config(
        self,
        name: str,
        topics: Topics,
        *,
        bootstrap: str | None = None,
        **sections: dict[str, Any],
    ) -> Path:
        """A settings file for the service: sensible chaos defaults, ``sections`` on top."""
        base: dict[str, dict[str, Any]] = {
            "kafka": {
                "bootstrap_servers": bootstrap or self.bootstrap,
                "input_topics": [topics.inp],
                "decision_topic": topics.out,
                "dlq_topic": topics.dlq,
                "group_id": topics.group,
                "client_id": f"weir-{name}",
                "fetch_max_wait_ms": 5,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 500,
                "request_timeout_ms": 30000,
                "max_event_bytes": 65536,
            },
            "engine": {"bundle": str(self.bundle), "max_batch": 16, "warmup_iters": 20},
            "scheduler": {"budget_ms": 250.0},
            "delivery": {"commit_interval_ms": 100},
            "http": {"enabled": False},
            "log": {"level": "info"},
        }
        for section, values in sections.items():
            base.setdefault(section, {}).update(values)
        path = self.work / f"{name}-{uuid.uuid4().hex[:6]}.toml"
        return write_toml(path, base)

    def service(
        self, name: str, args: list[str], *, module: str = "service.cli", **env: str
    ) -> ServiceProc:
        """A service process whose log goes to ``<work>/<name>.log``."""
        return ServiceProc(args, log_path=self.work / f"{name}.log", env=env, module=module)

    def scale(self, fast: float, full: float) -> float:
        """``fast`` in the CI subset, else ``full``."""
        return fast if self.fast else full


def http_port() -> int:
    """A free loopback port for a service's HTTP endpoints."""
    return free_port()


class Clock:
    """Seconds since a start, for scenario timelines."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0


class OkTiming(NamedTuple):
    """How the first ``ok`` decisions of a run met their deadlines."""

    delays_ms: list[float]
    """Anchor to publish, ms, sorted."""
    published_late: int
    """Published after their deadline."""
    inferred_late: int
    """Inference finished after their deadline."""
    unflagged_late: int
    """Published after their deadline with ``late`` false."""


def ok_timing(ledger: Ledger) -> OkTiming:
    """Deadline figures of every first ``ok`` decision in ``ledger``."""
    delays: list[float] = []
    published = inferred = unflagged = 0
    for o in ledger.outcomes.values():
        if o.anchor_ms is not None:
            delays.append(o.anchor_ms)
        if o.late_ms is not None and o.late_ms > 0:
            published += 1
            unflagged += not o.flagged_late
        if o.done_late_ms is not None and o.done_late_ms > 0:
            inferred += 1
    delays.sort()
    return OkTiming(delays, published, inferred, unflagged)


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * q))], 2)


Timeline = Callable[[Clock], Awaitable[None]]


@dataclass
class Run:
    """What :func:`drive` gives back."""

    ledger: Ledger
    sent: SendStats
    complete: bool
    """Every acknowledged input got an outcome before the timeout."""
    load_end_wall_ns: int
    done_wall_ns: int
    """When the last outcome arrived (or the wait gave up)."""


async def drive(
    ctx: Context,
    topics: Topics,
    *,
    rate: float,
    seconds: float,
    timeline: Timeline | None = None,
    payload: Payload = quote,
    labels: Iterable[str] | None = None,
    committed_only: bool = False,
    anchor: str = "ingest",
    complete_timeout_s: float = 60.0,
    settle_s: float = 1.0,
    on_ledger: Callable[[Ledger], None] | None = None,
) -> Run:
    """Send ``rate * seconds`` inputs open loop while ``timeline`` injects its faults, then
    wait until every acknowledged input has an outcome (or ``complete_timeout_s``)."""
    ledger = Ledger()
    if on_ledger is not None:
        on_ledger(ledger)
    collector = Collector(
        ctx.bootstrap,
        topics.out,
        topics.dlq,
        ledger,
        committed_only=committed_only,
        partitions={topics.out: topics.partitions, topics.dlq: 1},
        anchor=anchor,
    )
    await collector.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=ctx.bootstrap,
        client_id="weir-chaos-load",
        linger_ms=2,
        request_timeout_ms=60_000,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    clock = Clock()
    try:
        load = asyncio.create_task(
            produce_open_loop(
                producer,
                topics.inp,
                ledger,
                rate=rate,
                count=int(rate * seconds),
                payload=payload,
                labels=labels,
            )
        )
        tasks: list[asyncio.Future[Any]] = [load]
        if timeline is not None:
            tasks.append(asyncio.ensure_future(timeline(clock)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        sent = load.result()
        end = time.time_ns()
        complete = await collector.wait_complete(complete_timeout_s, settle_s=settle_s)
        done = collector.last_wall_ns
    finally:
        with contextlib.suppress(KafkaError):
            await producer.stop()
        await collector.stop()
    return Run(ledger, sent, complete, end, done)
