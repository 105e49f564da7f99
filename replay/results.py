"""The result of one replay run: every figure, as one msgspec document written to JSON.

``RunResult`` is what ``weir replay run`` writes with ``--out`` and what ``weir replay
report`` and ``weir replay compare`` read. Latencies are in milliseconds (floats) in the
summaries and the per-second series; each summary also keeps its whole HdrHistogram
(values in ns, 3 significant digits, 1 µs up to ``range_max_ms``: 60 s or the largest
value, whichever is more), encoded with ``hdrh``'s ``encode()``, so any percentile can be
read back later (:func:`decode_histogram`).

Results written before the range grew with the run (a fixed 1 µs .. 60 s) may count values
above 60 s in ``clamped_high``, recorded at 60 s: every figure such a value reaches is only
a lower bound (:meth:`LatencySummary.beyond_range`), and reports mark it with ``>``.

The document is versioned by ``format`` (``weir.replay.result/1``); readers refuse other
versions with a message naming the file and the version found.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
from hdrh.histogram import HdrHistogram

from replay.errors import ReplayError

RESULT_FORMAT = "weir.replay.result/1"

SUMMARY_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9, 99.99)
"""Percentiles every ``LatencySummary`` lists (all others: decode ``hdr``)."""


def pct_key(p: float) -> str:
    """The key of percentile ``p`` in ``LatencySummary.percentiles``: ``"99"``, ``"99.9"``."""
    return f"{p:g}"


class LatencySummary(msgspec.Struct, kw_only=True):
    """One latency distribution: counts, moments, percentiles (ms) and the histogram."""

    count: int
    min_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    percentiles: dict[str, float] = msgspec.field(default_factory=dict)
    """``pct_key(p)`` -> ms, for ``SUMMARY_PERCENTILES``."""
    clamped_low: int = 0
    """Values below 0 (clocks of two hosts disagreeing) recorded as 0."""
    clamped_high: int = 0
    """Values above ``range_max_ms`` recorded at it (0 since the range grows with the run;
    older results files may hold values above 60 s here)."""
    range_max_ms: float = 60_000.0
    """The top of the histogram's range: 60 s, or the largest value when that is more."""
    hdr: str = ""
    """The HdrHistogram (ns), ``hdrh`` ``encode()`` output as text; empty when count is 0."""

    def pct(self, p: float) -> float | None:
        """Percentile ``p`` in ms: from ``percentiles`` when listed, else from ``hdr``."""
        got = self.percentiles.get(pct_key(p))
        if got is not None or self.count == 0:
            return got
        return float(decode_histogram(self.hdr).get_value_at_percentile(p)) / 1e6

    def beyond_range(self, p: float | None = None) -> bool:
        """Whether percentile ``p`` (the max when None) fell on a value above the histogram's
        range, so that the figure shown is only a lower bound."""
        if self.clamped_high <= 0 or self.count == 0:
            return False
        if p is None:
            return True
        rank = max(1, math.ceil(p / 100.0 * self.count))
        return rank > self.count - self.clamped_high


class SenderStats(msgspec.Struct, kw_only=True):
    """How well the open-loop sender kept to its schedule."""

    lag: LatencySummary
    """Actual minus intended send time, per event (ms)."""
    threshold_ms: float
    behind: bool
    """True when the sender fell behind its schedule by more than ``threshold_ms``."""
    sent: int
    send_failed: int
    achieved_rate: float
    """Events sent per second of sending."""
    intended_rate: float | None
    """Events per second the schedule asked for (None at ``--speed max``)."""


class Completeness(msgspec.Struct, kw_only=True):
    """Every input's outcome, and the SLO attainment derived from them."""

    inputs: int
    """Events the broker acknowledged (the ones the service could see)."""
    decided: int
    """Inputs with at least one decision."""
    lost: int
    """Inputs with neither a decision nor a dead letter when the run ended."""
    duplicated: int
    """Decisions beyond the first for an input (an input decided 3 times counts 2)."""
    duplicated_inputs: int
    """Inputs with more than one decision."""
    dead_lettered: int
    """Inputs that went to the dead-letter topic instead (invalid input, not a miss)."""
    unmatched: int
    """Decisions (or dead letters) naming no input of this run."""
    undecodable: int
    """Messages on the decision topic that did not decode as a ``Decision``."""
    by_status: dict[str, int]
    """First decision's status -> inputs (``ok``, ``expired``, ``shed``, ``warming``, ``error``)."""
    late: int
    """``ok`` decisions flagged ``late`` or published after their deadline stamp."""
    over_budget: int
    """``ok``, not late, but end-to-end (from the intended send) over ``budget_ms``."""
    misses: int
    """SLO misses: lost + expired + shed + error + late + over_budget."""
    budget_ms: float
    attainment: float | None
    """``ok`` in budget / (inputs - warming - dead_lettered); None when that is 0."""
    attainment_definition: str


class Series(msgspec.Struct, kw_only=True):
    """Per-second series, index ``i`` covering ``[i, i+1)`` s after the replay start.

    Latency and misses are binned by the event's intended send time (the second it should
    have gone out), ``sent`` by the actual send, ``decided`` by the decision's arrival.
    """

    t_s: list[int]
    sent: list[int]
    decided: list[int]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    max_ms: list[float | None]
    raw_p99_ms: list[float | None]
    misses: dict[str, list[int]]
    """Cause -> per-second count: ``lost``, ``expired``, ``shed``, ``error``, ``late``,
    ``over_budget``."""
    batch_mean: list[float | None]
    batch_max: list[int | None]
    sender_lag_max_ms: list[float | None] = msgspec.field(default_factory=list)
    """Largest sender lag among the events due in that second."""


class Check(msgspec.Struct, kw_only=True):
    """One line of a verdict: what was required, what was measured, pass or fail."""

    name: str
    """``p99``, ``attainment``, ``lost``, ..."""
    limit: float
    actual: float | None
    passed: bool
    unit: str = ""
    op: str = "<="
    detail: str = ""
    lower_bound: bool = False
    """``actual`` is only a lower bound (values beyond the histogram's range): never a pass."""


class Verdict(msgspec.Struct, kw_only=True):
    """The SLO verdict: every check, and whether all passed."""

    slo_file: str | None
    passed: bool
    checks: list[Check]


class RunConfig(msgspec.Struct, kw_only=True):
    """What was replayed, how, and against what."""

    feed: str
    feed_rows: int
    rows_replayed: int
    feed_span_s: float
    mode: str
    """``kafka`` or ``in-process``."""
    service: str = ""
    """What answered (``weir`` model version, ``echo``, ...) when known."""
    speed: str = "1"
    """Recorded pace multiplier (``"10"``), ``"max"``, or ``"rate"`` with ``rate`` set."""
    rate: float | None = None
    co_corrected: bool = True
    """False at ``--speed max``: with no schedule, latency counts from the actual send."""
    bootstrap: str = ""
    input_topic: str = ""
    decision_topic: str = ""
    dlq_topic: str = ""
    partitions: int = 0
    encoding: str = "json"
    decision_encoding: str = "json"
    fetch_max_wait_ms: int = 0
    source_ts: str = "shift"
    prefix_s: float | None = None
    limit: int | None = None
    budget_ms: float = 0.0
    budget_source: str = ""
    quiet_s: float = 0.0
    notes: list[str] = msgspec.field(default_factory=list)


class RunResult(msgspec.Struct, kw_only=True):
    """Everything one replay run measured (see the module docstring)."""

    format: str = RESULT_FORMAT
    config: RunConfig
    started_wall_ns: int
    ended_wall_ns: int
    send_span_s: float
    """From the first to the last actual send."""
    sender: SenderStats
    completeness: Completeness
    throughput: float
    """Decisions per second over the run (first send to last decision)."""
    latency: dict[str, LatencySummary]
    """``e2e`` (decision arrival - intended send: coordinated-omission corrected),
    ``raw`` (arrival - actual send), ``source`` (arrival - the event's source time)."""
    stages: dict[str, LatencySummary]
    """``broker_in`` (ingest - send), ``queue_wait`` (dispatch - ingest), ``inference``
    (infer_done - dispatch), ``publish`` (publish - infer_done), ``broker_out``
    (arrival - publish)."""
    batch_sizes: dict[str, int]
    """Batch size -> ``ok`` decisions made in batches of that size."""
    series: Series
    verdict: Verdict | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)


STAGES: tuple[str, ...] = ("broker_in", "queue_wait", "inference", "publish", "broker_out")
LATENCIES: tuple[str, ...] = ("e2e", "raw", "source")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RunResult)


def decode_histogram(text: str) -> HdrHistogram:
    """The HdrHistogram of a summary's ``hdr`` field."""
    return HdrHistogram.decode(text.encode("ascii"))


def encode_result(result: RunResult) -> bytes:
    """The result as indented JSON."""
    return msgspec.json.format(_encoder.encode(result), indent=1)


def write_result(result: RunResult, path: str | Path) -> Path:
    """Write ``result`` as JSON to ``path`` (directories created); returns the path."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode_result(result) + b"\n")
    except OSError as exc:
        raise ReplayError(f"cannot write results {p}: {exc.strerror}") from exc
    return p


def read_result(path: str | Path) -> RunResult:
    """Read a results file written by ``write_result``; errors name the file and the field."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ReplayError(f"cannot read results {p}: {exc.strerror}") from exc
    try:
        head: Any = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ReplayError(f"results {p} is not JSON: {exc}") from exc
    fmt = head.get("format") if isinstance(head, dict) else None
    if fmt != RESULT_FORMAT:
        raise ReplayError(
            f"results {p}: format is {fmt!r}, expected {RESULT_FORMAT!r} "
            "(not a weir replay result, or from another version)"
        )
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ReplayError(f"results {p} does not match the schema: {exc}") from exc
