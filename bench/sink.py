"""Publishing cost per decision on a real broker: ``producer.send`` per message vs ``KafkaSink``.

Run from the repository root against a running Kafka (``weir broker kafka start`` prints
the address)::

    python -m bench.sink --bootstrap 127.0.0.1:9092
    python -m bench.sink --bootstrap 127.0.0.1:9092 --messages 100000 --burst 16 --rounds 5

Both variants send the same messages (300-byte values, two headers, 8 keys) to one fresh
3-partition topic each round, a loop turn after every ``--burst`` messages (as the
pipeline yields after each inference batch), and count a message done when its delivery
callback ran. Figures: wall µs and CPU µs (``process_time``, this process only; the
broker's CPU is not in it) per message, median over rounds, variants interleaved.
Nothing is asserted.
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


async def _per_message(producer: AIOKafkaProducer, topic: str, n: int, burst: int) -> None:
    done = [0]
    finished = asyncio.get_running_loop().create_future()

    def on_done(_token: int, _fut: asyncio.Future[Any]) -> None:
        done[0] += 1
        if done[0] == n and not finished.done():
            finished.set_result(None)

    for i in range(n):
        fut = await producer.send(topic, value=VALUE, key=KEYS[i % 8], headers=HEADERS)
        fut.add_done_callback(functools.partial(on_done, i))
        if i % burst == burst - 1:
            await asyncio.sleep(0)
    await finished


async def _sink(producer: AIOKafkaProducer, topic: str, n: int, burst: int) -> None:
    sink = KafkaSink(producer)
    done = [0]

    def on_ack(_token: Any, error: BaseException | None) -> None:
        if error is not None:
            raise error
        done[0] += 1

    try:
        for i in range(n):
            await sink.send(topic, KEYS[i % 8], VALUE, HEADERS, i, on_ack)
            if i % burst == burst - 1:
                await asyncio.sleep(0)
        await sink.flush()
    finally:
        await sink.close()
    assert done[0] == n


Variant = Callable[[AIOKafkaProducer, str, int, int], Awaitable[None]]


async def _run(args: argparse.Namespace) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=args.linger_ms)
    await producer.start()
    variants: dict[str, Variant] = {"producer.send": _per_message, "KafkaSink": _sink}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for r in range(args.rounds):
            for name, fn in variants.items():
                topic = f"weir-bench-sink-{uuid.uuid4().hex[:8]}"
                await admin.create_topics([NewTopic(topic, 3, 1)])
                await producer.send_and_wait(topic, b"warm", key=KEYS[0])
                t0, c0 = time.perf_counter(), time.process_time()
                await fn(producer, topic, args.messages, args.burst)
                wall[name].append((time.perf_counter() - t0) / args.messages * 1e6)
                cpu[name].append((time.process_time() - c0) / args.messages * 1e6)
                await admin.delete_topics([topic])
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        await producer.stop()
        await admin.close()
    print(f"\n{args.messages} messages, bursts of {args.burst}, linger {args.linger_ms} ms")
    print(f"{'variant':<14} {'wall us/msg':>12} {'cpu us/msg':>11}")
    for name in variants:
        print(
            f"{name:<14} {statistics.median(wall[name]):>12.2f} "
            f"{statistics.median(cpu[name]):>11.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the benchmark."""
    ap = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True, help="Kafka bootstrap address")
    ap.add_argument("--messages", type=int, default=50_000, help="messages per round")
    ap.add_argument("--burst", type=int, default=64, help="messages between loop turns")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (median reported)")
    ap.add_argument("--linger-ms", type=int, default=1, help="producer linger.ms")
    args = ap.parse_args(argv)
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
