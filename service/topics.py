"""The service's topics: checked at start, created on request, watched while missing.

At start, after the clients connect and before the consumer subscribes, ``check_topics``
looks every input, decision and dead-letter topic (and the shadow topic, with a
``[model] shadow``) up in the cluster's topic list (a
metadata request for all topics, which, unlike one naming a topic, never makes a broker
with ``auto.create.topics.enable`` create it):

- with ``[topics] create = true`` the missing ones are created with ``partitions`` and
  ``replication_factor`` (one that another worker created meanwhile is fine), and the
  start waits, up to ``kafka.request_timeout_ms``, until each has a leader for every
  partition;
- otherwise a missing decision, dead-letter or shadow topic is a ``TopicError`` naming each one
  and the broker (publishing to it would fail later, on the dispatcher), and each missing
  input topic gets an ``input_topic_missing`` warning.

While serving, ``InputWatch`` (a task the runtime supervises) looks at the consumer's
metadata for each input topic every ``missing_check_ms``. Only while one has no partitions
there does it ask the consumer to fetch metadata again, so a topic created after the start
is consumed within about that interval rather than after aiokafka's
``metadata_max_age_ms`` (5 minutes); every ``missing_warn_ms`` it repeats the warning for
each topic still missing. Nothing here runs per event.

A broker with ``auto.create.topics.enable = true`` (``weir broker kafka start`` has it)
creates a missing input topic itself as soon as the consumer subscribes, with the broker's
``num.partitions``; ``create = true`` creates it first, with the partitions asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Sequence

from aiokafka.errors import KafkaError

from service.base import Consumer, TopicAdmin
from service.errors import TopicError
from service.kafka import KafkaTopicAdmin
from service.logs import get_logger
from service.settings import KafkaSettings, TopicSettings

log = get_logger("weir.topics")

AdminFactory = Callable[[KafkaSettings], TopicAdmin]
"""Builds the (not yet started) admin client for the settings' cluster."""

_FIX = "create it, or set [topics] create = true (WEIR_TOPICS__CREATE=true)"
_FIX_MANY = "create them, or set [topics] create = true (WEIR_TOPICS__CREATE=true)"


def _roles(k: KafkaSettings, shadow_topic: str) -> dict[str, str]:
    """Topic -> what it is to the service (the first role wins for a name used twice)."""
    roles: dict[str, str] = {}
    for topic in k.input_topics:
        roles.setdefault(topic, "input")
    roles.setdefault(k.decision_topic, "decision")
    roles.setdefault(k.dlq_topic, "dead-letter")
    if shadow_topic:
        roles.setdefault(shadow_topic, "shadow")
    return roles


async def check_topics(
    k: KafkaSettings,
    t: TopicSettings,
    *,
    admin: AdminFactory = KafkaTopicAdmin,
    shadow_topic: str = "",
) -> list[str]:
    """Check (and with ``t.create``, create) the service's topics, ``shadow_topic`` too when
    given; returns the input topics still missing, each already warned about. See the
    module docstring."""
    client = admin(k)
    try:
        await client.start()
        existing = await client.topics()
        roles = _roles(k, shadow_topic)
        missing = {name: role for name, role in roles.items() if name not in existing}
        if t.create:
            await _create(client, k, t, missing)
            return []
        outputs = [f"{role} topic {name!r}" for name, role in missing.items() if role != "input"]
        if len(outputs) == 1:
            raise TopicError(
                f"{outputs[0]} does not exist on Kafka at {k.bootstrap_servers}: {_FIX}"
            )
        if outputs:
            raise TopicError(
                f"{' and '.join(outputs)} do not exist on Kafka at {k.bootstrap_servers}: "
                f"{_FIX_MANY}"
            )
        inputs = [name for name, role in missing.items() if role == "input"]
        for name in inputs:
            _warn_missing(name, k.bootstrap_servers, t)
        return inputs
    except KafkaError as exc:
        raise TopicError(f"cannot look up topics on Kafka at {k.bootstrap_servers}: {exc}") from exc
    finally:
        with contextlib.suppress(KafkaError):
            await client.close()


async def _create(
    client: TopicAdmin, k: KafkaSettings, t: TopicSettings, missing: dict[str, str]
) -> None:
    for name, role in missing.items():
        try:
            made = await client.create(name, t.partitions, t.replication_factor)
        except KafkaError as exc:
            raise TopicError(
                f"cannot create {role} topic {name!r} ({t.partitions} "
                f"partition{'' if t.partitions == 1 else 's'}, replication factor "
                f"{t.replication_factor}) on Kafka at {k.bootstrap_servers}: {exc}"
            ) from exc
        if made:
            log.info(
                "topic_created",
                topic=name,
                role=role,
                partitions=t.partitions,
                replication_factor=t.replication_factor,
            )
    try:
        async with asyncio.timeout(k.request_timeout_ms / 1000):
            for name in missing:
                while True:  # polling the broker: nothing to wait on here
                    if await client.has_leaders(name):
                        break
                    await asyncio.sleep(0.05)
    except TimeoutError as exc:
        waiting = ", ".join(repr(n) for n in missing)
        raise TopicError(
            f"topics {waiting} created on Kafka at {k.bootstrap_servers} had no leader for "
            f"every partition within {k.request_timeout_ms} ms"
        ) from exc


def _warn_missing(topic: str, bootstrap: str, t: TopicSettings, missing_s: float = 0.0) -> None:
    log.warning(
        "input_topic_missing",
        topic=topic,
        bootstrap=bootstrap,
        missing_s=round(missing_s, 1),
        hint=f"{_FIX}; it is consumed within {t.missing_check_ms} ms of its creation",
    )


class InputWatch:
    """While an input topic has no partitions in the consumer's metadata, refetch metadata
    every ``missing_check_ms`` and repeat its warning every ``missing_warn_ms``.

    ``partitions_for(topic)`` reads the consumer's cached metadata (no I/O); ``refresh()``
    asks the consumer to fetch metadata now, without waiting for it. ``tick`` is one check;
    ``run`` ticks until cancelled.
    """

    def __init__(
        self,
        topics: Sequence[str],
        *,
        bootstrap: str,
        settings: TopicSettings,
        partitions_for: Callable[[str], Collection[int] | None],
        refresh: Callable[[], object],
        warned: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topics = tuple(topics)
        self._bootstrap = bootstrap
        self._settings = settings
        self._partitions_for = partitions_for
        self._refresh = refresh
        self._clock = clock
        now = clock()
        self._since = dict.fromkeys(warned, now)
        """Missing topic -> when it was first seen missing."""
        self._warned = set(warned)
        self._last_warn = now
        """The start-up check warned just now; metadata of a topic that exists needs a moment."""
        self.refreshes = 0
        """Metadata fetches asked for."""

    def tick(self) -> list[str]:
        """One check: the input topics the consumer has no partitions for, in order."""
        now = self._clock()
        missing = [topic for topic in self._topics if not self._partitions_for(topic)]
        for topic in [t for t in self._since if t not in missing]:
            since = self._since.pop(topic)
            if topic in self._warned:
                self._warned.discard(topic)
                log.info("input_topic_found", topic=topic, missing_s=round(now - since, 1))
        if not missing:
            return missing
        for topic in missing:
            self._since.setdefault(topic, now)
        self._refresh()
        self.refreshes += 1
        if now - self._last_warn >= self._settings.missing_warn_ms / 1000:
            self._last_warn = now
            for topic in missing:
                self._warned.add(topic)
                _warn_missing(topic, self._bootstrap, self._settings, now - self._since[topic])
        return missing

    async def run(self) -> None:
        """Tick every ``missing_check_ms`` until cancelled."""
        interval = self._settings.missing_check_ms / 1000
        while True:
            self.tick()
            await asyncio.sleep(interval)


def watch_inputs(
    consumer: Consumer,
    refresh: Callable[[], object],
    k: KafkaSettings,
    t: TopicSettings,
    warned: Collection[str],
) -> InputWatch:
    """The ``InputWatch`` of a subscribed consumer (``refresh``: the ``Clients``' metadata
    refresher of that consumer; ``warned``: what ``check_topics`` found)."""
    return InputWatch(
        k.input_topics,
        bootstrap=k.bootstrap_servers,
        settings=t,
        partitions_for=consumer.partitions_for_topic,
        refresh=refresh,
        warned=warned,
    )
