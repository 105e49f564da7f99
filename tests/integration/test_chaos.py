"""The chaos scenarios' CI subset: faults, overload, bad input and access, each asserting its
invariants (nothing lost, nothing crashed, bounded memory, secrets kept).

The scenarios run against their own Apache Kafka (``chaos.broker.ChaosKafka``: a proxied
and a SASL_SSL listener beside the plain one), started once for this module, so the session
broker is left alone (one scenario stops and restarts it). ``python -m chaos`` runs the same
scenarios at full size and prints the table.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from chaos.broker import ChaosKafka, ScramUser
from chaos.context import Context, Row, make_bundle
from chaos.faults import (
    broker_restart,
    kill_worker,
    kill_worker_eos,
    restart_commit,
    stall_worker_eos,
)
from chaos.network import network
from chaos.poison import poison
from chaos.pressure import RSS_BOUND_MB, engine_faults, overload, overload_paused
from chaos.scenarios import format_table
from chaos.security import sasl_tls
from chaos.supervision import dispatcher_death, slow_produce
from chaos.tls import make_pki
from service.processes import log_tail
from service.settings import Secret

pytestmark = pytest.mark.timeout(240)

KNOWN: dict[str, str] = {}
"""Checks that fail because of a reported service bug, with the reason: the test xfails on
them, and only them. None at present."""

TIMING: frozenset[str] = frozenset({"ok decisions in deadline (>= 99%)"})
"""Checks that measure speed (the share of decisions inside a 150 ms budget at 3x capacity):
printed with the row, not asserted, since on a shared 2-core host they follow the host's
load; ``python -m chaos`` judges them in its table (speeds are measured, never asserted)."""


@pytest.fixture(scope="module")
def chaos_ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    """A chaos broker (plain, proxied, SASL_SSL), a bundle and a work dir for the module."""
    work = tmp_path_factory.mktemp("chaos")
    pki = make_pki(work / "pki")
    user = ScramUser("weir", Secret(secrets.token_hex(16)))
    broker = ChaosKafka(state_dir=work / "kafka", proxied=True, pki=pki, users=(user,))
    broker.start()
    try:
        yield Context(
            broker=broker,
            work=work,
            bundle=make_bundle(work / "bundle"),
            fast=True,
            user=user,
            pki=pki,
        )
    finally:
        broker.stop()


def _verdict(row: Row, ctx: Context) -> None:
    """Print the row; fail on any broken invariant, after the end of the scenario's service
    logs; xfail when only known bugs broke."""
    print("\n" + format_table([row]))
    print({k: v for k, v in row.figures.items() if k != "traceback"})
    if row.verdict != "PASS" or row.lost:
        print(log_tail(sorted(ctx.work.glob(f"{row.scenario}*.log")), lines=60))
    assert "traceback" not in row.figures, row.figures["traceback"]
    broken = [name for name, ok in row.checks.items() if not ok]
    slow = [name for name in broken if name in TIMING]
    if slow:
        print(f"{row.scenario}: timing checks reported, not asserted: {slow}")
    unknown = [name for name in broken if name not in KNOWN and name not in TIMING]
    assert not unknown, f"{row.scenario}: {unknown} (figures: {row.figures})"
    known = [name for name in broken if name in KNOWN]
    if known:
        pytest.xfail("; ".join(KNOWN[name] for name in known))
    assert row.verdict == "PASS" or slow


@pytest.mark.slow
async def test_kill_one_of_three_workers(chaos_ctx: Context) -> None:
    """kill -9 of one of three workers mid-replay: every input decided at least once, the worker restarted, its partitions reassigned."""
    row = await kill_worker(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0


@pytest.mark.slow
async def test_kill_one_of_three_workers_exactly_once(chaos_ctx: Context) -> None:
    """In exactly-once mode a killed worker leaves exactly one committed decision per input."""
    row = await kill_worker_eos(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0 and row.duplicated == 0


@pytest.mark.slow
async def test_stall_one_of_three_workers_past_its_session_exactly_once(chaos_ctx: Context) -> None:
    """An exactly-once worker stopped (SIGSTOP) past its session timeout and resumed commits nothing of the transaction it held (the group gave its partitions away meanwhile): exactly one committed decision per input."""
    row = await stall_worker_eos(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0 and row.duplicated == 0


@pytest.mark.slow
async def test_broker_down_ten_seconds(chaos_ctx: Context) -> None:
    """The broker stopped for 10 s and restarted: the service stays up, resumes and loses nothing."""
    row = await broker_restart(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0


@pytest.mark.slow
async def test_network_faults_through_a_proxy(chaos_ctx: Context) -> None:
    """Latency, a stall and reset or refused connections between service and broker lose nothing."""
    row = await network(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0


async def test_engine_failures_and_latency_spikes(chaos_ctx: Context) -> None:
    """A failing engine gives error decisions, a 10x slower one expired ones; the loop goes on and the profile follows."""
    row = await engine_faults(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0 and row.errors > 0


@pytest.mark.parametrize("scenario", [overload, overload_paused], ids=["consuming_on", "paused"])
async def test_overload_three_times_capacity(
    chaos_ctx: Context, scenario: Callable[[Context], Awaitable[Row]]
) -> None:
    """At 3x capacity memory stays bounded, the excess is shed or expired and nothing is lost; consumption goes on and the queue stays below its bound (the default) or, with ``pause_on_overload = true``, partitions pause and resume."""
    row = await scenario(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0
    assert row.peak_rss_mb is not None and row.peak_rss_mb < RSS_BOUND_MB
    assert row.expired + row.shed > 0
    assert row.figures["max_queued"] < 2000


async def test_poison_records_are_dead_lettered(chaos_ctx: Context) -> None:
    """3,000 records, half of them bad in every way: no crash, each bad one in the DLQ with its reason, each good one decided."""
    row = await poison(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0 and row.dead > 1000


async def test_restart_reprocesses_only_the_uncommitted_tail(chaos_ctx: Context) -> None:
    """After kill -9 and a restart nothing is lost and only inputs at or past the commit are decided again."""
    row = await restart_commit(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0
    assert row.figures["reprocessed_below_commit"] == 0


async def test_sasl_scram_over_tls(chaos_ctx: Context) -> None:
    """Right SCRAM credentials over TLS are served; a wrong password or an unknown CA is refused; no secret is ever shown."""
    row = await sasl_tls(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0


async def test_dispatcher_death_stops_and_restarts_from_the_commit(chaos_ctx: Context) -> None:
    """A dead dispatcher fails readiness and stops the worker non-zero; restarted, it loses nothing."""
    row = await dispatcher_death(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0


async def test_throttled_produce_path_keeps_in_flight_bounded(chaos_ctx: Context) -> None:
    """A produce path 10x slower than the input: in-flight decisions bounded, consumption paused, nothing lost."""
    row = await slow_produce(chaos_ctx)
    _verdict(row, chaos_ctx)
    assert row.lost == 0
    assert row.peak_rss_mb is not None and row.peak_rss_mb < RSS_BOUND_MB


def test_chaos_broker_advertises_the_proxy(chaos_ctx: Context, tmp_path: Path) -> None:
    """The chaos broker's proxied listener is advertised at the proxy's port, not its own."""
    props = (chaos_ctx.broker.state_dir / "server.properties").read_text()
    assert f"PROXIED://127.0.0.1:{chaos_ctx.broker.proxy_port}" in props
    assert f"PROXIED://127.0.0.1:{chaos_ctx.broker.inner_port}" in props
    assert chaos_ctx.user.password.reveal() not in props
