"""A live model swap under load on a real broker: a replay runs through the service, the
model is swapped mid-run, and the replay report and the decision topic show nothing lost or
duplicated, every decision naming v1 or v2 (per key: v1... then v2...), and no deadline
miss from the swap. A shadow candidate on the same broker publishes its twins of the
primary's decisions to the shadow topic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engines.fake import write_tiny_trading_bundle
from replay.kafka import KafkaTransport
from replay.pacing import Pacing
from replay.plan import load_plan
from replay.results import RunConfig
from replay.runner import run_feed
from replay.slo import Slo
from replay.synthetic import synthesize_market
from service.runtime import Runtime
from service.settings import Settings, load_settings
from tests.kafka_io import read_decisions, service_env

V1, V2 = "swap-it-v1", "swap-it-v2"


async def _settings(bootstrap: str, topic_factory: Any, bundle: Path, **extra: str) -> Settings:
    inp = await topic_factory(1, prefix="swap-in")
    out = await topic_factory(1, prefix="swap-out")
    dlq = await topic_factory(1, prefix="swap-dlq")
    return load_settings(
        env={
            **service_env(bootstrap, inp=inp, out=out, dlq=dlq, bundle=bundle),
            "WEIR_KAFKA__FETCH_MAX_WAIT_MS": "5",
            "WEIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "WEIR_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
            "WEIR_ENGINE__WARMUP_ITERS": "20",
            "WEIR_SCHEDULER__BUDGET_MS": "250",
            **extra,
        }
    )


async def test_a_swap_under_load_loses_nothing_and_names_every_version(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    """Replay 8 s of market data at 100 events/s per symbol; swap v1 -> v2 after a third
    of the inputs: no input lost or duplicated, no SLO miss (a 250 ms budget), every
    decision names v1 or v2, both appear, and each key's decisions go v1... then v2...."""
    v1 = tmp_path / "v1"
    v2 = tmp_path / "v2"
    write_tiny_trading_bundle(v1, window=8, model_version=V1)
    write_tiny_trading_bundle(v2, window=8, model_version=V2)
    feed = tmp_path / "market.parquet"
    synthesize_market(feed, seconds=8.0, rate=100.0, seed=11)
    settings = await _settings(kafka_bootstrap, topic_factory, v1)
    plan = load_plan(feed, encoding=settings.kafka.input_encoding)
    rt = Runtime(settings)
    serve = asyncio.get_running_loop().create_task(rt.run(install_signals=False))
    try:
        async with asyncio.timeout(60):
            while not rt.ready:
                assert not serve.done(), serve
                await asyncio.sleep(0.05)
        config = RunConfig(
            feed=str(feed), feed_rows=plan.n, rows_replayed=plan.n, feed_span_s=0.0, mode="kafka"
        )
        replay = asyncio.ensure_future(
            run_feed(
                plan,
                KafkaTransport(settings.kafka),
                pacing=Pacing(speed=1.0),
                slo=Slo(budget_ms=250.0, max_duplicates=0),
                config=config,
                quiet_s=5.0,
            )
        )
        async with asyncio.timeout(60):
            while rt.pipeline is None or rt.pipeline.counters.events_in < plan.n // 3:
                assert not replay.done(), replay
                await asyncio.sleep(0.02)
        assert rt.models is not None
        swapped = await rt.models.swap(str(v2))
        assert swapped.version == V2 and rt.pipeline.model_version == V2
        result = await replay
    finally:
        rt.stop()
        await asyncio.wait_for(serve, 30)
    c = result.completeness
    assert (c.inputs, c.decided, c.lost, c.duplicated, c.unmatched) == (plan.n, plan.n, 0, 0, 0)
    assert c.by_status.get("expired", 0) == 0 and c.by_status.get("shed", 0) == 0
    assert c.by_status.get("error", 0) == 0
    # weir's own deadline outcomes are asserted above (nothing expired or shed across the
    # swap); end-to-end misses from the intended send also count the harness's and the
    # broker's delays, which follow the host's load: printed, not asserted (a speed).
    print(f"swap under load: {c.misses} of {c.inputs} over 250 ms end to end")
    decisions = await read_decisions(
        kafka_bootstrap,
        settings.kafka.decision_topic,
        plan.n,
        poll_ms=500,
        enable_auto_commit=False,
    )
    assert len(decisions) == plan.n
    assert {d.model_version for d in decisions} == {V1, V2}
    by_key: dict[str, list[str]] = {}
    for d in sorted(decisions, key=lambda d: d.offset):
        by_key.setdefault(d.key, []).append(d.model_version)
    for key, versions in by_key.items():
        first_v2 = versions.index(V2) if V2 in versions else len(versions)
        assert set(versions[:first_v2]) <= {V1} and set(versions[first_v2:]) <= {V2}, key
    assert rt.pipeline is not None and rt.pipeline.counters.model_loads == {
        "loaded": 1,
        "refused": 0,
    }


async def test_a_shadow_publishes_twins_of_the_primary_decisions(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    """With [model] shadow, every input still gets one primary decision (v1); the shadow
    topic holds v2 twins of ok primary decisions, one per batch run (none failed)."""
    v1 = tmp_path / "v1"
    v2 = tmp_path / "v2"
    write_tiny_trading_bundle(v1, window=8, model_version=V1)
    write_tiny_trading_bundle(v2, window=8, model_version=V2)
    feed = tmp_path / "market.parquet"
    synthesize_market(feed, seconds=4.0, rate=100.0, seed=12)
    shadow_topic = await topic_factory(1, prefix="swap-shadow")
    settings = await _settings(
        kafka_bootstrap,
        topic_factory,
        v1,
        WEIR_MODEL__SHADOW=str(v2),
        WEIR_MODEL__SHADOW_TOPIC=shadow_topic,
    )
    plan = load_plan(feed, encoding=settings.kafka.input_encoding)
    rt = Runtime(settings)
    serve = asyncio.get_running_loop().create_task(rt.run(install_signals=False))
    try:
        async with asyncio.timeout(60):
            while not rt.ready or rt.models is None or rt.models.shadow is None:
                assert not serve.done(), serve
                await asyncio.sleep(0.05)
        config = RunConfig(
            feed=str(feed), feed_rows=plan.n, rows_replayed=plan.n, feed_span_s=0.0, mode="kafka"
        )
        result = await run_feed(
            plan,
            KafkaTransport(settings.kafka),
            pacing=Pacing(speed=1.0),
            slo=Slo(budget_ms=250.0, max_duplicates=0),
            config=config,
            quiet_s=5.0,
        )
        assert rt.pipeline is not None
        counts = dict(rt.pipeline.counters.shadow)
    finally:
        rt.stop()
        await asyncio.wait_for(serve, 30)
    c = result.completeness
    assert (c.inputs, c.decided, c.lost, c.duplicated, c.unmatched) == (plan.n, plan.n, 0, 0, 0)
    primary = await read_decisions(
        kafka_bootstrap,
        settings.kafka.decision_topic,
        plan.n,
        poll_ms=500,
        enable_auto_commit=False,
    )
    assert {d.model_version for d in primary} == {V1}
    ok = {(d.partition, d.offset) for d in primary if d.status.value == "ok"}
    assert counts["failed"] == 0 and counts["run"] > 0
    n_twins = len(ok) if counts["dropped"] == 0 else None  # drops: some twins are absent
    twins = await read_decisions(
        kafka_bootstrap, shadow_topic, n_twins or 1, poll_ms=500, enable_auto_commit=False
    )
    assert {d.model_version for d in twins} == {V2}
    assert {(d.partition, d.offset) for d in twins} <= ok
    if n_twins is not None:
        assert len(twins) == n_twins
