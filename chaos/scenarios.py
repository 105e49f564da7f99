"""The scenarios by name, and running a selection of them into rows and a table.

Each scenario is ``async def (ctx: Context) -> Row``; ``ctx.fast`` selects the CI subset's
sizes. :data:`SCENARIOS` lists them in run order.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from chaos.context import Context, Row
from chaos.faults import (
    broker_restart,
    kill_worker,
    kill_worker_eos,
    restart_commit,
    stall_worker_eos,
)
from chaos.network import network
from chaos.poison import fuzz, poison
from chaos.pressure import engine_faults, overload, overload_paused
from chaos.security import sasl_tls
from chaos.supervision import dispatcher_death, slow_produce

__all__ = ["SCENARIOS", "Scenario", "format_table", "run_scenarios"]


@dataclass(frozen=True)
class Scenario:
    """A named scenario."""

    name: str
    run: Callable[[Context], Awaitable[Row]]
    summary: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("kill_worker", kill_worker, "kill -9 one of 3 workers mid-replay (ALO)"),
        Scenario("kill_worker_eos", kill_worker_eos, "kill -9 one of 3 workers (exactly-once)"),
        Scenario(
            "stall_worker_eos",
            stall_worker_eos,
            "SIGSTOP one of 3 exactly-once workers past its session, then SIGCONT",
        ),
        Scenario("broker_restart", broker_restart, "broker down 10 s mid-stream"),
        Scenario("network", network, "latency, stall, dropped connections via a proxy"),
        Scenario("engine_faults", engine_faults, "engine raising, then 10x slower"),
        Scenario("overload", overload, "3x the sustainable rate, consuming on"),
        Scenario("overload_paused", overload_paused, "3x, pause_on_overload = true"),
        Scenario("fuzz_decoders", fuzz, "100k+ generated bad records through the decoders"),
        Scenario("poison", poison, "bad records of every kind through the service"),
        Scenario("restart_commit", restart_commit, "kill -9 and restart from the commit"),
        Scenario("sasl_tls", sasl_tls, "SCRAM-SHA-512 over TLS: right and wrong credentials"),
        Scenario("dispatcher_death", dispatcher_death, "the dispatcher task dies mid-stream"),
        Scenario("slow_produce", slow_produce, "produce path throttled to 100 messages/s"),
    )
}


async def run_scenarios(ctx: Context, names: Sequence[str]) -> list[Row]:
    """Run ``names`` in order; a scenario that raises gives a FAIL row naming the error."""
    rows: list[Row] = []
    for name in names:
        began = time.monotonic()
        try:
            row = await SCENARIOS[name].run(ctx)
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
            tb = traceback.format_exception(exc)
            row = Row(scenario=name, notes=f"raised {type(exc).__name__}: {exc}"[:500])
            row.figures["traceback"] = "".join(tb)[-3000:]
            row.duration_s = round(time.monotonic() - began, 1)
            row.judge()
        rows.append(row)
    return rows


_COLUMNS = (
    "scenario",
    "events",
    "lost",
    "dup",
    "expired/shed",
    "recovery s",
    "peak RSS MB",
    "verdict",
    "failed checks / notes",
)


def format_table(rows: Sequence[Row]) -> str:
    """One plain-text table: a line per scenario."""
    body: list[tuple[str, ...]] = []
    for r in rows:
        failed = [k for k, ok in r.checks.items() if not ok]
        body.append(
            (
                r.scenario,
                str(r.events),
                str(r.lost),
                str(r.duplicated),
                f"{r.expired}/{r.shed}",
                "-" if r.recovery_s is None else f"{r.recovery_s:.2f}",
                "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
                r.verdict,
                "; ".join(failed) or r.notes,
            )
        )
    widths = [
        max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(_COLUMNS)
    ]
    line = "  ".join(c.ljust(w) for c, w in zip(_COLUMNS, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(out)
