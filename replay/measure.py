"""Recording a replay: send times, decisions, and every figure derived from them.

The :class:`Recorder` is told, per input event (its send sequence ``seq``), when it was
meant to be sent and when it was (``sent``), where the broker put it (``bound``: topic,
partition, offset), and every decision or dead letter that came back (``decided``,
``dead_lettered``); decisions are matched to inputs by their coordinates, and ones that
arrive before their input's coordinates are known wait until they are. It never blocks and
does no I/O; :meth:`Recorder.finish` computes the figures.

Definitions (all times wall ns on the harness's clock; decision stamps on the service's):

- **e2e latency** (coordinated-omission corrected, as wrk2 does): decision arrival minus
  the event's *intended* send time, ``start + (recv_i - recv_0) / speed``. A sender that
  stalls (the broker pushed back) cannot hide the stall: every event it should have sent
  meanwhile carries the wait. **raw latency**: arrival minus the *actual* send; the two
  differ exactly when the sender fell behind. **source latency**: arrival minus the
  event's own ``source_ts_ns`` as the decision carries it.
- Latency histograms hold one value per input with a decision, from its *first*
  decision, of every status but ``warming`` (warming decisions skip the model).
- **stages** from the decision's stamps: ``broker_in`` = ingest - actual send,
  ``queue_wait`` = dispatch - ingest, ``inference`` = infer_done - dispatch, ``publish``
  = publish - infer_done, ``broker_out`` = arrival - publish. Stages across two hosts
  mix two clocks; negative values are recorded as 0 and counted (``clamped_low``).
- **sender lag** = actual - intended send, per event; the run is flagged ``behind``
  when the largest lag exceeds the threshold.
- **completeness**: *lost* = input with neither a decision nor a dead letter at the end;
  *duplicated* = decisions beyond the first per input; *late* = ``ok`` decision with the
  ``late`` flag or published after its deadline stamp; ``expired``, ``shed``, ``error``
  by the first decision's status.
- **attainment** = inputs whose first decision is ``ok``, not late and within
  ``budget_ms`` end to end (from the intended send), divided by inputs minus ``warming``
  minus dead-lettered ones. Warming decisions are excluded from both sides (no model ran:
  neither a success nor a miss); dead letters are invalid input, not a service miss.
  Lost, ``expired``, ``shed``, ``error``, late and over-budget inputs are the misses.

Histograms: HdrHistogram, values in ns, 3 significant digits, from 1 µs to 60 s or to the
largest value recorded, whichever is more: a service that answers after five minutes is
measured at five minutes, never at the top of a fixed range.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt
from hdrh.histogram import HdrHistogram

from replay.results import (
    SUMMARY_PERCENTILES,
    Completeness,
    LatencySummary,
    SenderStats,
    Series,
    pct_key,
)
from schemas.decision import Decision, Status

LOWEST_NS: Final = 1_000
HIGHEST_NS: Final = 60_000_000_000
"""The least top of a histogram's range; it reaches further when a value does."""
SIGNIFICANT_DIGITS: Final = 3
DEFAULT_LAG_THRESHOLD_MS: Final = 50.0

I64 = npt.NDArray[np.int64]
Coords = tuple[str, int, int]

_STATUS_CODE: Final = {s: i for i, s in enumerate(Status)}
_STATUSES: Final = tuple(Status)
_NONE: Final = -1
_DEAD: Final = len(_STATUSES)
_OK: Final = _STATUS_CODE[Status.OK]
_WARMING: Final = _STATUS_CODE[Status.WARMING]
MISS_CAUSES: Final = ("lost", "expired", "shed", "error", "late", "over_budget")

# The progress line's "p99 so far": log bins 5 % wide (e^(1/20)), exact histograms come at
# the end. A full HdrHistogram percentile walk takes ms of the event loop; this takes µs.
_LIVE_PER_E: Final = 20
_LIVE_BINS: Final = 768  # reaches past 2**63 ns: no int64 value is clamped


def _live_bin(ns: int) -> int:
    if ns <= LOWEST_NS:
        return 0
    return min(int(math.log(ns / LOWEST_NS) * _LIVE_PER_E), _LIVE_BINS - 1)


ATTAINMENT_DEFINITION: Final = (
    "inputs whose first decision is ok, not late, and arrived within budget_ms of the "
    "intended send time, divided by inputs minus warming minus dead-lettered"
)


def new_histogram(highest_ns: int = HIGHEST_NS) -> HdrHistogram:
    """An empty histogram of ns values, 1 µs .. ``highest_ns`` (at least 60 s), 3 digits."""
    return HdrHistogram(LOWEST_NS, max(HIGHEST_NS, highest_ns), SIGNIFICANT_DIGITS)


def histogram_of(values_ns: npt.NDArray[np.int64]) -> tuple[HdrHistogram, int]:
    """A histogram of ``values_ns`` whose range reaches the largest of them, and the count of
    values below 0 (clocks of two hosts disagreeing), recorded as 0."""
    if values_ns.size == 0:
        return new_histogram(), 0
    low = int(np.count_nonzero(values_ns < 0))
    clipped = np.maximum(values_ns, 0)
    hist = new_histogram(int(clipped.max()))
    # Buckets are at least 512 ns wide and start on multiples of 512 ns, so flooring to
    # 512 ns changes no bucket and lets one call record many equal values.
    vals, counts = np.unique(clipped >> 9 << 9, return_counts=True)
    record = hist.record_value
    for v, c in zip(vals.tolist(), counts.tolist(), strict=True):
        record(v, c)
    return hist, low


def summarize(values_ns: npt.NDArray[np.int64]) -> LatencySummary:
    """Count, min/mean/max (exact) and percentiles (from the histogram), in ms."""
    hist, low = histogram_of(values_ns)
    n = int(values_ns.size)
    if n == 0:
        return LatencySummary(count=0)
    clipped = np.maximum(values_ns, 0)
    return LatencySummary(
        count=n,
        min_ms=float(clipped.min()) / 1e6,
        mean_ms=float(clipped.mean()) / 1e6,
        max_ms=float(clipped.max()) / 1e6,
        percentiles={
            pct_key(p): hist.get_value_at_percentile(p) / 1e6 for p in SUMMARY_PERCENTILES
        },
        clamped_low=low,
        range_max_ms=float(hist.highest_trackable_value) / 1e6,
        hdr=hist.encode().decode("ascii"),
    )


class Snapshot:
    """Figures so far, for the progress line."""

    __slots__ = ("decided", "max_lag_ms", "outstanding", "p99_ms", "sent")

    def __init__(
        self, sent: int, decided: int, outstanding: int, p99_ms: float | None, max_lag_ms: float
    ) -> None:
        self.sent = sent
        self.decided = decided
        self.outstanding = outstanding
        self.p99_ms = p99_ms
        self.max_lag_ms = max_lag_ms


class Measurement:
    """What :meth:`Recorder.finish` computes (the runner adds config and verdict)."""

    __slots__ = (
        "batch_sizes",
        "completeness",
        "latency",
        "send_span_s",
        "sender",
        "series",
        "stages",
        "throughput",
    )

    def __init__(
        self,
        *,
        completeness: Completeness,
        sender: SenderStats,
        latency: dict[str, LatencySummary],
        stages: dict[str, LatencySummary],
        batch_sizes: dict[str, int],
        series: Series,
        throughput: float,
        send_span_s: float,
    ) -> None:
        self.completeness = completeness
        self.sender = sender
        self.latency = latency
        self.stages = stages
        self.batch_sizes = batch_sizes
        self.series = series
        self.throughput = throughput
        self.send_span_s = send_span_s


class Recorder:
    """Per-input send times and outcomes of one replay (see the module docstring).

    Call contract: every method is called on one thread (the event loop), never blocks and
    allocates only on growth; ``seq`` runs 0, 1, 2, ... in send order.
    """

    def __init__(self, capacity: int = 1024, *, clock: Callable[[], int] = time.time_ns) -> None:
        cap = max(1, capacity)
        self._clock = clock
        self._cap = cap
        self.intended: I64 = np.zeros(cap, np.int64)
        self.actual: I64 = np.zeros(cap, np.int64)
        self.received: I64 = np.zeros(cap, np.int64)
        self.source: I64 = np.zeros(cap, np.int64)
        self.ingest: I64 = np.zeros(cap, np.int64)
        self.dispatch: I64 = np.zeros(cap, np.int64)
        self.infer_done: I64 = np.zeros(cap, np.int64)
        self.publish: I64 = np.zeros(cap, np.int64)
        self.deadline: I64 = np.zeros(cap, np.int64)
        self.batch: I64 = np.zeros(cap, np.int64)
        self.dups: I64 = np.zeros(cap, np.int64)
        self.status = np.full(cap, _NONE, np.int8)
        self.late = np.zeros(cap, np.bool_)
        self.acked = np.zeros(cap, np.bool_)
        self.failed = np.zeros(cap, np.bool_)
        self._index: dict[Coords, int] = {}
        self._pending: dict[Coords, list[tuple[Decision | None, int]]] = {}
        self.n_sent = 0
        self.n_bound = 0
        self.n_failed = 0
        self.n_outcomes = 0
        self.undecodable = 0
        self.max_lag_ns = 0
        self.last_outcome_ns = 0
        self._live = [0] * _LIVE_BINS
        self._live_n = 0
        self.send_errors: dict[str, int] = {}

    # -- recording ----------------------------------------------------------------------

    def _grow(self, seq: int) -> None:
        cap = self._cap
        while cap <= seq:
            cap *= 2
        for name in (
            "intended",
            "actual",
            "received",
            "source",
            "ingest",
            "dispatch",
            "infer_done",
            "publish",
            "deadline",
            "batch",
            "dups",
            "late",
            "acked",
            "failed",
        ):
            old = getattr(self, name)
            new = np.zeros(cap, old.dtype)
            new[: self._cap] = old
            setattr(self, name, new)
        status = np.full(cap, _NONE, np.int8)
        status[: self._cap] = self.status
        self.status = status
        self._cap = cap

    def sent(self, seq: int, intended_ns: int, actual_ns: int) -> None:
        """Input ``seq`` was meant to go out at ``intended_ns`` and went at ``actual_ns``."""
        if seq >= self._cap:
            self._grow(seq)
        self.intended[seq] = intended_ns
        self.actual[seq] = actual_ns
        self.n_sent = max(self.n_sent, seq + 1)
        lag = actual_ns - intended_ns
        if lag > self.max_lag_ns:
            self.max_lag_ns = lag

    def bound(self, seq: int, topic: str, partition: int, offset: int) -> None:
        """Input ``seq`` is at ``(topic, partition, offset)`` (the broker acknowledged it)."""
        key = (topic, partition, offset)
        self._index[key] = seq
        self.acked[seq] = True
        self.n_bound += 1
        waiting = self._pending.pop(key, None)
        if waiting:
            for decision, recv in waiting:
                self._apply(seq, decision, recv)

    def send_failed(self, seq: int, error: BaseException) -> None:
        """Input ``seq`` was never acknowledged by the broker (``error`` says why)."""
        self.failed[seq] = True
        self.n_failed += 1
        name = type(error).__name__
        self.send_errors[name] = self.send_errors.get(name, 0) + 1

    def decided(self, decision: Decision, recv_ns: int) -> None:
        """A decision arrived at ``recv_ns``."""
        key = (decision.topic, decision.partition, decision.offset)
        seq = self._index.get(key)
        if seq is None:
            self._pending.setdefault(key, []).append((decision, recv_ns))
            return
        self._apply(seq, decision, recv_ns)

    def dead_lettered(self, topic: str, partition: int, offset: int, recv_ns: int) -> None:
        """A dead letter for input ``(topic, partition, offset)`` arrived at ``recv_ns``."""
        key = (topic, partition, offset)
        seq = self._index.get(key)
        if seq is None:
            self._pending.setdefault(key, []).append((None, recv_ns))
            return
        self._apply(seq, None, recv_ns)

    def garbled(self) -> None:
        """A message on the decision topic did not decode."""
        self.undecodable += 1

    def _apply(self, seq: int, d: Decision | None, recv: int) -> None:
        self.last_outcome_ns = self._clock()
        if self.status[seq] != _NONE:
            self.dups[seq] += 1
            return
        self.n_outcomes += 1
        self.received[seq] = recv
        if d is None:
            self.status[seq] = _DEAD
            return
        code = _STATUS_CODE[d.status]
        self.status[seq] = code
        s = d.stamps
        self.source[seq] = s.source_ts_ns or 0
        self.ingest[seq] = s.ingest_wall_ns or 0
        self.dispatch[seq] = s.dispatch_wall_ns or 0
        self.infer_done[seq] = s.infer_done_wall_ns or 0
        self.publish[seq] = s.publish_wall_ns or 0
        self.deadline[seq] = s.deadline_wall_ns or 0
        self.batch[seq] = d.batch_size
        self.late[seq] = d.late
        if code != _WARMING:
            e2e = recv - int(self.intended[seq])
            self._live[_live_bin(e2e)] += 1
            self._live_n += 1

    # -- reading ------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Inputs sent and not failed that have no outcome yet."""
        return self.n_sent - self.n_failed - self.n_outcomes

    def snapshot(self) -> Snapshot:
        """Figures so far (cheap: for a progress line a few times a second); p99 to 5 %."""
        p99 = None
        if self._live_n:
            cum = np.cumsum(self._live)
            i = int(np.searchsorted(cum, 0.99 * self._live_n))
            p99 = LOWEST_NS * math.exp((i + 1) / _LIVE_PER_E) / 1e6
        return Snapshot(self.n_sent, self.n_outcomes, self.outstanding, p99, self.max_lag_ns / 1e6)

    def stage_spans(self) -> dict[str, tuple[I64, npt.NDArray[np.bool_]]]:
        """Each stage's duration per input sent (ns, indexed by ``seq``) and where both
        of its stamps are known (module docstring: **stages**)."""
        n = self.n_sent
        actual, ingest, dispatch = self.actual[:n], self.ingest[:n], self.dispatch[:n]
        infer_done, publish, received = self.infer_done[:n], self.publish[:n], self.received[:n]
        pairs = {  # the keys are STAGES, in order
            "broker_in": (ingest, actual),
            "queue_wait": (dispatch, ingest),
            "inference": (infer_done, dispatch),
            "publish": (publish, infer_done),
            "broker_out": (received, publish),
        }
        return {
            name: (late - early, (late > 0) & (early > 0)) for name, (late, early) in pairs.items()
        }

    def finish(
        self,
        *,
        budget_ms: float,
        lag_threshold_ms: float = DEFAULT_LAG_THRESHOLD_MS,
        paced: bool = True,
    ) -> Measurement:
        """Every figure of the run (see the module docstring for the definitions)."""
        n = self.n_sent
        st = self.status[:n]
        inp = self.acked[:n]
        intended = self.intended[:n]
        actual = self.actual[:n]
        received = self.received[:n]
        dead = st == _DEAD
        decided = (st >= 0) & ~dead
        lost = inp & (st == _NONE)
        warming = st == _WARMING
        resp = decided & ~warming
        ok = st == _OK
        publish = self.publish[:n]
        deadline = self.deadline[:n]
        late = ok & (self.late[:n] | ((deadline > 0) & (publish > deadline)))
        e2e_all = received - intended
        budget_ns = int(budget_ms * 1e6)
        over = ok & ~late & (e2e_all > budget_ns)
        good = ok & ~late & ~over
        by_status = {s.value: int(np.count_nonzero(st == i)) for i, s in enumerate(_STATUSES)}
        n_inputs = int(np.count_nonzero(inp))
        denom = n_inputs - int(np.count_nonzero(warming)) - int(np.count_nonzero(dead))
        misses_mask = {
            "lost": lost,
            "expired": st == _STATUS_CODE[Status.EXPIRED],
            "shed": st == _STATUS_CODE[Status.SHED],
            "error": st == _STATUS_CODE[Status.ERROR],
            "late": late,
            "over_budget": over,
        }
        dups = self.dups[:n]
        completeness = Completeness(
            inputs=n_inputs,
            decided=int(np.count_nonzero(decided)),
            lost=int(np.count_nonzero(lost)),
            duplicated=int(dups.sum()),
            duplicated_inputs=int(np.count_nonzero(dups)),
            dead_lettered=int(np.count_nonzero(dead)),
            unmatched=sum(len(v) for v in self._pending.values()),
            undecodable=self.undecodable,
            by_status=by_status,
            late=int(np.count_nonzero(late)),
            over_budget=int(np.count_nonzero(over)),
            misses=int(sum(int(np.count_nonzero(m)) for m in misses_mask.values())),
            budget_ms=budget_ms,
            attainment=(int(np.count_nonzero(good)) / denom) if denom > 0 else None,
            attainment_definition=ATTAINMENT_DEFINITION,
        )

        source = self.source[:n]
        has_src = resp & (source > 0)
        latency = {
            "e2e": summarize(e2e_all[resp]),
            "raw": summarize((received - actual)[resp]),
            "source": summarize((received - source)[has_src]),
        }
        stages = {
            name: summarize(span[resp & known])
            for name, (span, known) in self.stage_spans().items()
        }

        sent_mask = actual > 0
        lag = (actual - intended)[sent_mask]
        lag_summary = summarize(lag)
        max_lag_ms = float(lag.max()) / 1e6 if lag.size else 0.0
        t_first = int(actual[sent_mask].min()) if lag.size else 0
        t_last = int(actual[sent_mask].max()) if lag.size else 0
        span_s = (t_last - t_first) / 1e9
        planned_s = (int(intended.max()) - int(intended.min())) / 1e9 if n else 0.0
        sender = SenderStats(
            lag=lag_summary,
            threshold_ms=lag_threshold_ms,
            behind=max_lag_ms > lag_threshold_ms,
            sent=int(np.count_nonzero(sent_mask)),
            send_failed=int(np.count_nonzero(self.failed[:n])),
            achieved_rate=(lag.size / span_s) if span_s > 0 else 0.0,
            intended_rate=(n / planned_s) if paced and planned_s > 0 else None,
        )

        batch_sizes: dict[str, int] = {}
        if np.any(ok):
            sizes, counts = np.unique(self.batch[:n][ok], return_counts=True)
            batch_sizes = {str(s): int(c) for s, c in zip(sizes, counts, strict=True)}

        got = received[decided | dead]
        last_recv = int(got.max()) if got.size else t_last
        run_s = (last_recv - t_first) / 1e9
        series = self._series(
            t0=int(intended.min()) if n else 0,
            resp=resp,
            ok=ok,
            misses=misses_mask,
            e2e=e2e_all,
            raw=received - actual,
            decided_any=decided | dead,
        )
        return Measurement(
            completeness=completeness,
            sender=sender,
            latency=latency,
            stages=stages,
            batch_sizes=batch_sizes,
            series=series,
            throughput=(int(np.count_nonzero(decided)) / run_s) if run_s > 0 else 0.0,
            send_span_s=span_s,
        )

    def _series(
        self,
        *,
        t0: int,
        resp: npt.NDArray[np.bool_],
        ok: npt.NDArray[np.bool_],
        misses: dict[str, npt.NDArray[np.bool_]],
        e2e: I64,
        raw: I64,
        decided_any: npt.NDArray[np.bool_],
    ) -> Series:
        n = self.n_sent
        if n == 0:
            return Series(
                t_s=[],
                sent=[],
                decided=[],
                p50_ms=[],
                p99_ms=[],
                max_ms=[],
                raw_p99_ms=[],
                sender_lag_max_ms=[],
                misses={c: [] for c in MISS_CAUSES},
                batch_mean=[],
                batch_max=[],
            )
        sec_int = (self.intended[:n] - t0) // 1_000_000_000
        sent_mask = self.actual[:n] > 0
        sec_act = (self.actual[:n] - t0) // 1_000_000_000
        sec_recv = (self.received[:n] - t0) // 1_000_000_000
        top = int(sec_int.max())
        if sent_mask.any():
            top = max(top, int(sec_act[sent_mask].max()))
        if decided_any.any():
            top = max(top, int(sec_recv[decided_any].max()))
        bins = top + 1
        sent = np.bincount(sec_act[sent_mask].clip(0), minlength=bins)
        decided = np.bincount(sec_recv[decided_any].clip(0), minlength=bins)
        bmean: list[float | None] = [None] * bins
        bmax: list[int | None] = [None] * bins
        p50, p99, mx = _per_second(sec_int[resp], e2e[resp], bins)
        _, rp99, _ = _per_second(sec_int[resp], raw[resp], bins)
        lag = self.actual[:n] - self.intended[:n]
        _, _, lag_max = _per_second(sec_int[sent_mask], lag[sent_mask], bins)
        if ok.any():
            secs = sec_int[ok]
            sizes = self.batch[:n][ok]
            counts = np.bincount(secs, minlength=bins)
            sums = np.bincount(secs, weights=sizes, minlength=bins)
            maxes = np.zeros(bins, np.int64)
            np.maximum.at(maxes, secs, sizes)
            for i in np.flatnonzero(counts).tolist():
                bmean[i] = float(sums[i] / counts[i])
                bmax[i] = int(maxes[i])
        miss_series = {
            cause: np.bincount(sec_int[mask], minlength=bins).tolist()
            for cause, mask in misses.items()
        }
        return Series(
            t_s=list(range(bins)),
            sent=sent.tolist(),
            decided=decided.tolist(),
            p50_ms=p50,
            p99_ms=p99,
            max_ms=mx,
            raw_p99_ms=rp99,
            sender_lag_max_ms=lag_max,
            misses=miss_series,
            batch_mean=bmean,
            batch_max=bmax,
        )


def _per_second(
    secs: I64, values: I64, bins: int
) -> tuple[list[float | None], list[float | None], list[float | None]]:
    """p50, p99 and max (ms) of ``values`` grouped by second ``secs``; None where empty."""
    p50: list[float | None] = [None] * bins
    p99: list[float | None] = [None] * bins
    mx: list[float | None] = [None] * bins
    if secs.size == 0:
        return p50, p99, mx
    order = np.argsort(secs, kind="stable")
    secs, values = secs[order], values[order]
    cuts = np.flatnonzero(np.diff(secs)) + 1
    for chunk_s, chunk_v in zip(np.split(secs, cuts), np.split(values, cuts), strict=True):
        i = int(chunk_s[0])
        q50, q99 = np.quantile(chunk_v, [0.5, 0.99], method="inverted_cdf")
        p50[i] = float(q50) / 1e6
        p99[i] = float(q99) / 1e6
        mx[i] = float(chunk_v.max()) / 1e6
    return p50, p99, mx
