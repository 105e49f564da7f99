"""Poison and fuzzed input, in process (the decoders) and through Kafka (the service).

``fuzz_decoders``: ``chaos.fuzz.fuzz_decoders`` over 100k+ generated records, no broker.
``poison``: ``weir serve`` fed good records interleaved with every category of bad ones;
no crash, every bad record dead-lettered with its category's reason and its original bytes,
every good one decided.
"""

from __future__ import annotations

import time
from collections import Counter

from chaos.context import Context, Row, drive
from chaos.fuzz import expected_reason, fuzz_decoders, samples

__all__ = ["fuzz", "poison"]

_MAX_EVENT_BYTES = 65_536


async def fuzz(ctx: Context) -> Row:
    """The event decoders and the feature code over generated bad records: no crash."""
    row = Row(scenario="fuzz_decoders")
    began = time.monotonic()
    n = int(ctx.scale(100_000, 500_000))
    report = fuzz_decoders(n, seed=7, max_event_bytes=_MAX_EVENT_BYTES)
    row.events = report.records
    row.dead = sum(report.dead.values())
    row.figures.update(
        decoded=report.decoded,
        dead_reasons=dict(report.dead),
        categories=dict(report.by_category),
        crashes=report.crash_count,
        crash_sample=report.crashes[:3],
        wrong_reason_sample=report.wrong_reason[:5],
        non_finite_feature_rows=report.non_finite_rows,
    )
    row.checks = {
        "0 crashes": report.crash_count == 0,
        "every bad record has its reason": not report.wrong_reason,
        "feature rows finite": report.non_finite_rows == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()


async def poison(ctx: Context) -> Row:
    """Bad records of every kind among good ones, through Kafka and ``weir serve``."""
    name = "poison"
    row = Row(scenario=name)
    began = time.monotonic()
    topics = await ctx.topics(name)
    cfg = ctx.config(name, topics, kafka={"max_event_bytes": _MAX_EVENT_BYTES})
    svc = ctx.service(name, ["serve", "--config", str(cfg)])
    n = int(ctx.scale(3_000, 20_000))
    rate = ctx.scale(1000.0, 500.0)  # the CI subset sends its 3,000 in 3 s
    batch = list(samples(n, seed=11, max_event_bytes=_MAX_EVENT_BYTES))
    await svc.start()
    try:
        await svc.wait_event("partitions_assigned", timeout_s=90)
        run = await drive(
            ctx,
            topics,
            rate=rate,
            seconds=n / rate,
            payload=lambda i: (batch[i].key, batch[i].value),
            labels=(s.category for s in batch),
            complete_timeout_s=60,
        )
        alive = svc.returncode is None
    finally:
        status = await svc.terminate(30)
    led = run.ledger
    row.apply(led.tally())
    row.peak_rss_mb = round(svc.peak_rss_kb / 1024, 1) if svc.peak_rss_kb else None
    wrong: Counter[str] = Counter()
    bad_bytes = 0
    for seq, coord in led.coords.items():
        o = led.outcomes.get(coord)
        if o is None:
            continue
        cat = led.kinds[seq]
        want = expected_reason(cat)
        got = o.dead_reasons[0] if o.dead_reasons else None
        if cat != "bitflip" and got != want:
            wrong[f"{cat}->{got or 'decided'}"] += 1
        if o.dead_reasons and o.dead_crc != led.crcs[seq]:
            bad_bytes += 1
    crashed = "Traceback" in svc.text() or not alive
    row.figures.update(
        categories=dict(Counter(led.kinds.values())),
        dead_reasons=row.figures.pop("dead_reasons", None) or led.tally().dead_reasons,
        wrong_outcome=dict(wrong),
        dead_letters_without_original_bytes=bad_bytes,
        exit_status=status,
    )
    row.checks = {
        "lost == 0": row.lost == 0 and run.complete,
        "0 crashes": not crashed,
        "each bad record dead-lettered with its reason": not wrong,
        "dead letters keep the original bytes": bad_bytes == 0,
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()
