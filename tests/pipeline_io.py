"""What the pipeline unit tests share: quote records to feed, a run of the pipeline over
them in ingest-sized chunks, and the decisions a ``MemorySink`` got."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from schemas.codec import decision_codec, event_codec
from schemas.decision import Decision
from schemas.events import Quote
from service.memory import MemoryRecord, MemorySink
from service.pipeline import Pipeline

#: The input topic of the records built here.
TOPIC = "weir.events"
#: The decision topic of the default settings.
DECISIONS = "weir.decisions"


def quote_record(
    i: int,
    *,
    key: str,
    partition: int = 0,
    timestamp: int = -1,
    headers: Sequence[tuple[str, bytes]] = (),
) -> MemoryRecord:
    """Offset ``i`` of ``TOPIC``: a quote of ``key`` whose prices cycle with ``i``."""
    q = Quote(symbol=key, bid_px=100.0 + i % 7, bid_qty=1.0, ask_px=100.5 + i % 7, ask_qty=2.0)
    return MemoryRecord(
        TOPIC, partition, i, event_codec().encode(q), timestamp=timestamp, headers=headers
    )


async def run_pipeline(
    pipe: Pipeline, records: Sequence[MemoryRecord], chunk: int, *, close: bool = True
) -> None:
    """Start ``pipe``, ingest ``records`` ``chunk`` at a time (the dispatcher runs between
    chunks), drain it (every record decided within 5 s) and, with ``close``, close it."""
    pipe.start()
    for i in range(0, len(records), chunk):
        await pipe.ingest(records[i : i + chunk])
        await asyncio.sleep(0)
    assert await pipe.drain(5.0)
    if close:
        await pipe.close()


def sink_decisions(sink: MemorySink) -> list[Decision]:
    """The decisions ``sink`` got on the decision topic, decoded, in the order sent."""
    codec = decision_codec()
    return [codec.decode(m.value) for m in sink.on(DECISIONS)]
