"""Runs the contenders against one Apache Kafka and measures each the same way.

For every repeat, for every contender (order rotated each repeat, so a noisy minute on the
shared host does not always hit the same one):

1. fresh topics (input, decisions, dead letters; ``partitions`` each) and a fresh group;
2. the contender in a child process (``bench.peers.worker``), alone on the box;
3. warm-up: the feed's first ``warmup_events`` at ``warmup_rate``/s, waited for until every
   one is decided (this is also the readiness test, the same for every system); excluded;
4. the loads, each a ``replay.runner`` replay (open loop, e2e latency from the intended
   send time, decisions matched by (topic, partition, offset)): the feed's first
   ``seconds_1x`` s at 1x and its first ``seconds_10x`` s at 10x; a replay that left work
   undecided restarts the contender on fresh topics first;
5. CPU seconds and peak RSS of the child from ``/proc`` around each trial; SIGTERM.

Then the throughput-latency curve and the scenarios (``Bench.curve``, which hands over to
``bench.peers.scenarios``): every contender started once and kept, each fixed rate of the
ramp (``step_s`` s at ``ramp_start``/s, times ``ramp_factor`` per step, then ``refine``
bisections) run ``repeats`` times interleaved across contenders and judged on the median
(``bench.peers.verdict``); overload at multiples of each one's max rate on those same
processes; the mixed-deadline, heavy-model and scale-out scenarios on fresh ones. A
session here may be N worker processes in one consumer group (``Session(workers=N)``).

Then, for the contenders named by ``profile``, one more trial at that contender's median
max sustainable rate with py-spy sampling its process (``bench.peers.pyspy``).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec

from bench.peers import pyspy
from bench.peers.base import CONTENDERS, Contender
from bench.peers.results import (
    BenchResult,
    ContenderRun,
    ProfileSummary,
    Trial,
    summarize,
)
from bench.peers.session import Options, Say, Session
from bench.peers.trials import Plans, run_trial
from bench.peers.verdict import checks_of, curve_rates, mark_host_limits, points_of
from replay.errors import ReplayError
from replay.pacing import Pacing
from replay.plan import load_plan

INPROC_REPEATS = 5
"""Repeats of the in-process decision paths (``bench.peers.inproc.measure_paired``): each
adds one paired weir / fixed-window ratio to the verdict's median."""

# -- feed ---------------------------------------------------------------------------------------


def prepare_feed(feed: Path, out: Path, say: Say) -> Path:
    """A feed file: ``feed`` itself, or a Binance capture (``.gz``) imported under ``out``."""
    if feed.suffix != ".gz":
        return feed
    target = out / f"{feed.name.removesuffix('.gz')}.parquet"
    if not target.exists():
        from replay.importers.binance import import_binance

        say(f"importing {feed} -> {target}")
        import_binance([feed], target)
    return target


class Bench:
    """Runs the whole side-by-side (see the module docstring)."""

    def __init__(self, opts: Options, *, say: Say | None = None) -> None:
        self.opts = opts
        self.say = say or (lambda text: print(f"peers: {text}", file=sys.stderr, flush=True))
        self.run_id = uuid.uuid4().hex[:6]
        self._sessions = 0
        self.bootstrap = ""
        self.broker_pid: int | None = None
        """The broker's pid when this run started it (its CPU is then measured too)."""
        self.feed: Path | None = None
        self.live: set[Session] = set()
        """Sessions not stopped yet (stopped by ``run_bench`` if the run is interrupted)."""

    def _session(self, contender: Contender, **variant: Any) -> Session:
        self._sessions += 1
        tag = f"{self.run_id}-{self._sessions}"
        session = Session(
            contender,
            self.opts,
            self.bootstrap,
            tag,
            self.say,
            broker_pid=self.broker_pid,
            **variant,
        )
        self.live.add(session)
        session.on_stop = self.live.discard
        return session

    async def fresh(
        self, contender: Contender, plans: Plans, run: ContenderRun | None = None, **variant: Any
    ) -> Session:
        """A new, warmed-up contender session (``variant``: ``Session``'s keywords)."""
        session = self._session(contender, **variant)
        self.say(f"{session.label}: starting (log {session.log_file})")
        startup = await session.start(plans.warm)
        if run is not None and run.startup_s is None:
            run.startup_s = startup
        self.say(f"{session.label}: ready and warm in {startup:.1f} s (pids {session.pids})")
        return session

    async def ready(self, session: Session, plans: Plans) -> Session:
        """``session`` after the settle pause, or a fresh one like it if it left work
        undecided or died (same contender and variant)."""
        await asyncio.sleep(self.opts.settle_s)
        if not session.dirty and session.alive:
            return session
        session.stop()
        again = await self.fresh(
            session.contender,
            plans,
            workers=session.workers,
            budgets_ms=tuple(session.cfg.topic_budget_ms.values()),
            bundle=session.cfg.bundle,
        )
        again.restarts = session.restarts + 1
        return again

    async def warm_broker(self, plans: Plans) -> str:
        """Load the broker through the echo for ``broker_warmup_s`` at ``broker_warmup_rate``
        before anything is measured (not recorded); returns the note saying so."""
        opts = self.opts
        rate = opts.broker_warmup_rate
        plan = plans.at_rate(rate, opts.broker_warmup_s)
        self.say(f"warming up the broker: {plan.n:,} events at {rate:,.0f}/s through the echo")
        session: Session | None = None
        try:
            session = await self.fresh(CONTENDERS["echo"], plans)
            result, _ = await session.measure(
                plan, Pacing(rate=rate), quiet_s=opts.quiet_s, max_s=3 * plan.n / rate + 60.0
            )
        except ReplayError as exc:
            self.say(f"broker warm-up failed: {exc}")
            return f"broker warm-up failed, the first trial ran on a cold broker: {exc}"
        finally:
            if session is not None:
                session.stop()
        c = result.completeness
        return (
            f"broker warm-up: {plan.n:,} events at {rate:,.0f}/s through the echo before the "
            f"first trial, not measured ({c.decided:,} decided)"
        )

    async def run_contender(self, contender: Contender, plans: Plans, repeat: int) -> ContenderRun:
        """1x and 10x of one contender (one repeat); the ramp is the interleaved curve's."""
        opts = self.opts
        run = ContenderRun(contender=contender.name, repeat=repeat)
        session: Session | None = None
        try:
            session = await self.fresh(contender, plans, run)
            for load, plan, pacing in (
                ("1x", plans.x1, Pacing(speed=1.0)),
                ("10x", plans.x10, Pacing(speed=10.0)),
            ):
                await asyncio.sleep(opts.settle_s)
                if session.dirty or not session.alive:
                    session.stop()
                    self._rss(run, session)
                    run.restarts += 1
                    session = await self.fresh(contender, plans, run)
                t = await run_trial(
                    session,
                    plan,
                    pacing,
                    load=load,
                    repeat=repeat,
                    name=f"r{repeat}-{contender.name}-{load}",
                )
                self.report(t)
                run.trials.append(t)
        except ReplayError as exc:
            run.error = str(exc)
            self.say(f"{contender.name}: {exc}")
        finally:
            if session is not None:
                status = session.stop()
                self._rss(run, session)
                if status not in (0, None, -signal.SIGTERM):
                    self.say(f"{contender.name}: exited with status {status} ({session.log_file})")
        return run

    def _rss(self, run: ContenderRun, session: Session) -> None:
        if session.peak_rss is not None:
            mib = session.peak_rss / 2**20
            run.peak_rss_mib = max(run.peak_rss_mib or 0.0, mib)

    def report(self, t: Trial) -> None:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        rate = f"{t.offered_rate:,.0f}/s" if t.offered_rate else "-"
        cpu = "-" if t.cpu_s_per_1k is None else f"{t.cpu_s_per_1k:.3f}"
        self.say(
            f"{t.contender} {t.load} {rate}: p50 {ms(t.p50_ms)} p99 {ms(t.p99_ms)} "
            f"p99.9 {ms(t.p999_ms)} ms, attain {t.attainment or 0:.4f}, lost {t.lost}, "
            f"dup {t.duplicated}, cpu/1k {cpu} s, "
            f"{'ok' if t.sustainable else 'NOT sustainable'}"
            f"{' (harness-limited)' if t.harness_limited else ''} load {t.loadavg[0]:.1f}"
            + (
                ""
                if t.loop_held_ms is None
                else f", loop held >= {t.loop_held_ms:g} ms, gc >= {t.gc_pause_ms or 0:g} ms"
            )
            + ("" if t.mean_batch is None else f", mean batch {t.mean_batch:.1f}")
        )

    async def profile(self, name: str, rate: float, plans: Plans) -> ProfileSummary | None:
        """One trial at ``rate`` with py-spy sampling the contender."""
        contender = CONTENDERS[name]
        run = ContenderRun(contender=name, repeat=0)
        session = await self.fresh(contender, plans, run)
        raw = self.opts.out / f"profile-{name}.txt"
        try:
            await asyncio.sleep(self.opts.settle_s)
            spy = pyspy.start(session.pid, raw, seconds=self.opts.profile_s)
            if spy is None:
                self.say("py-spy not found: no profile")
                return None
            t = await run_trial(
                session,
                plans.at_rate(rate, self.opts.profile_s),
                Pacing(rate=rate),
                load="rate",
                repeat=0,
                name=f"profile-{name}-rate{rate:.0f}",
            )
            self.report(t)
            await asyncio.get_running_loop().run_in_executor(None, pyspy.wait, spy)
        finally:
            session.stop()
        summary = pyspy.summarize(raw, contender=name, rate=rate, seconds=self.opts.profile_s)
        summary.trial = t
        return summary

    async def curve(self, plans: Plans, names: list[str], result: BenchResult) -> None:
        """The interleaved curve, then the scenarios (``bench.peers.scenarios``)."""
        from bench.peers import scenarios

        opts = self.opts
        sessions: list[Session] = []
        mixed_rates: dict[str, float] | None = None
        try:
            for name in names:
                try:
                    sessions.append(await self.fresh(CONTENDERS[name], plans))
                except ReplayError as exc:
                    result.notes.append(f"curve: {exc}")
            self.say(f"curve: {', '.join(s.label for s in sessions)} interleaved")
            steps, stops, sessions = await scenarios.ramp(self, plans, sessions)
            result.curve, result.curve_stop = steps, stops
            result.points = mark_host_limits(points_of(steps, budget_ms=opts.budget_ms))
            rates = curve_rates(steps, result.points)
            result.summary = summarize(result.runs, rates)
            _save(result, opts.out)
            if "overload" in opts.scenarios and opts.overload:
                if opts.overload_bundle:
                    # The curve's sessions serve the run's bundle: the overload's are new.
                    for session in sessions:
                        session.stop()
                    sessions = []
                    cap, sessions = await scenarios.capacity(self, plans, names)
                    result.scenarios.append(cap)
                    _save(result, opts.out)
                    steps = cap.trials
                capacity, lowest = scenarios.capacities(steps, opts.budget_ms)
                sc, sessions = await scenarios.overload(self, plans, sessions, capacity, lowest)
                result.scenarios.append(sc)
                _save(result, opts.out)
                mixed_rates = scenarios.mixed_overload_rates(opts, sc, capacity, lowest)
        finally:
            for session in sessions:
                session.stop()
        if "mixed" in opts.scenarios:
            result.scenarios.append(await scenarios.mixed(self, plans, names))
            _save(result, opts.out)
            if opts.mixed_overload and mixed_rates is not None:
                sc = await scenarios.mixed(self, plans, names, mixed_rates)
                result.scenarios.append(sc)
                _save(result, opts.out)
            elif opts.mixed_overload:
                result.notes.append(
                    "mixed-overload scenario not run: it needs the overload scenario's "
                    "capacities measured with the mixed bundle (--overload-bundle equal to "
                    "--mixed-bundle)"
                )
        if "heavy" in opts.scenarios and opts.heavy_bundle:
            result.scenarios.append(await scenarios.heavy(self, plans, names))
            _save(result, opts.out)
        elif "heavy" in opts.scenarios:
            result.notes.append(
                "heavy-model scenario not run: no --heavy-bundle (build one with "
                "`weir model build ... --teacher-out DIR`, or a student wide enough that a "
                "batch of 64 takes >= 1 ms)"
            )
        if "scale" in opts.scenarios and any(n > 1 for n in opts.workers):
            sc, _ = await scenarios.scale(self, plans)
            result.scenarios.append(sc)
            _save(result, opts.out)

    async def run(self) -> BenchResult:
        """Every repeat of every contender, the summary, the checks, the profiles."""
        opts = self.opts
        opts.out.mkdir(parents=True, exist_ok=True)
        feed = self.feed = prepare_feed(opts.feed, opts.out, self.say)
        plans = Plans(opts, feed)
        self.say(
            f"feed {feed}: 1x = first {plans.x1.span_s:.0f} s ({plans.x1.n:,} events), "
            f"10x = first {plans.x10.span_s:.0f} s ({plans.x10.n:,} events); "
            f"warm-up {plans.warm.n:,} events"
        )
        result = BenchResult(
            params=msgspec.to_builtins(opts, enc_hook=str),
            env=_env(),
            contenders={
                n: {"title": c.title, "how": c.how, "versions": c.versions()}
                for n, c in CONTENDERS.items()
                if n in opts.contenders
            },
        )
        result.notes.append(
            f"1x: the first {plans.x1.span_s:.0f} s of {opts.feed.name} ({plans.x1.n:,} events); "
            f"10x: its first {plans.x10.span_s:.0f} s at 10x ({plans.x10.n:,} events); "
            f"ramp: {opts.step_s:g} s per fixed-rate step, x{opts.ramp_factor:g} from "
            f"{opts.ramp_start:,.0f}/s, {opts.refine} bisection(s)"
        )
        names = [n for n in CONTENDERS if n in opts.contenders]
        if opts.broker_warmup_s > 0:
            result.notes.append(await self.warm_broker(plans))
        for repeat in range(1, opts.repeats + 1):
            shift = (repeat - 1) % len(names)
            order = names[shift:] + names[:shift]
            self.say(f"repeat {repeat}/{opts.repeats}: {', '.join(order)}")
            for name in order:
                run = await self.run_contender(CONTENDERS[name], plans, repeat)
                result.runs.append(run)
                _save(result, opts.out)
        await self.curve(plans, names, result)
        result.checks = checks_of(result)
        _save(result, opts.out)
        for name in opts.profile:
            if name not in result.summary:
                continue
            rate = result.summary[name]["max_rate"].median or opts.ramp_start
            self.say(f"profiling {name} at {rate:,.0f}/s for {opts.profile_s:g} s")
            try:
                prof = await self.profile(name, rate, plans)
            except ReplayError as exc:
                self.say(f"profile of {name} failed: {exc}")
                continue
            if prof is not None:
                result.profiles.append(prof)
        _save(result, opts.out)
        return result


def _save(result: BenchResult, out: Path) -> None:
    from bench.peers.results import encode_result

    (out / "peers.json").write_bytes(encode_result(result) + b"\n")


def _env() -> dict[str, str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count() or 0),
        "loadavg_at_start": load,
    }


def run_bench(opts: Options, *, say: Say | None = None) -> BenchResult:
    """Start Kafka (unless ``opts.bootstrap``), run the bench, stop what was started."""
    bench = Bench(opts, say=say)
    broker: Any = None
    try:
        if opts.bootstrap:
            bench.bootstrap = opts.bootstrap
        else:
            from service.broker import ApacheKafka

            broker = ApacheKafka(state_dir=opts.out / "kafka")
            bench.say("starting Apache Kafka ...")
            bench.bootstrap = broker.start()
            bench.broker_pid = broker.status().pid
            bench.say(f"Apache Kafka at {bench.bootstrap}")
        result = asyncio.run(bench.run())
    finally:
        for session in list(bench.live):
            session.stop(timeout_s=5.0)
        if broker is not None:
            broker.stop()
            # Our own broker's logs of every contender's topics (gigabytes after a ramp).
            shutil.rmtree(opts.out / "kafka" / "data", ignore_errors=True)
    if opts.inproc_events > 0 and bench.feed is not None:
        from bench.peers import inproc

        reps = INPROC_REPEATS
        bench.say(f"decision paths without Kafka ({opts.inproc_events:,} events, {reps} repeats)")
        plan = load_plan(bench.feed, limit=opts.inproc_events)
        result.inproc_us_per_event, result.inproc_ratios = inproc.measure_paired(
            plan, events=plan.n, repeats=reps, bundle=opts.bundle, loop=opts.loop
        )
        result.inproc_loop = opts.loop
        result.checks = checks_of(result)  # now with the in-process figures
        _save(result, opts.out)
    return result
