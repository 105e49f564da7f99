"""Recording Kafka topics into a feed file, with receive times, for later replay.

A group-less consumer is assigned every partition of the topics and starts at their ends
(live capture, the default) or beginnings. Each record is kept as it came (payload bytes
untouched) with its coordinates, its record timestamp and ``recv_ns``: the wall time the
fetch that brought it returned, which replays pace on. The payload is decoded once only to
learn its key, kind and source time; a record that does not decode is skipped and counted
(``--on-error skip``, the default) or stops the recording (``fail``). Recording stops
after ``count`` records or ``seconds`` of wall time, whichever is given, or on Ctrl-C
(the file is then closed cleanly with what was recorded).

    weir replay record --topic T [--topic U] --out FEED.parquet (--count N | --seconds S)
                       [--bootstrap HOST:PORT] [--from end|beginning] [--encoding json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path
from typing import IO

import msgspec
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from replay.errors import ReplayError
from replay.importers.base import SourceInfo, kind_of
from replay.kafka import ensure_topics, settings_for
from schemas.codec import Encoding, event_codec
from schemas.errors import DecodeError
from schemas.feed import FeedWriter
from service.kafka import make_consumer
from service.settings import KafkaSettings

START_CHOICES = ("end", "beginning")


class RecordReport(msgspec.Struct, kw_only=True):
    """What a recording captured."""

    out: str
    topics: list[str]
    records: int
    skipped: int
    first_skip: str | None
    seconds: float
    by_topic: dict[str, int]

    def summary(self) -> str:
        """One line for people."""
        topics = ", ".join(f"{t} {n:,}" for t, n in self.by_topic.items()) or "nothing"
        skip = f"; skipped {self.skipped:,} undecodable ({self.first_skip})" if self.skipped else ""
        return f"recorded {self.records:,} records in {self.seconds:,.1f} s to {self.out}: {topics}{skip}"


class _Progress:
    def __init__(self, stream: IO[str], interval: float) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.interval = interval if self.tty else 5.0
        self.last = time.monotonic()
        self.drawn = False

    def __call__(self, n: int, started: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        el = now - started
        line = f"recorded {n:,} records  {n / el if el > 0 else 0:,.0f}/s  {el:,.0f} s"
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()
        self.drawn = True

    def done(self) -> None:
        if self.drawn and self.tty:
            self.stream.write("\n")
            self.stream.flush()


async def record_topics(
    kafka: KafkaSettings,
    topics: list[str],
    out: str | Path,
    *,
    count: int | None = None,
    seconds: float | None = None,
    start: str = "end",
    encoding: Encoding | str = Encoding.JSON,
    on_error: str = "skip",
    progress: IO[str] | None = None,
    ready: asyncio.Event | None = None,
) -> RecordReport:
    """Capture ``topics`` into a feed at ``out`` (see the module docstring).

    ``ready`` is set once the consumer sits at its start positions (tests produce after it).
    """
    if count is None and seconds is None:
        raise ReplayError("record needs --count N or --seconds S")
    if start not in START_CHOICES:
        raise ReplayError(f"--from must be one of {', '.join(START_CHOICES)}, got {start!r}")
    codec = event_codec(encoding)
    consumer = make_consumer(kafka, client_id="weir-record", group_id=None, group_instance_id=None)
    draw = _Progress(progress if progress is not None else sys.stderr, 0.25)
    by_topic: dict[str, int] = dict.fromkeys(topics, 0)
    skipped = 0
    first_skip: str | None = None
    n = 0
    info = SourceInfo(
        importer="record",
        params={"bootstrap": kafka.bootstrap_servers, "topics": topics, "from": start},
    )
    try:
        await consumer.start()
        counts = await ensure_topics(kafka, dict.fromkeys(topics, 1), create=False)
        tps = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        consumer.assign(tps)
        if start == "end":
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
        for tp in tps:
            await consumer.position(tp)
        if ready is not None:
            ready.set()
        began = time.monotonic()
        stop_at = None if seconds is None else began + seconds
        with FeedWriter(out, encoding=codec.encoding, source=info.encode()) as writer:
            while count is None or n < count:
                wait = 0.1 if stop_at is None else min(0.1, stop_at - time.monotonic())
                if wait <= 0:
                    break
                batches = await consumer.getmany(timeout_ms=int(wait * 1000) + 1)
                recv = time.time_ns()
                for tp, records in batches.items():
                    for r in records:
                        if count is not None and n >= count:
                            break
                        try:
                            if r.value is None:
                                raise DecodeError("record has no value", code="empty")
                            event = codec.decode(
                                r.value, topic=r.topic, partition=r.partition, offset=r.offset
                            )
                        except DecodeError as exc:
                            if on_error == "fail":
                                raise ReplayError(f"cannot record: {exc}") from exc
                            skipped += 1
                            first_skip = first_skip or str(exc)
                            continue
                        writer.write_encoded(
                            r.value,
                            recv_ns=recv,
                            key=event.key,
                            kind=kind_of(event),
                            source_ts_ns=event.source_ts_ns,
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            kafka_ts_ns=r.timestamp * 1_000_000 if r.timestamp >= 0 else None,
                        )
                        n += 1
                        by_topic[tp.topic] += 1
                draw(n, began)
        draw(n, began, force=True)
        elapsed = time.monotonic() - began
    except KafkaError as exc:
        raise ReplayError(f"cannot record from {kafka.bootstrap_servers}: {exc}") from exc
    finally:
        draw.done()
        with contextlib.suppress(KafkaError):
            await consumer.stop()
    return RecordReport(
        out=str(out),
        topics=topics,
        records=n,
        skipped=skipped,
        first_skip=first_skip,
        seconds=elapsed,
        by_topic=by_topic,
    )


def _run_cli(args: argparse.Namespace) -> int:
    settings = settings_for(args.config, bootstrap=args.bootstrap)
    report = asyncio.run(
        record_topics(
            settings.kafka,
            list(args.topic),
            args.out,
            count=args.count,
            seconds=args.seconds,
            start=args.start,
            encoding=args.encoding or settings.kafka.input_encoding,
            on_error=args.on_error,
        )
    )
    print(report.summary())
    return 0


def register_record(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay record --topic T ... --out FEED (--count N | --seconds S)``."""
    p = sub.add_parser(
        "record",
        help="capture Kafka topics into a feed file (with receive times) for replay",
        description="Record topics from Kafka into a feed: payloads as they are, with "
        "receive times, record timestamps and coordinates.",
    )
    p.add_argument("--topic", action="append", required=True, metavar="T", help="repeatable")
    p.add_argument("--out", "-o", type=Path, required=True, metavar="FEED.parquet")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--count", type=int, metavar="N", help="stop after N records")
    size.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka (default: from settings)")
    p.add_argument("--config", type=Path, metavar="weir.toml", help="service settings")
    p.add_argument(
        "--from",
        dest="start",
        choices=START_CHOICES,
        default="end",
        help="start at the topics' ends (live, default) or beginnings",
    )
    p.add_argument(
        "--encoding",
        choices=[e.value for e in Encoding],
        help="payload encoding on the topics (default: the settings' input_encoding)",
    )
    p.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="undecodable records are skipped and counted (default) or stop the recording",
    )
    p.set_defaults(func=_run_cli)
