"""``python -m chaos``: run the reliability and security scenarios, print one table.

    python -m chaos                      # every scenario, full sizes
    python -m chaos --fast               # the CI subset's sizes
    python -m chaos --only overload --only poison --json results.json

Starts its own Apache Kafka (``chaos.broker.ChaosKafka``: plain, proxied and SASL_SSL
listeners, a throwaway CA) in a temporary directory, stops it at the end, writes every row
(figures, checks) as JSON, and exits 1 when a scenario fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from chaos.broker import ChaosKafka, ScramUser
from chaos.context import Context, make_bundle
from chaos.scenarios import SCENARIOS, format_table, run_scenarios
from chaos.tls import make_pki
from service.settings import Secret


def _progress(line: str) -> None:
    print(f"[broker] {line}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--fast", action="store_true", help="the CI subset's sizes and durations")
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        metavar="NAME",
        help=f"run only NAME (repeatable): {', '.join(SCENARIOS)}",
    )
    p.add_argument(
        "--json",
        default="chaos-results.json",
        metavar="PATH",
        help="where to write the results (default: %(default)s)",
    )
    p.add_argument(
        "--work",
        metavar="DIR",
        help="work directory (default: a temporary one, "
        "removed at the end unless a scenario failed)",
    )
    args = p.parse_args(argv)
    # The load and collector clients retry through broker faults on purpose; their
    # connection errors would drown the table.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    names = args.only or list(SCENARIOS)
    work = Path(args.work or tempfile.mkdtemp(prefix="weir-chaos-")).absolute()
    work.mkdir(parents=True, exist_ok=True)
    pki = make_pki(work / "pki")
    user = ScramUser("weir", Secret(secrets.token_hex(16)))
    broker = ChaosKafka(
        state_dir=work / "kafka", proxied=True, pki=pki, users=(user,), progress=_progress
    )
    began = time.monotonic()
    broker.start()
    try:
        ctx = Context(
            broker=broker,
            work=work,
            bundle=make_bundle(work / "bundle"),
            fast=args.fast,
            user=user,
            pki=pki,
        )
        rows = asyncio.run(run_scenarios(ctx, names))
    finally:
        broker.stop()
    took = time.monotonic() - began
    print(format_table(rows))
    print(
        f"\n{len(rows)} scenarios in {took:.0f} s ({'fast' if args.fast else 'full'}); "
        f"results: {args.json}; work dir: {work}"
    )
    Path(args.json).write_bytes(
        msgspec.json.format(
            msgspec.json.encode({"fast": args.fast, "seconds": round(took, 1), "rows": rows})
        )
    )
    failed = [r for r in rows if r.verdict != "PASS"]
    if not failed and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
