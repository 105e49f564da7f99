"""The open-loop replay against a fake service that loses, duplicates, delays and stalls."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from engines.fake import FakeEngine
from engines.head import Head
from replay.errors import ReplayError
from replay.inprocess import InProcessTransport
from replay.measure import Recorder
from replay.pacing import Pacing
from replay.plan import Plan, load_plan
from replay.progress import Progress
from replay.results import RunConfig
from replay.runner import replay, run_feed
from replay.slo import Slo
from replay.synthetic import synthesize_market
from schemas.codec import event_codec
from schemas.decision import Decision, Stamps, Status
from schemas.events import Quote
from schemas.features import FeatureSpec, Task
from schemas.feed import FeedWriter
from service.settings import load_settings

MS = 1_000_000


class FakeService:
    """A transport that is its own service: acks each send at once (offset = seq) and answers
    after ``delay_s``, except where told to lose, duplicate or dead-letter."""

    description = "fake service"

    def __init__(
        self,
        *,
        delay_s: float = 0.002,
        lose: set[int] | None = None,
        duplicate: set[int] | None = None,
        dead: set[int] | None = None,
        statuses: dict[int, Status] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.lose = lose or set()
        self.duplicate = duplicate or set()
        self.dead = dead or set()
        self.statuses = statuses or {}
        self.rec: Recorder | None = None
        self.closed = False
        self.payloads: dict[int, bytes] = {}

    async def open(self, recorder: Recorder) -> None:
        self.rec = recorder

    async def send(self, seq: int, key: bytes, value: bytes) -> None:
        assert self.rec is not None
        self.payloads[seq] = value
        self.rec.bound(seq, "in", 0, seq)
        if seq in self.lose:
            return
        loop = asyncio.get_running_loop()
        for _ in range(2 if seq in self.duplicate else 1):
            loop.call_later(self.delay_s, self._answer, seq, key.decode())

    def _answer(self, seq: int, key: str) -> None:
        assert self.rec is not None
        now = time.time_ns()
        if seq in self.dead:
            self.rec.dead_lettered("in", 0, seq, now)
            return
        status = self.statuses.get(seq, Status.OK)
        self.rec.decided(
            Decision(
                topic="in",
                partition=0,
                offset=seq,
                key=key,
                model_version="fake",
                status=status,
                batch_size=1,
                stamps=Stamps(ingest_wall_ns=now - MS // 2, publish_wall_ns=now - MS // 4),
            ),
            now,
        )

    async def end_burst(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class ManualClock:
    """Wall ns that move only when told: ``sleep`` jumps ahead by its argument at once."""

    def __init__(self, start_ns: int = 1_800_000_000 * 10**9) -> None:
        self.now_ns = start_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ns: int) -> None:
        self.now_ns += ns

    async def sleep(self, seconds: float) -> None:
        self.advance(round(seconds * 1e9))
        await asyncio.sleep(0)


class StallingService:
    """Acks and answers every send at once, the answer stamped ``delay_ns`` after the send,
    but takes send ``stall_at`` only after moving ``clock`` on by ``stall_ns`` (a broker
    that stops taking records for a while)."""

    description = "stalling service"

    def __init__(self, clock: ManualClock, *, delay_ns: int, stall_at: int, stall_ns: int) -> None:
        self.clock = clock
        self.delay_ns = delay_ns
        self.stall_at = stall_at
        self.stall_ns = stall_ns
        self.rec: Recorder | None = None

    async def open(self, recorder: Recorder) -> None:
        self.rec = recorder

    async def send(self, seq: int, key: bytes, value: bytes) -> None:
        assert self.rec is not None
        if seq == self.stall_at:
            self.clock.advance(self.stall_ns)
        self.rec.bound(seq, "in", 0, seq)
        decision = Decision(
            topic="in",
            partition=0,
            offset=seq,
            key=key.decode(),
            model_version="fake",
            status=Status.OK,
        )
        self.rec.decided(decision, self.clock() + self.delay_ns)

    async def end_burst(self) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture
def make_feed(tmp_path: Path) -> Callable[..., Path]:
    """Writes a feed of ``n`` quotes, ``gap_ms`` apart, over ``keys`` keys."""

    def make(n: int = 200, gap_ms: float = 1.0, keys: int = 3, source: bool = True) -> Path:
        path = tmp_path / f"feed-{n}-{gap_ms}-{keys}-{source}.parquet"
        t0 = 1_700_000_000 * 10**9
        with FeedWriter(path) as w:
            for i in range(n):
                recv = t0 + int(i * gap_ms * MS)
                q = Quote(
                    symbol=f"K{i % keys}",
                    bid_px=100.0,
                    bid_qty=1.0,
                    ask_px=100.5,
                    ask_qty=1.0,
                    source_ts_ns=recv - (3 + i % 5) * MS if source else None,
                )
                w.write(q, recv)
        return path

    return make


def _config(plan: Plan) -> RunConfig:
    return RunConfig(
        feed=str(plan.path),
        feed_rows=plan.feed_rows,
        rows_replayed=plan.n,
        feed_span_s=plan.span_s,
        mode="fake",
    )


async def test_reports_exactly_the_injected_faults(make_feed: Callable[..., Path]) -> None:
    """Every injected loss, duplicate, dead letter, expiry and shed is counted exactly once."""
    plan = load_plan(make_feed(600, gap_ms=0.5))
    lose = {3, 100, 599}
    dup = {7, 8, 300}
    fake = FakeService(
        lose=lose,
        duplicate=dup,
        dead={50},
        statuses={10: Status.EXPIRED, 11: Status.SHED, 12: Status.WARMING},
    )
    result = await run_feed(
        plan,
        fake,
        pacing=Pacing(speed=1.0),
        slo=Slo(budget_ms=100.0, max_duplicates=0),
        config=_config(plan),
        quiet_s=0.3,
    )
    c = result.completeness
    assert (c.inputs, c.lost, c.duplicated, c.dead_lettered) == (600, 3, 3, 1)
    assert c.by_status == {"ok": 593, "expired": 1, "shed": 1, "warming": 1, "error": 0}
    assert c.attainment is not None and c.attainment <= 593 / (600 - 1 - 1)
    assert result.verdict is not None and not result.verdict.passed
    failed = {ch.name for ch in result.verdict.checks if not ch.passed}
    assert failed == {"lost", "duplicates"}
    assert fake.closed


async def test_stall_reproduces_coordinated_omission(make_feed: Callable[..., Path]) -> None:
    """A 300 ms stall of the sender at 2000 events/s shows in the corrected latency (every
    event due meanwhile carries its wait) and not in the raw one, and the run is flagged as
    behind."""
    plan = load_plan(make_feed(2000))
    clock = ManualClock()
    fake = StallingService(clock, delay_ns=1 * MS, stall_at=400, stall_ns=300 * MS)
    rec, _ = await replay(
        plan, fake, pacing=Pacing(rate=2000.0), quiet_s=0.3, clock=clock, sleep=clock.sleep
    )
    n = rec.n_sent
    assert n == 2000
    # Event i is due every 0.5 ms; events 400..1000 all go out when the stall ends, 300 ms
    # after event 400 was due, so event i waited 300 ms - (i - 400) * 0.5 ms.
    waited = np.zeros(n, np.int64)
    waited[400:1001] = 300 * MS - np.arange(601) * MS // 2
    assert np.array_equal(rec.actual[:n] - rec.intended[:n], waited)
    assert np.array_equal(rec.received[:n] - rec.intended[:n], waited + 1 * MS)
    assert np.all(rec.received[:n] - rec.actual[:n] == 1 * MS)
    m = rec.finish(budget_ms=50.0, lag_threshold_ms=50.0)
    e2e, raw = m.latency["e2e"], m.latency["raw"]
    assert (e2e.max_ms, raw.max_ms, raw.min_ms) == (301.0, 1.0, 1.0)
    # Over the 50 ms budget: the 502 events whose wait was more than 49 ms.
    assert m.completeness.over_budget == 502
    assert m.sender.behind and m.sender.lag.max_ms == 300.0
    assert m.completeness.lost == 0


async def test_pacing_follows_the_recorded_gaps_times_speed(
    make_feed: Callable[..., Path],
) -> None:
    """At speed 10, event i is due 1/10 of its recorded offset after the start."""
    plan = load_plan(make_feed(300, gap_ms=2.0))
    rec, _ = await replay(plan, FakeService(), pacing=Pacing(speed=10.0), quiet_s=0.2)
    intended = rec.intended[: rec.n_sent]
    gaps = np.diff(intended - intended[0])
    assert np.all(gaps == 200_000)
    assert rec.finish(budget_ms=10).completeness.lost == 0


async def test_max_speed_is_not_co_corrected(make_feed: Callable[..., Path]) -> None:
    """At speed max there is no schedule: intended = actual send, and the config says so."""
    plan = load_plan(make_feed(200))
    result = await run_feed(
        plan,
        FakeService(),
        pacing=Pacing.parse("max"),
        slo=Slo.default(50.0),
        config=_config(plan),
        quiet_s=0.2,
    )
    assert not result.config.co_corrected
    assert result.sender.intended_rate is None
    assert result.latency["e2e"].count == result.latency["raw"].count == 200


async def test_source_times_are_shifted_to_the_replay(make_feed: Callable[..., Path]) -> None:
    """Shifted payloads carry intended send - (recorded transit - its minimum)."""
    plan = load_plan(make_feed(50), encoding="json")
    fake = FakeService()
    rec, _ = await replay(plan, fake, pacing=Pacing(speed=1.0), quiet_s=0.2)
    codec = event_codec("json")
    for seq in range(50):
        sent = codec.decode(fake.payloads[seq])
        excess = (3 + seq % 5) * MS - 3 * MS
        assert sent.source_ts_ns == int(rec.intended[seq]) - excess


def test_plan_prefix_and_errors(make_feed: Callable[..., Path]) -> None:
    """--seconds and --limit cut the feed; bad pacing values fail with the value named."""
    path = make_feed(100, gap_ms=10.0)
    assert load_plan(path, seconds=0.25).n == 25
    assert load_plan(path, limit=7).n == 7
    with pytest.raises(ReplayError, match=r"--speed must be a number > 0 or 'max', got 'fast'"):
        Pacing.parse("fast")
    with pytest.raises(ReplayError, match=r"--rate must be a number of events/s > 0, got -1.0"):
        Pacing.parse("1", -1.0)


async def test_in_process_pipeline_decides_every_event(
    tmp_path: Path, make_engine: Callable[..., FakeEngine]
) -> None:
    """Replaying into the real pipeline in-process gives one decision per event, none lost."""
    feed = tmp_path / "syn.parquet"
    synthesize_market(feed, seconds=1.0, seed=1, rate=150.0)
    spec = FeatureSpec(task=Task.TRADING, window=4)
    engine = make_engine(window=4, latency_ns=20_000)
    settings = load_settings(env={"WEIR_SCHEDULER__BUDGET_MS": "20"})
    transport = InProcessTransport(
        settings,
        engine=engine,
        head=Head("trading", ["SELL", "HOLD", "BUY"]),
        spec=spec,
        model_version="fake-1",
        partitions=2,
    )
    plan = load_plan(feed, encoding=settings.kafka.input_encoding)
    rec, _ = await replay(plan, transport, pacing=Pacing(speed=4.0), quiet_s=1.0)
    c = rec.finish(budget_ms=50).completeness
    assert c.inputs == plan.n and c.decided == plan.n
    assert (c.lost, c.duplicated, c.unmatched) == (0, 0, 0)
    assert c.by_status["warming"] == 2 * 3  # window - 1 per symbol
    assert transport.pipeline is None  # closed


def test_result_config_is_plain_data(make_feed: Callable[..., Path]) -> None:
    """The run config survives msgspec's JSON round trip."""
    plan = load_plan(make_feed(10))
    cfg = _config(plan)
    back: Any = msgspec.json.decode(msgspec.json.encode(cfg), type=RunConfig)
    assert back == cfg


def test_progress_lines_name_the_figures(make_feed: Callable[..., Path]) -> None:
    """Off a terminal, each progress line is a plain line with sent, decided, p99 and lag."""
    rec = Recorder(4)
    for i in range(3):
        rec.sent(i, 1_000 * MS + i * MS, 1_000 * MS + i * MS)
        rec.bound(i, "in", 0, i)
    rec.decided(
        Decision(topic="in", partition=0, offset=0, key="K", model_version="t", status=Status.OK),
        1_002 * MS,
    )
    stream = io.StringIO()
    progress = Progress(3, 10.0, stream=stream)
    progress.draw(rec)
    progress.done()
    line = stream.getvalue()
    assert line.startswith("sent 3/3  decided 1  ")
    assert "p99 2.10 ms" in line and "sender lag max 0.0 ms" in line and line.endswith(" s\n")


def test_planned_duration_follows_the_pacing() -> None:
    """A speed divides the recorded span, a fixed rate spaces the events, max has none."""
    assert Pacing.parse("10").planned_s(1000, 30.0) == 3.0
    assert Pacing.parse("1", rate=500.0).planned_s(1000, 30.0) == 2.0
    assert Pacing.parse("max").planned_s(1000, 30.0) is None
