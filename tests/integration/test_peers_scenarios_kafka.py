"""The peer benchmark's curve and scenarios through a real broker, at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.peers.harness import Bench
from bench.peers.session import Options
from engines.defaults import default_bundle_path
from replay.synthetic import synthesize_market
from schemas.decision import Decision


async def _decisions(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Decision]]:
    """Every decision on ``topic``, per decision partition, in log order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[Decision]] = {tp.partition: [] for tp in tps}

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                out[tp.partition] += [
                    msgspec.json.decode(r.value, type=Decision) for r in records if r.value
                ]
        return out
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(group)
        return {(tp.topic, tp.partition): meta.offset for tp, meta in got.items()}
    finally:
        await admin.close()


@pytest.mark.slow
async def test_tiny_curve_and_scenarios_decide_every_input_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """weir and the naive loop through the interleaved curve, their capacity ramp on the
    overload bundle (named) and overload at 1.5x and 3x of it,
    the two-topic mixed-deadline service and weir with two workers: every input gets
    exactly one outcome, nothing is lost, weir's decisions keep each key's order, and its
    group committed nothing above what it decided. Each load lasts about a second (1x and
    10x of the feed's first 1 s and 2 s: 255 and 501 events; 1 s per ramp step and overload;
    1 s of the mixed feed at 10x; a 0.2 s warm-up)."""
    feed = tmp_path / "feed.parquet"
    synthesize_market(feed, seconds=20.0, rate=100.0, seed=5)
    opts = Options(
        out=tmp_path / "out",
        feed=feed,
        contenders=("weir", "naive"),
        repeats=1,
        budget_ms=1000.0,
        seconds_1x=1.0,
        seconds_10x=2.0,
        step_s=1.0,
        ramp_start=200.0,
        ramp_max=200.0,
        refine=0,
        warmup_events=200,
        warmup_rate=1000.0,
        broker_warmup_s=0.0,
        bootstrap=kafka_bootstrap,
        profile=(),
        settle_s=0.2,
        quiet_s=5.0,
        startup_timeout_s=90.0,
        inproc_events=0,
        overload=(1.5, 3.0),
        overload_s=1.0,
        # Named, so the overload ramps its own capacity first, on fresh sessions.
        overload_bundle=str(default_bundle_path()),
        mixed_budgets_ms=(500.0, 2000.0),
        mixed_speed=10.0,
        mixed_s=1.0,
        scenarios=("overload", "mixed", "scale"),
        workers=(2,),
    )
    bench = Bench(opts)
    bench.bootstrap = kafka_bootstrap
    result = await bench.run()
    assert {p.contender for p in result.points} == {"weir", "naive"}
    by = {sc.name: sc for sc in result.scenarios}
    assert set(by) == {"capacity", "overload", "mixed", "scale"}
    assert sorted((t.contender, t.load) for t in by["capacity"].trials) == [
        ("naive", "capacity"),
        ("weir", "capacity"),
    ]
    assert set(by["overload"].params["capacity"]) == {"weir", "naive"}
    loads = sorted((t.contender, t.load) for t in by["overload"].trials)
    assert loads == [
        ("naive", "overload-1.5x"),
        ("naive", "overload-3x"),
        ("weir", "overload-1.5x"),
        ("weir", "overload-3x"),
    ]
    assert {t.contender for t in by["scale"].trials} == {"weir x2"}
    for t in [*result.curve, *(t for sc in result.scenarios for t in sc.trials)]:
        where = (t.contender, t.load)
        assert t.events > 100, where
        assert (t.lost, t.duplicated, t.unmatched) == (0, 0, 0), where
    for t in by["mixed"].trials:
        assert sum(c.inputs for c in t.classes.values()) == t.events, t.contender
        assert all(c.lost == 0 for c in t.classes.values())
    for t in by["scale"].trials:
        assert t.workers == 2
    # weir's mixed-deadline session: order per key, commits below what was decided.
    weir_mixed = next(t for t in by["mixed"].trials if t.contender == "weir")
    topics = list(weir_mixed.classes)
    prefix = topics[0].removesuffix("-in")
    out = await _decisions(kafka_bootstrap, f"{prefix}-out", opts.partitions)
    decided: dict[tuple[str, int], list[int]] = {}
    for decisions in out.values():
        seen: dict[tuple[str, int, str], int] = {}
        for d in decisions:
            key = (d.topic, d.partition, d.key)
            assert d.offset > seen.get(key, -1), (key, d.offset)
            seen[key] = d.offset
            decided.setdefault((d.topic, d.partition), []).append(d.offset)
    assert {k[0] for k in decided} == set(topics)
    committed = await _committed(kafka_bootstrap, prefix)
    assert committed
    for key, offset in committed.items():
        assert offset <= max(decided.get(key, [-1])) + 1, (key, offset)
