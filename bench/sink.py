"""Publishing cost per decision on a real broker: ``producer.send`` per message vs ``KafkaSink``.

Run from the repository root against a running Kafka (``weir broker kafka start`` prints
the address)::

    python -m bench.sink --bootstrap 127.0.0.1:9092
    python -m bench.sink --bootstrap 127.0.0.1:9092 --messages 100000 --burst 16 --rounds 5
    python -m bench.sink --bootstrap 127.0.0.1:9092 --burst 40 --turns 4 --hold-ms 9

Both variants send the same messages (300-byte values, two headers, 8 keys) to one fresh
3-partition topic each round, a loop turn after every ``--burst`` messages (as the
pipeline yields after each inference batch), and count a message done when its delivery
callback ran. ``--turns`` and ``--hold-ms`` stand for weir's dispatcher with an engine
run inline: after each burst the loop turns that many times, then is held (``time.sleep``)
for the engine call. Figures: wall µs and CPU µs (``process_time``, this process only; the
broker's CPU is not in it) per message, and each message's time from send to its delivery
callback (p50, p99), medians over rounds, variants interleaved. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.kafka import KafkaSink

VALUE = b"x" * 300
HEADERS = [("weir-model", b"bench"), ("weir-status", b"ok")]
KEYS = [f"K{i}".encode() for i in range(8)]


async def _after_burst(turns: int, hold_s: float) -> None:
    """``turns`` loop turns, then the loop held ``hold_s`` (an engine call run inline)."""
    for _ in range(turns):
        await asyncio.sleep(0)
    if hold_s:
        time.sleep(hold_s)  # noqa: ASYNC251 - holding the loop, as an inline engine call does


async def _per_message(
    producer: AIOKafkaProducer, topic: str, n: int, burst: int, turns: int, hold_s: float
) -> list[int]:
    sent = [0] * n
    lat = [0] * n
    done = [0]
    finished = asyncio.get_running_loop().create_future()

    def on_done(i: int, _fut: asyncio.Future[Any]) -> None:
        lat[i] = time.perf_counter_ns() - sent[i]
        done[0] += 1
        if done[0] == n and not finished.done():
            finished.set_result(None)

    for i in range(n):
        sent[i] = time.perf_counter_ns()
        fut = await producer.send(topic, value=VALUE, key=KEYS[i % 8], headers=HEADERS)
        fut.add_done_callback(functools.partial(on_done, i))
        if i % burst == burst - 1:
            await _after_burst(turns, hold_s)
    await finished
    return lat


async def _sink(
    producer: AIOKafkaProducer, topic: str, n: int, burst: int, turns: int, hold_s: float
) -> list[int]:
    sink = KafkaSink(producer)
    sent = [0] * n
    lat = [0] * n
    done = [0]

    def on_ack(i: int, error: BaseException | None) -> None:
        if error is not None:
            raise error
        lat[i] = time.perf_counter_ns() - sent[i]
        done[0] += 1

    try:
        for i in range(n):
            sent[i] = time.perf_counter_ns()
            await sink.send(topic, KEYS[i % 8], VALUE, HEADERS, i, on_ack)
            if i % burst == burst - 1:
                await _after_burst(turns, hold_s)
        await sink.flush()
    finally:
        await sink.close()
    assert done[0] == n
    return lat


Variant = Callable[[AIOKafkaProducer, str, int, int, int, float], Awaitable[list[int]]]


async def _run(args: argparse.Namespace) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        linger_ms=args.linger_ms,
        max_batch_size=args.batch_bytes,
    )
    await producer.start()
    variants: dict[str, Variant] = {"producer.send": _per_message, "KafkaSink": _sink}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    p50: dict[str, list[float]] = {k: [] for k in variants}
    p99: dict[str, list[float]] = {k: [] for k in variants}
    hold_s = args.hold_ms / 1000
    try:
        for r in range(args.rounds):
            for name, fn in variants.items():
                topic = f"weir-bench-sink-{uuid.uuid4().hex[:8]}"
                await admin.create_topics([NewTopic(topic, 3, 1)])
                await producer.send_and_wait(topic, b"warm", key=KEYS[0])
                t0, c0 = time.perf_counter(), time.process_time()
                lat = await fn(producer, topic, args.messages, args.burst, args.turns, hold_s)
                wall[name].append((time.perf_counter() - t0) / args.messages * 1e6)
                cpu[name].append((time.process_time() - c0) / args.messages * 1e6)
                cut = statistics.quantiles(lat, n=100)
                p50[name].append(cut[49] / 1e6)
                p99[name].append(cut[98] / 1e6)
                await admin.delete_topics([topic])
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        await producer.stop()
        await admin.close()
    print(
        f"\n{args.messages} messages, bursts of {args.burst}, linger {args.linger_ms} ms, "
        f"{args.turns} loop turn(s) then the loop held {args.hold_ms:g} ms after each burst, "
        f"batches of up to {args.batch_bytes:,} bytes"
    )
    print(
        f"{'variant':<14} {'wall us/msg':>12} {'cpu us/msg':>11} "
        f"{'send->ack p50 ms':>17} {'p99 ms':>9}   (medians over rounds)"
    )
    for name in variants:
        print(
            f"{name:<14} {statistics.median(wall[name]):>12.2f} "
            f"{statistics.median(cpu[name]):>11.2f} {statistics.median(p50[name]):>17.2f} "
            f"{statistics.median(p99[name]):>9.2f}"
        )


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    ap = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True, help="Kafka bootstrap address")
    ap.add_argument("--messages", type=int, default=50_000, help="messages per round")
    ap.add_argument("--burst", type=int, default=64, help="messages between loop turns")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    ap.add_argument("--linger-ms", type=int, default=1, help="producer linger.ms")
    ap.add_argument(
        "--batch-bytes", type=int, default=16_384, help="producer max_batch_size (bytes)"
    )
    ap.add_argument("--turns", type=int, default=1, help="loop turns after each burst")
    ap.add_argument(
        "--hold-ms",
        type=float,
        default=0.0,
        help="then hold the event loop this long (an inline engine call; default 0)",
    )
    return ap


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmark."""
    asyncio.run(_run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
