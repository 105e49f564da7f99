"""The interleaved throughput-latency curve and the scheduling-policy scenarios.

Run by ``harness.Bench.run`` after the 1x / 10x replays, all through the same broker and
the same feed:

- **curve** (``ramp``): every contender's session is started and warmed up once and kept;
  each offered rate then runs ``repeats`` times per contender, interleaved
  (``verdict.interleaved``), and the median rule (``verdict.point_of``) decides whether a
  contender goes on to the next rate; ``refine`` geometric bisections follow, per
  contender between its last pass and first failure. A session that left work undecided
  is replaced by a fresh one before its next step (``Bench.ready``).
- **overload**: the bursty feed, tiled and sped up so its mean rate is ``factor`` x each
  contender's own max sustainable rate (one that sustained no rate: ``factor`` x the
  lowest rate it was offered, at least that overload), or with ``overload_base =
  "common"`` x the best peer's for every contender, for ``overload_s`` s; goodput and
  the share of in-deadline ``ok`` decisions, every other input's outcome by status, and
  lost inputs. With ``overload_bundle`` every model contender serves that bundle instead,
  and its capacity there is measured first (**capacity**: the same interleaved ramp on
  fresh sessions), so that the model, where the scheduling policy decides, is the
  bottleneck rather than the Kafka client and the broker.
- **mixed**: one service consuming two input topics, the tight one with budget
  ``mixed_budgets_ms[0]`` and the loose one with ``[1]`` (weir's
  ``scheduler.topic_budget_ms``; the peers batch the same whatever the topic), the feed at
  ``mixed_speed`` split between them (``tight_share``), every contender serving
  ``mixed_bundle`` (default: the run's bundle); attainment per class.
- **mixed-overload**: the same service at ``mixed_overload`` x each contender's max
  sustainable rate with that bundle (the capacity the overload measured), the bursty feed
  tiled and sped up as in the overload: at the mixed scenario's speed nobody is
  overloaded and every batcher keeps both classes in time; here something must give. The
  echo floor is offered weir's rate (``with_floor``): what the host and the broker alone
  leave of the tight budget at that load.
- **heavy**: the 10x replay with a costlier model bundle (``heavy_bundle``).
- **scale**: weir with ``N`` worker processes in one consumer group on ``N`` partitions,
  the same interleaved ramp for each ``N`` in ``workers``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from bench.peers.base import WEIRS, Contender
from bench.peers.results import ClassFigures, ContenderRun, Scenario, Trial
from bench.peers.trials import Plans, bisect_rate, ramp_rates, run_trial, tile_plan
from bench.peers.verdict import (
    ECHO,
    class_figures,
    curve_rates,
    interleaved,
    mixed_classes,
    point_of,
    points_of,
)
from replay.errors import ReplayError
from replay.kafka import KafkaTransport, ensure_topics
from replay.measure import Recorder
from replay.pacing import Pacing
from replay.plan import load_plan
from service.settings import KafkaSettings

if TYPE_CHECKING:
    from pathlib import Path

    from bench.peers.session import Options, Say, Session


class Bench(Protocol):
    """What the scenarios need of the harness's ``Bench`` (which imports this module)."""

    opts: Options
    say: Say
    feed: Path | None

    async def fresh(
        self, contender: Contender, plans: Plans, run: ContenderRun | None = None, **variant: Any
    ) -> Session:
        """A new, warmed-up contender session."""
        ...

    async def ready(self, session: Session, plans: Plans) -> Session:
        """``session`` after the settle pause, or a fresh one like it."""
        ...

    def report(self, t: Trial) -> None:
        """Say one trial's figures."""
        ...


class ClassedTransport(KafkaTransport):
    """A replay transport that sends input ``seq`` to ``topics[classes[seq]]``."""

    def __init__(
        self, kafka: KafkaSettings, *, topics: Sequence[str], classes: npt.NDArray[np.int8]
    ) -> None:
        super().__init__(kafka, topic=topics[0])
        self.topics = list(topics)
        self.classes = classes

    async def open(self, recorder: Recorder) -> None:
        """Create the other class topics too, then open as ``KafkaTransport`` does."""
        await ensure_topics(self.kafka, dict.fromkeys(self.topics[1:], self.partitions))
        await super().open(recorder)

    async def send(self, seq: int, key: bytes, value: bytes) -> None:
        """Produce to the event's class topic (see ``KafkaTransport.send``)."""
        self.topic = self.topics[int(self.classes[seq])]
        await super().send(seq, key, value)


def class_figures_of(
    rec: Recorder, classes: npt.NDArray[np.int8], topics: Sequence[str], budgets_ms: Sequence[float]
) -> dict[str, ClassFigures]:
    """Per-class figures of a finished replay (``verdict.class_figures``)."""
    n = rec.n_sent
    return class_figures(
        status=rec.status[:n],
        acked=rec.acked[:n],
        late=rec.late[:n],
        e2e_ns=rec.received[:n] - rec.intended[:n],
        classes=classes[:n],
        topics=dict(enumerate(topics)),
        budgets_ms=dict(enumerate(budgets_ms)),
        stages=rec.stage_spans(),
    )


async def ramp(
    bench: Bench, plans: Plans, sessions: list[Session], *, tag: str = "rate"
) -> tuple[list[Trial], dict[str, str], list[Session]]:
    """The interleaved ramp of ``sessions``: every step, why each stopped, the sessions
    still held (replacements included)."""

    opts = bench.opts
    held = {s.label: s for s in sessions}
    steps: list[Trial] = []
    stopped: dict[str, str] = {}

    async def run(targets: dict[str, float], idx: int) -> None:
        for repeat, label in interleaved(list(targets), opts.repeats, step=idx):
            if stopped.get(label, "").startswith("error"):
                continue
            rate = targets[label]
            try:
                held[label] = session = await bench.ready(held[label], plans)
            except ReplayError as exc:
                stopped[label] = f"error: {exc}"
                bench.say(f"{label}: {exc}")
                continue
            t = await run_trial(
                session,
                plans.at_rate(rate, opts.step_s),
                Pacing(rate=rate),
                load=tag,
                repeat=repeat,
                name=f"{tag}-r{repeat}-{label.replace(' ', '')}-{rate:.0f}",
            )
            bench.report(t)
            steps.append(t)

    def mine(label: str) -> list[Trial]:
        return [t for t in steps if t.contender == label]

    active = list(held)
    for idx, rate in enumerate(ramp_rates(opts.ramp_start, opts.ramp_factor, opts.ramp_max)):
        if not active:
            break
        await run(dict.fromkeys(active, rate), idx)
        for label in active:
            at = [t for t in mine(label) if round(t.offered_rate or 0) == round(rate)]
            if label in stopped or not at:
                continue
            p = point_of(at, budget_ms=opts.budget_ms)
            if not p.sustainable:
                stopped[label] = "harness" if 2 * p.harness_limited >= p.repeats else "slo"
        active = [a for a in active if a not in stopped]
    for label in active:
        stopped[label] = "ceiling"
    for idx in range(opts.refine):
        mids: dict[str, float] = {}
        for label in held:
            lo, hi = _bracket(mine(label), opts.budget_ms)
            if lo is not None and hi is not None and lo < (mid := bisect_rate(lo, hi)) < hi:
                mids[label] = mid
        if not mids:
            break
        await run(mids, idx)
    return steps, stopped, list(held.values())


def _bracket(trials: list[Trial], budget_ms: float) -> tuple[float | None, float | None]:
    by: dict[float, list[Trial]] = {}
    for t in trials:
        by.setdefault(round(t.offered_rate or 0.0), []).append(t)
    pts = sorted((r, point_of(ts, budget_ms=budget_ms).sustainable) for r, ts in by.items())
    hi = next((r for r, ok in pts if not ok), None)
    passing = [r for r, ok in pts if ok and (hi is None or r < hi)]
    return (max(passing) if passing else None), hi


def capacities(
    steps: Sequence[Trial], budget_ms: float
) -> tuple[dict[str, float], dict[str, float]]:
    """What a ramp's ``steps`` say of each contender's capacity: its median max sustainable
    rate (contenders that sustained none are left out), and the lowest rate it was
    offered (the bound below which a contender that sustained none lies)."""
    rates = curve_rates(steps, points_of(steps, budget_ms=budget_ms))
    capacity = {label: r.median for label, r in rates.items() if r.median is not None}
    lowest: dict[str, float] = {}
    for t in steps:
        if t.offered_rate:
            lowest[t.contender] = min(t.offered_rate, lowest.get(t.contender, t.offered_rate))
    return capacity, lowest


async def capacity(bench: Bench, plans: Plans, names: list[str]) -> tuple[Scenario, list[Session]]:
    """The interleaved ramp of every model contender in ``names`` serving
    ``overload_bundle``, on fresh sessions (module doc); the sessions are returned for the
    overload that follows (to be stopped by the caller)."""
    from bench.peers.base import CONTENDERS

    opts = bench.opts
    sc = Scenario(
        name="capacity",
        title=f"Capacity with {opts.overload_bundle}: the interleaved ramp whose max "
        "sustainable rates the overload factors multiply",
        params={"bundle": opts.overload_bundle},
    )
    sessions: list[Session] = []
    for name in names:
        if not CONTENDERS[name].model:
            continue
        try:
            sessions.append(await bench.fresh(CONTENDERS[name], plans, bundle=opts.overload_bundle))
        except ReplayError as exc:
            sc.notes.append(f"{name}: {exc}")
    if sessions:
        sc.trials, stops, sessions = await ramp(bench, plans, sessions, tag="capacity")
        sc.params["stopped"] = stops
    return sc, sessions


async def overload(
    bench: Bench,
    plans: Plans,
    sessions: list[Session],
    capacity: dict[str, float],
    lowest: dict[str, float] | None = None,
) -> tuple[Scenario, list[Session]]:
    """Each contender at ``factor`` x its own capacity, or the best peer's
    (``--overload-base``, ``_overload_base``), on the bursty feed (module doc). Every
    session given is returned (to be stopped), overloaded or not."""

    opts = bench.opts
    held = {s.label: s for s in sessions if s.label != ECHO}
    base, shared, notes = _overload_base(
        list(held), capacity, lowest or {}, common=opts.overload_base == "common"
    )
    whose = (
        "each contender's max sustainable rate"
        if shared is None
        else f"the best peer's max sustainable rate ({shared:,.0f}/s)"
    )
    sc = Scenario(
        name="overload",
        title=f"Overload: the bursty feed at {', '.join(f'{f:g}x' for f in opts.overload)} "
        f"{whose}"
        + (f" with {opts.overload_bundle}" if opts.overload_bundle else "")
        + f" for {opts.overload_s:g} s",
        params={
            "factors": list(opts.overload),
            "seconds": opts.overload_s,
            "base": opts.overload_base,
            "bundle": opts.overload_bundle,
            "capacity": dict(base),
        },
        notes=notes,
    )
    for idx, factor in enumerate(opts.overload):
        for repeat, label in interleaved(list(base), opts.repeats, step=idx):
            rate = factor * base[label]
            plan = tile_plan(plans.base, max(1, round(rate * opts.overload_s)))
            pacing = Pacing(speed=max(plan.span_s, 1e-9) / opts.overload_s)
            try:
                held[label] = session = await bench.ready(held[label], plans)
            except ReplayError as exc:
                sc.notes.append(f"{label}: {exc}")
                continue
            t = await run_trial(
                session,
                plan,
                pacing,
                load=f"overload-{factor:g}x",
                repeat=repeat,
                name=f"overload-r{repeat}-{label}-{factor:g}x",
            )
            bench.report(t)
            sc.trials.append(t)
    return sc, [*held.values(), *(s for s in sessions if s.label == ECHO)]


def _overload_base(
    labels: list[str],
    capacity: dict[str, float],
    lowest: dict[str, float],
    *,
    common: bool,
) -> tuple[dict[str, float], float | None, list[str]]:
    """The rate each contender's overload factors multiply, the one rate they all share
    (None: each its own), and notes on how it was chosen.

    Own (``common`` false): its max sustainable rate; one that sustained none, the lowest
    rate it was offered (its capacity is below it), with a note; one never offered a rate
    is not overloaded. Common: the best peer's max sustainable rate for every contender,
    so all see one offered load (on a shared host the harness's and the broker's CPU grow
    with it); without a peer that sustained a rate, each contender's own, with a note."""
    notes: list[str] = []
    if common:
        peers = [capacity.get(n) or 0.0 for n in labels if n not in WEIRS]
        best = max(peers, default=0.0)
        if best:
            return dict.fromkeys(labels, best), best, notes
        notes.append("no peer sustained a rate: each contender overloaded at its own")
    base: dict[str, float] = {}
    for label in labels:
        measured, floor = capacity.get(label), lowest.get(label)
        if measured:
            base[label] = measured
        elif floor:
            base[label] = floor
            notes.append(
                f"{label}: no rate of the curve was sustained, so its capacity is below "
                f"{floor:,.0f}/s; overloaded at multiples of that rate (at least the factor)"
            )
        else:
            notes.append(f"{label}: no max sustainable rate measured, not overloaded")
    return base, None, notes


def mixed_overload_rates(
    opts: Options, overload: Scenario, capacity: dict[str, float], lowest: dict[str, float]
) -> dict[str, float] | None:
    """The rates ``mixed_overload`` multiplies: each model contender's own capacity as the
    overload took it (``_overload_base``), when the overload's model is the mixed
    scenario's; else None (capacity with another model says nothing of this one's)."""
    if (opts.overload_bundle or opts.bundle) != (opts.mixed_bundle or opts.bundle):
        return None
    base, _, _ = _overload_base(list(overload.params["capacity"]), capacity, lowest, common=False)
    return base


def with_floor(rates: dict[str, float], names: Sequence[str]) -> tuple[dict[str, float], str]:
    """``rates`` with the echo floor's: the default weir's rate (else the highest of the
    weir configurations'), when the echo is among ``names`` and has no capacity of its own
    (it has no model, so the capacity ramp leaves it out). The same offered load without a
    model is the host's and the broker's share of any miss, so the mixed-overload verdict
    can say when its target is past them. Also the note that says so ("" when unchanged)."""
    weirs = {n: r for n, r in rates.items() if n in WEIRS}
    if ECHO not in names or ECHO in rates or not weirs:
        return rates, ""
    base = "weir" if "weir" in weirs else max(weirs, key=lambda n: weirs[n])
    note = (
        f"{ECHO}: offered {base}'s rate, the host's and the broker's floor at that load "
        "(no model, no capacity of its own)"
    )
    return {**rates, ECHO: weirs[base]}, note


async def mixed(
    bench: Bench,
    plans: Plans,
    names: list[str],
    rates: dict[str, float] | None = None,
) -> Scenario:
    """Two input topics with different budgets on one service per contender (module doc):
    the feed at ``mixed_speed``, or with ``rates`` (**mixed-overload**) tiled and sped up
    to ``mixed_overload`` x each contender's rate in it (its max sustainable rate with the
    mixed bundle; a contender without one is left out, noted)."""
    from bench.peers.base import CONTENDERS

    opts = bench.opts
    budgets = opts.mixed_budgets_ms
    over = rates is not None
    model = f", model {opts.mixed_bundle}" if opts.mixed_bundle else ""
    share = f"{100 * opts.tight_share:g} % of events on the tight topic"
    topics_of = f"{budgets[0]:g} ms and {budgets[1]:g} ms input topics on one service"
    sc = Scenario(
        name="mixed-overload" if over else "mixed",
        title=(
            f"Mixed deadlines under overload: {topics_of}, the bursty feed at "
            f"{opts.mixed_overload:g}x each contender's max sustainable rate for "
            f"{opts.mixed_s:g} s, {share}{model}"
            if over
            else f"Mixed deadlines: {topics_of}, the feed at {opts.mixed_speed:g}x for "
            f"{opts.mixed_s:g} s, {share}{model}"
        ),
        params={
            "budgets_ms": list(budgets),
            "speed": None if over else opts.mixed_speed,
            "factor": opts.mixed_overload if over else None,
            "capacity": dict(rates) if rates is not None else None,
            "seconds": opts.mixed_s,
            "bundle": opts.mixed_bundle,
        },
    )
    if rates is not None:
        rates, floor_note = with_floor(rates, names)
        sc.notes += [floor_note] if floor_note else []
        left = [n for n in names if n not in rates]
        sc.notes += [f"{n}: no max sustainable rate measured, not overloaded" for n in left]
        names = [n for n in names if n in rates]
    assert bench.feed is not None
    steady = None if over else load_plan(bench.feed, seconds=opts.mixed_s * opts.mixed_speed)
    held: dict[str, Session] = {}
    for repeat, name in interleaved(names, opts.repeats):
        try:
            if name not in held:
                held[name] = await bench.fresh(
                    CONTENDERS[name], plans, budgets_ms=budgets, bundle=opts.mixed_bundle
                )
            held[name] = session = await bench.ready(held[name], plans)
        except ReplayError as exc:
            sc.notes.append(f"{name}: {exc}")
            continue
        if rates is None:
            assert steady is not None
            plan, pacing, load = steady, Pacing(speed=opts.mixed_speed), "mixed"
        else:
            rate = opts.mixed_overload * rates[name]
            plan = tile_plan(plans.base, max(1, round(rate * opts.mixed_s)))
            pacing = Pacing(speed=max(plan.span_s, 1e-9) / opts.mixed_s)
            load = f"mixed-{opts.mixed_overload:g}x"
        # Class 1 (tight) -> the first topic, class 0 (loose) -> the second.
        order = np.where(mixed_classes(plan.n, opts.tight_share) == 1, 0, 1).astype(np.int8)
        topics = session.cfg.input_topics
        t = await run_trial(
            session,
            plan,
            pacing,
            load=load,
            repeat=repeat,
            name=f"{sc.name}-r{repeat}-{name}",
            transport=ClassedTransport(session.settings.kafka, topics=topics, classes=order),
            classes=functools.partial(
                class_figures_of, classes=order, topics=topics, budgets_ms=budgets
            ),
        )
        bench.report(t)
        sc.trials.append(t)
    for session in held.values():
        session.stop()
    return sc


async def heavy(bench: Bench, plans: Plans, names: list[str]) -> Scenario:
    """The 10x replay with ``heavy_bundle`` in every contender (module doc)."""
    from bench.peers.base import CONTENDERS

    opts = bench.opts
    sc = Scenario(
        name="heavy",
        title=f"Heavy model: the 10x replay with {opts.heavy_bundle}",
        params={"bundle": opts.heavy_bundle},
    )
    held: dict[str, Session] = {}
    for repeat, name in interleaved([n for n in names if CONTENDERS[n].model], opts.repeats):
        try:
            if name not in held:
                held[name] = await bench.fresh(CONTENDERS[name], plans, bundle=opts.heavy_bundle)
            held[name] = session = await bench.ready(held[name], plans)
        except ReplayError as exc:
            sc.notes.append(f"{name}: {exc}")
            continue
        t = await run_trial(
            session,
            plans.x10,
            Pacing(speed=10.0),
            load="heavy-10x",
            repeat=repeat,
            name=f"heavy-r{repeat}-{name}",
        )
        bench.report(t)
        sc.trials.append(t)
    for session in held.values():
        session.stop()
    return sc


async def scale(bench: Bench, plans: Plans) -> tuple[Scenario, dict[str, str]]:
    """weir with N workers on N partitions, for each N in ``workers`` (module doc)."""
    from bench.peers.base import CONTENDERS

    opts = bench.opts
    sc = Scenario(
        name="scale",
        title="Scale-out: weir with N worker processes in one consumer group, N partitions",
        params={"workers": list(opts.workers)},
    )
    sessions: list[Session] = []
    stops: dict[str, str] = {}
    try:
        for n in opts.workers:
            try:
                sessions.append(await bench.fresh(CONTENDERS["weir"], plans, workers=n))
            except ReplayError as exc:
                sc.notes.append(f"weir x{n}: {exc}")
        if sessions:
            sc.trials, stops, sessions = await ramp(bench, plans, sessions, tag="scale")
    finally:
        for session in sessions:
            session.stop()
    sc.params["stopped"] = stops
    return sc, stops
