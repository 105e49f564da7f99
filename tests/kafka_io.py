"""What the integration tests share to talk to the session broker: read a topic from its
start until enough records came, decode decisions, run a ``Runtime`` for a block, and the
service settings every test names the same way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas.codec import decision_codec
from schemas.decision import Decision
from service.runtime import Runtime
from service.settings import Settings


async def read_records(
    bootstrap: str,
    topic: str,
    n: int,
    *,
    timeout_s: float = 60.0,
    poll_ms: int = 200,
    **options: Any,
) -> list[Any]:
    """The records of ``topic`` from its start until at least ``n`` came (``TimeoutError``
    after ``timeout_s``); ``options`` go to the ``AIOKafkaConsumer``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **options
    )
    await consumer.start()
    got: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(got) < n:
                for records in (await consumer.getmany(timeout_ms=poll_ms)).values():
                    got.extend(records)
    finally:
        await consumer.stop()
    return got


async def read_decisions(bootstrap: str, topic: str, n: int, **options: Any) -> list[Decision]:
    """:func:`read_records` of a decision topic, decoded."""
    codec = decision_codec()
    return [codec.decode(r.value) for r in await read_records(bootstrap, topic, n, **options)]


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Runtime, asyncio.Task[int]]]:
    """A ``Runtime`` running in a task for the block (not waited ready); at its end the
    runtime is stopped and must exit 0 within 30 s."""
    rt = Runtime(settings)
    task = asyncio.create_task(rt.run(install_signals=False))
    try:
        yield rt, task
    finally:
        rt.stop()
        assert await asyncio.wait_for(task, 30) == 0


def service_env(bootstrap: str, *, inp: str, out: str, dlq: str, bundle: Path) -> dict[str, str]:
    """The settings environment naming the broker, the topics (group ``g-<input>``) and the
    bundle, with HTTP off and warning logs; a test adds its own timings and knobs."""
    return {
        "WEIR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "WEIR_KAFKA__INPUT_TOPICS": f'["{inp}"]',
        "WEIR_KAFKA__DECISION_TOPIC": out,
        "WEIR_KAFKA__DLQ_TOPIC": dlq,
        "WEIR_KAFKA__GROUP_ID": f"g-{inp}",
        "WEIR_ENGINE__BUNDLE": str(bundle),
        "WEIR_HTTP__ENABLED": "false",
        "WEIR_LOG__LEVEL": "warning",
    }
