"""``service.kafka.membership_lost`` against aiokafka's group coordinator: what it reads is
what aiokafka sets when the group forgets a member."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.group_coordinator import GroupCoordinator

from service.kafka import membership_lost


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
