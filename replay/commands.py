"""``weir replay run``, ``report`` and ``compare``: replay a feed and judge it, redraw the
report of a results file, compare two results files.

    weir replay run FEED [--bootstrap HOST:PORT] [--speed X|max] [--rate N]
                    [--slo slo.toml | --budget-ms MS [--min-attainment F]]
                    [--out results.json] [--html report.html] [--in-process]
                    [--seconds S | --limit N] [--config weir.toml] ...
    weir replay report RESULT.json [--out REPORT.html]
    weir replay compare A.json B.json

``run`` exits 0 when the run meets its SLO, 1 when it does not (the verdict table says
which check failed), 2 on an error (bad SLO file, broker unreachable, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path

import msgspec

from engines.registry import load_model
from replay.comparison import compare
from replay.errors import ReplayError
from replay.inprocess import InProcessTransport
from replay.kafka import KafkaTransport, settings_for
from replay.measure import DEFAULT_LAG_THRESHOLD_MS
from replay.pacing import Pacing
from replay.plan import SOURCE_TS_MODES, load_plan
from replay.progress import Progress
from replay.report import format_summary, format_verdict, print_outcome, write_html
from replay.results import read_result
from replay.runner import DEFAULT_QUIET_S, config_for, run_feed
from replay.slo import DEFAULT_MIN_ATTAINMENT, Slo, load_slo
from schemas.codec import Encoding

# -- run ----------------------------------------------------------------------------------------


def choose_slo(
    path: Path | None,
    *,
    budget_ms: float | None,
    min_attainment: float | None,
    service_budget_ms: float,
) -> tuple[Slo, str]:
    """The SLO of a run and where its budget came from: the SLO file (``min_attainment``
    replacing the file's when given), else ``--budget-ms`` judged by attainment (at least
    ``min_attainment``, default 99 %), else the service's own budget with only "nothing
    lost" judged (and, when given, ``min_attainment``)."""
    if min_attainment is not None and not 0.0 <= min_attainment <= 1.0:
        raise ReplayError(f"--min-attainment must be a fraction in [0, 1], got {min_attainment!r}")
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise ReplayError(f"--budget-ms must be a number of ms > 0, got {budget_ms!r}")
    if path is not None:
        slo = load_slo(path)
        if min_attainment is not None:
            slo = msgspec.structs.replace(
                slo, min_attainment=min_attainment, source=f"{slo.source}, --min-attainment"
            )
        return slo, f"SLO {path}"
    if budget_ms is not None:
        floor = DEFAULT_MIN_ATTAINMENT if min_attainment is None else min_attainment
        slo = Slo(
            budget_ms=budget_ms,
            min_attainment=floor,
            source=f"--budget-ms {budget_ms:g}, attainment >= {floor:.2%}",
        )
        return slo, "--budget-ms"
    slo = Slo.default(service_budget_ms)
    if min_attainment is not None:
        slo = msgspec.structs.replace(
            slo, min_attainment=min_attainment, source="default (nothing lost), --min-attainment"
        )
    return slo, "the service's scheduler.budget_ms (no SLO file)"


def _run_cli(args: argparse.Namespace) -> int:
    settings = settings_for(
        args.config,
        bootstrap=args.bootstrap,
        topic=args.topic,
        decision_topic=args.decision_topic,
        dlq_topic=args.dlq_topic,
        encoding=args.encoding,
    )
    pacing = Pacing.parse(args.speed, args.rate)
    slo, budget_source = choose_slo(
        args.slo,
        budget_ms=args.budget_ms,
        min_attainment=args.min_attainment,
        service_budget_ms=settings.scheduler.budget_ms,
    )
    plan = load_plan(
        args.feed,
        encoding=settings.kafka.input_encoding,
        limit=args.limit,
        seconds=args.seconds,
        source_ts=args.source_ts,
    )
    transport: KafkaTransport | InProcessTransport
    if args.in_process:
        bundle, engine, head, spec = load_model(settings)
        transport = InProcessTransport(
            settings,
            engine=engine,
            head=head,
            spec=spec,
            model_version=bundle.metadata.model_version,
            partitions=args.partitions,
        )
    else:
        transport = KafkaTransport(
            settings.kafka, partitions=args.partitions, fetch_max_wait_ms=args.fetch_max_wait_ms
        )
    config = config_for(
        plan,
        pacing,
        settings,
        transport,
        budget_source=budget_source,
        quiet_s=args.quiet_s,
        prefix_s=args.seconds,
        limit=args.limit,
    )
    progress = Progress(plan.n, pacing.planned_s(plan.n, plan.span_s), enabled=not args.no_progress)
    result = asyncio.run(
        run_feed(
            plan,
            transport,
            pacing=pacing,
            slo=slo,
            config=config,
            quiet_s=args.quiet_s,
            lag_threshold_ms=args.max_sender_lag_ms,
            progress=progress,
        )
    )
    return print_outcome(result, results=args.out, html_page=args.html)


def register_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay run FEED ...``: replay a feed against the service, judge it by an SLO."""
    p = sub.add_parser(
        "run",
        help="replay a feed open-loop into the service and measure every decision",
        description="Replay FEED at its recorded pace x SPEED (or a fixed rate) into the "
        "service through Kafka (or in-process), match every decision to its input, and "
        "judge the run by an SLO file. Exits 1 when the SLO is violated.",
    )
    p.add_argument("feed", type=Path, metavar="FEED")
    p.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka (default: from settings)")
    p.add_argument(
        "--speed", default="1", metavar="X|max", help="recorded pace times X, or max (default 1)"
    )
    p.add_argument("--rate", type=float, metavar="N", help="a fixed rate of N events/s instead")
    judge = p.add_mutually_exclusive_group()
    judge.add_argument("--slo", type=Path, metavar="slo.toml", help="SLO file (default: none lost)")
    judge.add_argument(
        "--budget-ms",
        type=float,
        metavar="MS",
        help="e2e budget without an SLO file, judged by attainment (see --min-attainment)",
    )
    p.add_argument(
        "--min-attainment",
        type=float,
        metavar="F",
        help="fraction of inputs that must be decided ok within the budget (default "
        f"{DEFAULT_MIN_ATTAINMENT:g} with --budget-ms; with --slo it replaces the file's)",
    )
    p.add_argument("--out", type=Path, metavar="results.json", help="write the results here")
    p.add_argument("--html", type=Path, metavar="report.html", help="write the HTML report here")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="no broker: replay straight into the pipeline (the service's own overhead)",
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="weir.toml",
        help="service settings (topics, encodings, "
        "bundle for --in-process); WEIR_* variables apply too",
    )
    p.add_argument("--topic", help="input topic (default: the settings' first input topic)")
    p.add_argument("--decision-topic", help="decision topic (default: from settings)")
    p.add_argument("--dlq-topic", help="dead-letter topic (default: from settings)")
    p.add_argument(
        "--encoding",
        choices=[e.value for e in Encoding],
        help="payload encoding on the input topic (default: the settings' input_encoding)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=1,
        metavar="N",
        help="partitions of topics this creates (in-process: partitions emulated; default 1)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--seconds", type=float, metavar="S", help="replay the first S s only")
    size.add_argument("--limit", type=int, metavar="N", help="replay the first N events only")
    p.add_argument(
        "--quiet-s",
        type=float,
        default=DEFAULT_QUIET_S,
        metavar="S",
        help=f"stop waiting after S s without a decision (default {DEFAULT_QUIET_S:g})",
    )
    p.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        metavar="MS",
        help="the harness's decision consumer (default: settings' kafka.fetch_max_wait_ms)",
    )
    p.add_argument(
        "--source-ts",
        choices=SOURCE_TS_MODES,
        default="shift",
        help="shift payload source times to now (default) or keep them",
    )
    p.add_argument(
        "--max-sender-lag-ms",
        type=float,
        default=DEFAULT_LAG_THRESHOLD_MS,
        metavar="MS",
        help=f"flag the run when the sender falls behind by more (default "
        f"{DEFAULT_LAG_THRESHOLD_MS:g})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_run_cli)


# -- report and compare ------------------------------------------------------------------------


def _run_report(args: argparse.Namespace) -> int:
    result = read_result(args.result)
    out = args.out or Path(args.result).with_suffix(".html")
    path = write_html(result, out)
    print(format_summary(result))
    if result.verdict is not None:
        print(format_verdict(result.verdict))
    print(f"report: {path}")
    return 0


def register_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay report RESULT.json [--out X.html]``."""
    p = sub.add_parser(
        "report",
        help="write the HTML report of a results file",
        description="Regenerate the self-contained HTML report (inline SVG plots) of a run.",
    )
    p.add_argument("result", type=Path, metavar="RESULT.json")
    p.add_argument("--out", "-o", type=Path, metavar="X.html", help="default: RESULT with .html")
    p.set_defaults(func=_run_report)


def _run_compare(args: argparse.Namespace) -> int:
    a, b = read_result(args.a), read_result(args.b)
    print(compare(a, b, names=(Path(args.a).stem, Path(args.b).stem)))
    return 0


def register_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``weir replay compare A.json B.json``."""
    p = sub.add_parser(
        "compare",
        help="print the key figures of two runs side by side with deltas",
        description="Compare two results files: B's figures against A's.",
    )
    p.add_argument("a", type=Path, metavar="A.json")
    p.add_argument("b", type=Path, metavar="B.json")
    p.set_defaults(func=_run_compare)
