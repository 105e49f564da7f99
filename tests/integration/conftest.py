"""Integration fixtures: one real broker per session, fresh topics per test.

The broker is ``$WEIR_KAFKA_BOOTSTRAP`` when set (left running at the end), else one this
session starts and stops in a temporary state dir: Apache Kafka by default, kfake with
``--broker=kfake``, Tansu with ``--broker=tansu``. On Tansu, tests marked ``requires_transactions``,
``requires_idempotence`` or ``requires_kafka(reason=...)`` skip with the reason. Every test in
this directory is marked ``integration``.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code

from service.broker import ApacheKafka, Broker, ExternalBroker, KFake, Tansu

_HERE = Path(__file__).parent

#: Marker name -> why the test cannot run on Tansu (a marker's own ``reason=`` wins).
KAFKA_ONLY_MARKERS: Mapping[str, str] = {
    "requires_transactions": "Tansu has no transactional producer (InitProducerId fails)",
    "requires_idempotence": "Tansu has no idempotent producer (InitProducerId fails)",
    "requires_kafka": "needs Apache Kafka behaviour Tansu lacks",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark this directory's tests ``integration``, and skip what Tansu lacks on Tansu.

    Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) they are one
    ``xdist_group``: one worker runs them all, in order, against one session broker, while
    the other takes the unit tests. The chaos module goes last, when that other worker has
    finished, since its checks time faults and recovery."""
    on_tansu = config.getoption("--broker") == "tansu"
    items.sort(key=lambda item: item.path.name == "test_chaos.py")
    for item in items:
        if _HERE not in item.path.parents:
            continue
        item.add_marker(pytest.mark.integration)
        item.add_marker(pytest.mark.xdist_group("kafka"))
        if not on_tansu:
            continue
        for name, default in KAFKA_ONLY_MARKERS.items():
            mark = item.get_closest_marker(name)
            if mark is not None:
                reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else default)
                item.add_marker(pytest.mark.skip(reason=f"on Tansu: {reason}"))
                break


@dataclass(frozen=True)
class SessionBroker:
    """The broker of this test session."""

    kind: Literal["kafka", "kfake", "tansu"]
    broker: Broker
    bootstrap: str
    #: False when it came from WEIR_KAFKA_BOOTSTRAP (then this session must not stop it).
    started_here: bool


@pytest.fixture(scope="session")
def session_broker(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionBroker]:
    """Start (or reach) the session's broker; stop it at the end if this session started it."""
    kind: Literal["kafka", "kfake", "tansu"] = pytestconfig.getoption("--broker")
    external = os.environ.get("WEIR_KAFKA_BOOTSTRAP")
    if external:
        outside = ExternalBroker(external, source="WEIR_KAFKA_BOOTSTRAP")
        yield SessionBroker(kind, outside, outside.start(), started_here=False)
        return
    state_dir = tmp_path_factory.mktemp(f"{kind}-broker")
    broker: ApacheKafka | KFake | Tansu
    if kind == "kafka":
        broker = ApacheKafka(state_dir=state_dir)
    elif kind == "kfake":
        broker = KFake(state_dir=state_dir)
    else:
        broker = Tansu(state_dir=state_dir)
    bootstrap = broker.start()
    try:
        yield SessionBroker(kind, broker, bootstrap, started_here=True)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: SessionBroker) -> str:
    """``host:port`` of the session's broker."""
    return session_broker.bootstrap


@pytest.fixture(scope="session")
def broker_kind(session_broker: SessionBroker) -> Literal["kafka", "kfake", "tansu"]:
    """Which broker the session runs against: ``kafka``, ``kfake`` or ``tansu``."""
    return session_broker.kind


class TopicFactory(Protocol):
    """Creates a topic with a name unique to the test; returns the name."""

    def __call__(
        self,
        partitions: int = 1,
        *,
        prefix: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> Awaitable[str]: ...


@pytest.fixture
async def topic_factory(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> AsyncIterator[TopicFactory]:
    """``await topic_factory(3)`` creates ``weir-<test>-<random>`` with 3 partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="weir-tests")
    await admin.start()
    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-")[:80]

    async def make(
        partitions: int = 1,
        *,
        prefix: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> str:
        topic = f"weir-{prefix or stem}-{uuid.uuid4().hex[:8]}"
        response = await admin.create_topics(
            [NewTopic(topic, partitions, 1, topic_configs=dict(config or {}))]
        )
        for name, code, *message in response.topic_errors:
            if code:
                raise for_code(code)(f"create_topics {name}: {message}")
        created.append(topic)
        await _wait_for_partitions(admin, topic, partitions)
        return topic

    try:
        yield make
    finally:
        try:
            if created:
                await asyncio.wait_for(admin.delete_topics(created), 10)
        except (KafkaError, TimeoutError):
            pass  # best effort: the session broker's state dir goes away anyway
        finally:
            await admin.close()


@pytest.fixture
async def new_topic(topic_factory: TopicFactory) -> str:
    """A fresh single-partition topic for this test."""
    return await topic_factory()


async def _wait_for_partitions(admin: AIOKafkaAdminClient, topic: str, partitions: int) -> None:
    """Until the broker's metadata shows every partition of ``topic`` with a leader."""
    async with asyncio.timeout(15):
        while True:
            (described,) = await admin.describe_topics([topic])
            found = described["partitions"]
            ready = described["error_code"] == 0 and len(found) == partitions
            if ready and all(p["leader"] >= 0 for p in found):
                return
            await asyncio.sleep(0.05)
