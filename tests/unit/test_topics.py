"""Topics at start (checked, created, refused) and the watch over missing input topics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import InvalidReplicationFactorError, KafkaConnectionError
from structlog.testing import capture_logs

from service.errors import TopicError
from service.memory import MemoryAdmin
from service.settings import KafkaSettings, TopicSettings
from service.topics import InputWatch, check_topics

BROKER = "kafka-1:9092"


def _kafka(**changes: Any) -> KafkaSettings:
    base: dict[str, Any] = {
        "bootstrap_servers": BROKER,
        "input_topics": ["quotes", "trades"],
        "decision_topic": "decisions",
        "dlq_topic": "quotes.dlq",
    }
    return KafkaSettings(**{**base, **changes})


def _factory(admin: MemoryAdmin) -> Callable[[KafkaSettings], MemoryAdmin]:
    return lambda k: admin


ALL = {"quotes": 3, "trades": 3, "decisions": 3, "quotes.dlq": 1}


async def test_all_present_creates_nothing_and_warns_nothing() -> None:
    """With every topic there, the check returns no missing input and leaves the cluster alone."""
    admin = MemoryAdmin(ALL)
    with capture_logs() as logs:
        missing = await check_topics(_kafka(), TopicSettings(), admin=_factory(admin))
    assert missing == []
    assert admin.created == []
    assert logs == []
    assert not admin.open  # closed again


@pytest.mark.parametrize(
    ("absent", "message"),
    [
        (
            ["decisions"],
            "decision topic 'decisions' does not exist on Kafka at kafka-1:9092: create it, "
            "or set [topics] create = true (WEIR_TOPICS__CREATE=true)",
        ),
        (
            ["quotes.dlq"],
            "dead-letter topic 'quotes.dlq' does not exist on Kafka at kafka-1:9092: create "
            "it, or set [topics] create = true (WEIR_TOPICS__CREATE=true)",
        ),
        (
            ["decisions", "quotes.dlq", "quotes"],
            "decision topic 'decisions' and dead-letter topic 'quotes.dlq' do not exist on "
            "Kafka at kafka-1:9092: create them, or set [topics] create = true "
            "(WEIR_TOPICS__CREATE=true)",
        ),
    ],
)
async def test_missing_output_topic_is_an_error(absent: list[str], message: str) -> None:
    """A missing decision or dead-letter topic stops the start with an error naming it and the broker."""
    admin = MemoryAdmin({t: n for t, n in ALL.items() if t not in absent})
    with pytest.raises(TopicError) as info:
        await check_topics(_kafka(), TopicSettings(), admin=_factory(admin))
    assert str(info.value) == message
    assert admin.created == []
    assert not admin.open


async def test_a_shadow_topic_is_checked_and_created_like_the_decision_topic() -> None:
    """Given a shadow topic: missing, it stops the start by name; with create, it is made."""
    admin = MemoryAdmin(ALL)
    with pytest.raises(TopicError) as info:
        await check_topics(
            _kafka(), TopicSettings(), admin=_factory(admin), shadow_topic="decisions.shadow"
        )
    assert str(info.value) == (
        "shadow topic 'decisions.shadow' does not exist on Kafka at kafka-1:9092: create it, "
        "or set [topics] create = true (WEIR_TOPICS__CREATE=true)"
    )
    topics = TopicSettings(create=True, partitions=2)
    await check_topics(_kafka(), topics, admin=_factory(admin), shadow_topic="decisions.shadow")
    assert admin.created == [("decisions.shadow", 2, 1)]


async def test_missing_input_topic_is_warned_about_by_name() -> None:
    """A missing input topic is returned and gets one warning naming it and the broker."""
    admin = MemoryAdmin({t: n for t, n in ALL.items() if t != "trades"})
    with capture_logs() as logs:
        missing = await check_topics(_kafka(), TopicSettings(), admin=_factory(admin))
    assert missing == ["trades"]
    assert logs == [
        {
            "event": "input_topic_missing",
            "log_level": "warning",
            "topic": "trades",
            "bootstrap": BROKER,
            "missing_s": 0.0,
            "hint": "create it, or set [topics] create = true (WEIR_TOPICS__CREATE=true); "
            "it is consumed within 500 ms of its creation",
        }
    ]


async def test_create_makes_each_missing_topic_with_the_given_shape() -> None:
    """With create = true, every missing topic is created with the set partitions and replication."""
    admin = MemoryAdmin({"quotes": 6})
    topics = TopicSettings(create=True, partitions=4, replication_factor=2)
    missing = await check_topics(_kafka(), topics, admin=_factory(admin))
    assert missing == []
    assert admin.created == [
        ("trades", 4, 2),
        ("decisions", 4, 2),
        ("quotes.dlq", 4, 2),
    ]
    assert admin.partitions["quotes"] == 6  # an existing topic is left as it is


async def test_create_refused_names_topic_shape_and_broker() -> None:
    """A broker refusing the creation stops the start with the topic, its shape, the broker and why."""
    refusal = InvalidReplicationFactorError("replication factor 3 larger than 1 broker")
    admin = MemoryAdmin(
        {t: n for t, n in ALL.items() if t != "quotes.dlq"},
        refuse=lambda topic, p, rf: refusal,
    )
    topics = TopicSettings(create=True, partitions=2, replication_factor=3)
    with pytest.raises(TopicError) as info:
        await check_topics(_kafka(), topics, admin=_factory(admin))
    assert str(info.value) == (
        "cannot create dead-letter topic 'quotes.dlq' (2 partitions, replication factor 3) "
        f"on Kafka at kafka-1:9092: {refusal}"
    )
    assert info.value.__cause__ is refusal
    assert not admin.open


async def test_created_topic_without_leaders_times_out() -> None:
    """A created topic whose partitions get no leader within the request timeout is an error."""
    admin = MemoryAdmin({"quotes": 1, "trades": 1, "quotes.dlq": 1}, leaderless={"decisions"})
    with pytest.raises(TopicError) as info:
        await check_topics(
            _kafka(request_timeout_ms=50), TopicSettings(create=True), admin=_factory(admin)
        )
    assert str(info.value) == (
        "topics 'decisions' created on Kafka at kafka-1:9092 had no leader for every "
        "partition within 50 ms"
    )


async def test_lookup_failure_is_a_topic_error() -> None:
    """A failing topic lookup is wrapped with the broker named and the cause kept."""
    cause = KafkaConnectionError("connection reset")
    admin = MemoryAdmin(ALL, lookup_error=cause)
    with pytest.raises(TopicError) as info:
        await check_topics(_kafka(), TopicSettings(), admin=_factory(admin))
    assert str(info.value) == f"cannot look up topics on Kafka at kafka-1:9092: {cause}"
    assert info.value.__cause__ is cause


async def test_same_name_twice_is_checked_once() -> None:
    """A topic that is both input and dead-letter topic is created once, as an input."""
    admin = MemoryAdmin({"decisions": 1})
    k = _kafka(input_topics=["quotes"], dlq_topic="quotes")
    await check_topics(k, TopicSettings(create=True), admin=_factory(admin))
    assert admin.created == [("quotes", 1, 1)]


# -- the watch ---------------------------------------------------------------------------------


class _Consumer:
    """The consumer's metadata as the watch sees it, and the refreshes it asked for."""

    def __init__(self, known: dict[str, set[int]]) -> None:
        self.known = known
        self.refreshes = 0

    def partitions_for(self, topic: str) -> set[int] | None:
        return self.known.get(topic)

    def refresh(self) -> None:
        self.refreshes += 1


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _watch(
    consumer: _Consumer, clock: _Clock, warned: tuple[str, ...] = (), warn_ms: int = 30_000
) -> InputWatch:
    return InputWatch(
        ["quotes", "trades"],
        bootstrap=BROKER,
        settings=TopicSettings(missing_warn_ms=warn_ms),
        partitions_for=consumer.partitions_for,
        refresh=consumer.refresh,
        warned=warned,
        clock=clock,
    )


def test_watch_costs_nothing_while_every_topic_is_known() -> None:
    """With every input topic in the consumer's metadata, a tick asks for no fetch and logs nothing."""
    consumer = _Consumer({"quotes": {0}, "trades": {0, 1}})
    clock = _Clock()
    watch = _watch(consumer, clock)
    with capture_logs() as logs:
        for _ in range(5):
            clock.now += 60
            assert watch.tick() == []
    assert consumer.refreshes == 0
    assert logs == []


def test_watch_refreshes_every_tick_and_warns_each_interval() -> None:
    """A missing topic gets a metadata fetch every tick and a warning naming it every interval."""
    consumer = _Consumer({"quotes": {0}})
    clock = _Clock()
    watch = _watch(consumer, clock, warned=("trades",), warn_ms=30_000)
    with capture_logs() as logs:
        for _ in range(59):  # 29.5 s in ticks of 0.5 s: no repeat yet
            clock.now += 0.5
            assert watch.tick() == ["trades"]
        assert logs == []
        clock.now += 0.5
        watch.tick()
        clock.now += 30
        watch.tick()
    assert consumer.refreshes == 61
    assert [(e["event"], e["topic"], e["missing_s"]) for e in logs] == [
        ("input_topic_missing", "trades", 30.0),
        ("input_topic_missing", "trades", 60.0),
    ]
    assert {e["bootstrap"] for e in logs} == {BROKER}


def test_watch_notes_a_found_topic_once_and_stops_fetching() -> None:
    """Once the consumer knows a warned-about topic, it is logged as found once and fetching stops."""
    consumer = _Consumer({"quotes": {0}})
    clock = _Clock()
    watch = _watch(consumer, clock, warned=("trades",))
    clock.now += 0.5
    watch.tick()
    consumer.known["trades"] = {0, 1, 2}
    with capture_logs() as logs:
        clock.now += 0.5
        assert watch.tick() == []
        clock.now += 0.5
        assert watch.tick() == []
    assert consumer.refreshes == 1
    assert logs == [
        {"event": "input_topic_found", "log_level": "info", "topic": "trades", "missing_s": 1.0}
    ]


def test_watch_is_quiet_about_metadata_still_loading() -> None:
    """A topic that exists but is not in the consumer's metadata yet is fetched, not warned about."""
    consumer = _Consumer({})
    clock = _Clock()
    watch = _watch(consumer, clock)
    with capture_logs() as logs:
        clock.now += 0.5
        assert watch.tick() == ["quotes", "trades"]
        consumer.known.update(quotes={0}, trades={0})
        clock.now += 0.5
        assert watch.tick() == []
    assert consumer.refreshes == 1
    assert logs == []


async def test_watch_run_ticks_until_cancelled() -> None:
    """``run`` ticks every missing_check_ms until cancelled, and ends when cancelled."""
    seen = asyncio.Event()
    calls: list[str] = []

    def partitions_for(topic: str) -> set[int] | None:
        calls.append(topic)
        if len(calls) >= 6:
            seen.set()
        return None

    watch = InputWatch(
        ["quotes"],
        bootstrap=BROKER,
        settings=TopicSettings(missing_check_ms=1),
        partitions_for=partitions_for,
        refresh=lambda: None,
    )
    task = asyncio.create_task(watch.run())
    await asyncio.wait_for(seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watch.refreshes >= 6
