"""Group membership in exactly-once mode: ``service.kafka.membership_lost`` against
aiokafka's group coordinator (what it reads is what aiokafka sets when the group forgets a
member), ``transactional_id`` (one per worker of one member), and ``StallWatch`` (a
stall that may have cost the member its session)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.group_coordinator import GroupCoordinator

from service.commits import StallWatch
from service.kafka import membership_lost, transactional_id
from service.settings import KafkaSettings


def test_aiokafka_resetting_its_generation_is_a_lost_membership() -> None:
    """``GroupCoordinator.reset_generation`` (run on ``UNKNOWN_MEMBER_ID`` and
    ``ILLEGAL_GENERATION``, before the rejoin that revokes) leaves the generation that
    ``membership_lost`` takes for a lost membership; a joined member's is not one."""
    rejoins: list[bool] = []
    coordinator: Any = SimpleNamespace(generation=7, member_id="m-1")
    coordinator.request_rejoin = lambda: rejoins.append(True)
    consumer = SimpleNamespace(_coordinator=coordinator)
    assert not membership_lost(consumer)
    GroupCoordinator.reset_generation(coordinator)
    assert rejoins == [True]
    assert membership_lost(consumer)


async def test_a_consumer_without_a_group_has_no_membership_to_lose() -> None:
    """Not started (no coordinator yet), or not aiokafka's: not lost."""
    consumer = AIOKafkaConsumer(bootstrap_servers="localhost:1")
    try:
        assert not membership_lost(consumer)
    finally:
        await consumer.stop()
    assert not membership_lost(object())


def _kafka(**kw: Any) -> KafkaSettings:
    base = {
        "bootstrap_servers": "b:9092",
        "input_topics": ["in"],
        "decision_topic": "out",
        "dlq_topic": "dlq",
        "group_id": "g",
    }
    return msgspec.convert({**base, **kw}, KafkaSettings)


def test_transactional_ids_are_one_per_worker_of_one_member() -> None:
    """A worker restarted on its host keeps its id (it fences the transaction its
    predecessor left open); the same worker index on another host, or of another static
    member, gets another (two pods of a Deployment both run worker 0 and must not fence
    each other); the group instance id, where set, names the member instead of the host."""
    k = _kafka()
    assert transactional_id(k, "weir", 0, "pod-a") == transactional_id(k, "weir", 0, "pod-a")
    ids = {
        transactional_id(k, "weir", 0, "pod-a"),
        transactional_id(k, "weir", 0, "pod-b"),
        transactional_id(k, "weir", 1, "pod-a"),
    }
    assert len(ids) == 3
    static = _kafka(group_instance_id="weir-3")
    assert transactional_id(static, "weir", 0, "pod-a") == transactional_id(
        static, "weir", 0, "pod-b"
    )
    assert transactional_id(static, "tx", 2, "pod-a") == "tx-g-weir-3-2"


async def test_a_stall_is_seen_whether_or_not_the_watch_turned_since() -> None:
    """``StallWatch.since``: a gap past the limit under way is a stall before the timer
    turns again; once it has turned, the stall it noted is seen by any ``since`` from
    before it, not by one from after it; shorter gaps are not stalls."""
    now = [0]
    watch = StallWatch(lambda: now[0], limit_ns=1_000, interval_s=0.001)
    watch.start()
    try:
        now[0] = 999
        assert not watch.since(0)
        await asyncio.sleep(0.01)  # the timer turns: a 999 ns gap is no stall
        assert watch.stalled_at == -1
        now[0] = 3_000
        assert watch.since(2_999)  # under way: the timer has not turned since
        await asyncio.sleep(0.01)
        assert watch.stalled_at == 3_000
        assert watch.since(2_999) and not watch.since(3_000)
    finally:
        watch.stop()
