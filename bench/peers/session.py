"""One contender under test: its options, topics, child process(es) and measurements.

``Options`` holds every flag of a run; a ``Session`` is one contender (or N worker
processes of it in one consumer group) on its own topics and group, started and warmed
up through Kafka (``start``), measured by replays (``measure``) and stopped with SIGTERM.
Its variants: ``workers`` (N processes on N partitions: scale-out), ``budgets_ms`` (one
input topic per budget, weir told each topic's budget: the mixed-deadline scenario) and
``bundle`` (another model: the heavy-model scenario).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from bench.peers import procstat
from bench.peers.base import CONTENDERS, Contender
from bench.peers.config import PeerConfig, weir_settings
from replay.errors import ReplayError
from replay.kafka import KafkaTransport, ensure_topics
from replay.measure import Recorder
from replay.pacing import Pacing
from replay.plan import Plan
from replay.results import RunResult
from replay.runner import Timing, build_result, config_for, replay
from replay.slo import Slo
from service.broker._process import free_port
from service.processes import ChildProcess, log_tail, spawn

REPO = Path(__file__).resolve().parents[2]
Say = Callable[[str], None]


class Options(msgspec.Struct, kw_only=True):
    """Everything a run is told (the command line's flags)."""

    out: Path
    feed: Path
    contenders: tuple[str, ...] = tuple(CONTENDERS)
    repeats: int = 3
    budget_ms: float = 5.0
    seconds_1x: float = 60.0
    seconds_10x: float = 345.0
    step_s: float = 10.0
    ramp_start: float = 500.0
    ramp_factor: float = 2.0
    ramp_max: float = 64_000.0
    refine: int = 1
    warmup_events: int = 3000
    warmup_rate: float = 1000.0
    broker_warmup_s: float = 30.0
    """Seconds of load through the echo before the first measured trial (0: none): a fresh
    broker JVM JIT-compiles its hot paths under its first load, which slowed whichever
    contender came first (weir, first in repeat 1: 1x p50 10.1 ms against 4.3 and 4.5 ms in
    the later repeats)."""
    broker_warmup_rate: float = 2000.0
    partitions: int = 1
    bootstrap: str | None = None
    loop: str = "uvloop"
    max_batch: int = 64
    max_wait_ms: float = 1.0
    profile: tuple[str, ...] = ("weir",)
    profile_s: float = 15.0
    settle_s: float = 2.0
    quiet_s: float = 5.0
    startup_timeout_s: float = 180.0
    python: dict[str, str] = msgspec.field(default_factory=dict)
    """Contender -> interpreter (a separate venv), default this one."""
    weir_env: dict[str, str] = msgspec.field(default_factory=dict)
    """``WEIR_*`` overrides for every weir contender (diagnostics only; default: none)."""
    bundle: str = ""
    """The model bundle every contender serves (empty: the committed default bundle)."""
    weir_variants: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    """More configurations of weir, name -> ``WEIR_*`` settings (``base.add_weir_variant``)."""
    inproc_events: int = 40_000
    """Events for the in-process decision-path measurement (0: skip it)."""
    scenarios: tuple[str, ...] = ("overload", "mixed", "heavy", "scale")
    """Scenarios after the curve (``bench.peers.scenarios``); each skipped when empty."""
    overload: tuple[float, ...] = (1.5, 3.0)
    """Offered load as multiples of each contender's max sustainable rate."""
    overload_s: float = 30.0
    overload_base: str = "own"
    """``own``: each contender at multiples of its own max sustainable rate; ``common``:
    every contender at multiples of the best peer's, one offered load for all."""
    overload_bundle: str = ""
    """The model bundle of the overload scenario (empty: ``bundle``, overloaded at multiples
    of the curve's rates); another is ramped first for its own capacities."""
    mixed_budgets_ms: tuple[float, float] = (5.0, 100.0)
    """Budgets of the mixed-deadline scenario's tight and loose input topics."""
    mixed_speed: float = 10.0
    """The mixed-deadline scenario replays the feed at this speed ..."""
    mixed_s: float = 60.0
    """... for this long."""
    tight_share: float = 0.5
    """Share of the mixed feed's events sent to the tight topic."""
    mixed_overload: float = 1.5
    """The mixed-overload scenario offers this x each contender's max sustainable rate
    with the mixed bundle (0: not run)."""
    mixed_bundle: str = ""
    """The model bundle of the mixed-deadline scenario (empty: ``bundle``): the scheduling
    policy matters only where the model is a real share of the tight budget."""
    heavy_bundle: str = ""
    """A costlier model bundle (the teacher, or a wide student) for the heavy-model
    scenario; empty: skip it."""
    workers: tuple[int, ...] = (1, 2)
    """weir worker processes (one consumer group, that many partitions) for scale-out."""


# -- the contender process --------------------------------------------------------------------


class Session:
    """One contender process on its own topics, warmed up and ready to measure."""

    def __init__(
        self,
        contender: Contender,
        opts: Options,
        bootstrap: str,
        tag: str,
        say: Say,
        *,
        broker_pid: int | None = None,
        workers: int = 1,
        budgets_ms: tuple[float, ...] = (),
        bundle: str = "",
    ) -> None:
        self.contender = contender
        self.broker_pid = broker_pid
        self.opts = opts
        self.workers = workers
        name = f"peers-{tag}-{contender.name}"
        work = opts.out / "work" / f"{tag}-{contender.name}"
        inputs = [f"{name}-in", *(f"{name}-in{i}" for i in range(1, len(budgets_ms)))]
        self.partitions = max(opts.partitions, workers)
        self.ops_port = free_port() if contender.weir and workers == 1 else None
        """A single weir worker serves its ops endpoint here, so each trial can read what
        its process went through (``bench.peers.opsprobe``); None: no endpoint."""
        ops = (
            {"WEIR_HTTP__ENABLED": "true", "WEIR_HTTP__PORT": str(self.ops_port)}
            if self.ops_port is not None
            else {}
        )
        self.cfg = PeerConfig(
            bootstrap=bootstrap,
            input_topic=inputs[0],
            extra_input_topics=inputs[1:],
            topic_budget_ms=dict(zip(inputs, budgets_ms, strict=False)),
            bundle=bundle or opts.bundle,
            decision_topic=f"{name}-out",
            dlq_topic=f"{name}-dlq",
            group_id=name,
            partitions=self.partitions,
            budget_ms=max(budgets_ms) if budgets_ms else opts.budget_ms,
            max_batch=opts.max_batch,
            max_wait_ms=opts.max_wait_ms,
            loop=opts.loop,
            workdir=str(work),
            weir_env={**contender.settings, **opts.weir_env, **ops} if contender.weir else {},
        )
        self.settings = weir_settings(self.cfg)
        self.log_file = opts.out / "logs" / f"{tag}-{contender.name}.log"
        self.say = say
        self.procs: list[ChildProcess] = []
        self.on_stop: Callable[[Session], None] | None = None
        self.peak_rss: int | None = None
        self.dirty = False
        """Work left undecided by a trial: restart before measuring again."""
        self.restarts = 0
        """Sessions this one replaced (``Bench.ready``)."""

    @property
    def worker(self) -> str:
        """The contender ``bench.peers.worker`` runs: every weir configuration runs weir's
        ``serve``, its settings being in the config."""
        return "weir" if self.contender.weir else self.contender.name

    @property
    def proc(self) -> ChildProcess | None:
        """The first worker process (None before the start)."""
        return self.procs[0] if self.procs else None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        """Every worker process."""
        return [p.pid for p in self.procs]

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.alive for p in self.procs)

    @property
    def label(self) -> str:
        """The contender's name, with ``xN`` for N worker processes."""
        name = self.contender.name
        return name if self.workers == 1 else f"{name} x{self.workers}"

    def log_tail(self, lines: int = 20) -> str:
        """The end of the child's log."""
        return log_tail(self.log_file, lines)

    async def start(self, warm: Plan) -> float:
        """Create the topics, start the child, warm it up; seconds until it answered."""
        k = self.settings.kafka
        await ensure_topics(
            k,
            {
                **dict.fromkeys(self.cfg.input_topics, self.partitions),
                self.cfg.decision_topic: self.partitions,
                self.cfg.dlq_topic: 1,
            },
        )
        began = time.monotonic()
        for _ in range(self.workers):
            self._spawn()
        result, _ = await self.measure(
            warm, Pacing(rate=self.opts.warmup_rate), quiet_s=self.opts.startup_timeout_s
        )
        c = result.completeness
        if c.lost or not self.alive:
            status = None if self.proc is None else self.proc.returncode
            self.stop()
            raise ReplayError(
                f"{self.contender.name} did not answer its warm-up ({c.decided:,} of "
                f"{c.inputs:,} decided; exit status {status}); its log ends:\n{self.log_tail()}"
            )
        return time.monotonic() - began

    def _spawn(self) -> None:
        Path(self.cfg.workdir).mkdir(parents=True, exist_ok=True)
        python = self.opts.python.get(self.contender.name, sys.executable)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        n = len(self.procs)
        log = self.log_file if n == 0 else self.log_file.with_suffix(f".{n}.log")
        self.procs.append(
            spawn(
                # Every weir configuration is weir's ``serve``; its settings are in the config.
                [python, "-m", "bench.peers.worker", self.worker],
                log_file=log,
                cwd=REPO,
                env=env,
                stdin=msgspec.json.encode(self.cfg),
            )
        )

    async def measure(
        self,
        plan: Plan,
        pacing: Pacing,
        *,
        quiet_s: float,
        max_s: float | None = None,
        transport: KafkaTransport | None = None,
    ) -> tuple[RunResult, Recorder]:
        """One replay of ``plan`` into this contender (stopped early if the child dies)."""
        transport = transport or KafkaTransport(self.settings.kafka)
        rec = Recorder(plan.n)
        started = time.time_ns()
        budget = self.cfg.budget_ms
        slo = Slo(budget_ms=budget, percentiles=((99.0, budget),))
        config = config_for(
            plan,
            pacing,
            self.settings,
            transport,
            budget_source="--budget-ms",
            quiet_s=quiet_s,
            service=self.contender.title,
        )
        task = asyncio.get_running_loop().create_task(
            replay(plan, transport, pacing=pacing, recorder=rec, quiet_s=quiet_s)
        )
        deadline = None if max_s is None else time.monotonic() + max_s
        why = ""
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if task.done():
                break
            if not self.alive:
                codes = [p.returncode for p in self.procs]
                why = f"the contender exited (status {', '.join(map(str, codes)) or None})"
            elif deadline is not None and time.monotonic() > deadline:
                why = f"stopped waiting for decisions after {max_s:,.0f} s"
            if why:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                break
        timing = Timing(started_wall_ns=started, ended_wall_ns=time.time_ns())
        if task.done() and not task.cancelled():
            _, timing = task.result()
        result = build_result(rec, timing, config=config, slo=slo, pacing=pacing)
        if why:
            result.config.notes.append(why)
        if result.completeness.lost or why:
            self.dirty = True
        return result, rec

    def sample_rss(self) -> None:
        """Keep the largest high-water mark seen (summed over the worker processes)."""
        marks = [procstat.peak_rss_bytes(pid) for pid in self.pids]
        known = [m for m in marks if m is not None]
        hwm = sum(known) if known else None
        if hwm is not None and (self.peak_rss is None or hwm > self.peak_rss):
            self.peak_rss = hwm

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the first non-zero exit status."""
        if not self.procs:
            return None
        if self.on_stop is not None:
            self.on_stop(self)
        self.sample_rss()
        codes = [p.stop(timeout_s) for p in self.procs]
        return next((c for c in codes if c not in (0, None)), codes[0])
