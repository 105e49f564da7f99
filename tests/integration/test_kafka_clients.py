"""The runtime's aiokafka clients on a real broker: the background tasks that
``service.kafka_guard`` watches exist on started clients of the locked aiokafka."""

from __future__ import annotations

from service.kafka import KafkaClients
from service.kafka_guard import client_tasks
from service.settings import load_settings


async def test_started_clients_have_every_watched_background_task(
    kafka_bootstrap: str, new_topic: str
) -> None:
    """Each watched task is found and running on a started, subscribed consumer and a
    started producer; the watch answers None. A renamed private attribute in a new
    aiokafka fails here rather than leaving a task unwatched."""
    settings = load_settings(
        env={
            "WEIR_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "WEIR_KAFKA__INPUT_TOPICS": f'["{new_topic}"]',
            "WEIR_KAFKA__GROUP_ID": f"{new_topic}-group",
        }
    )
    clients = KafkaClients()
    consumer = clients.consumer(settings.kafka, isolation_level="read_uncommitted")
    producer = clients.producer(settings.kafka, transactional_id=None)
    await producer.start()
    await consumer.start()
    try:
        consumer.subscribe([new_topic])
        await consumer.getmany(timeout_ms=100)
        found = {**client_tasks(consumer, "consumer"), **client_tasks(producer, "producer")}
        assert sorted(found) == [
            "consumer metadata sync",
            "fetcher",
            "group coordinator",
            "producer metadata sync",
            "sender",
        ]
        assert {n: t is not None and not t.done() for n, t in found.items()} == dict.fromkeys(
            found, True
        )
        assert clients.watch(consumer, producer)() is None
    finally:
        await consumer.stop()
        await producer.stop()
