"""The Numenta Anomaly Benchmark's scoring rules, ported from numenta/NAB.

Sources (NAB v1.1): ``nab/sweeper.py`` (per-row sweep scores, the threshold sweep),
``nab/optimizer.py`` (one threshold per detector and profile, the best over the whole
corpus), ``nab/runner.py`` ``normalize`` (null and perfect baselines) and
``config/profiles.json`` (the three application profiles).

Rules, per series of ``n`` rows with labelled anomaly windows ``[start, end]`` (inclusive,
matched to the rows' timestamps):

- Probationary period: the first ``min(floor(0.15 n), 0.15 * 5000)`` rows are not scored
  (detections there count for nothing, a window wholly inside it is neither a hit nor a
  miss).
- A detection is a row whose anomaly score is ``>= threshold`` (scores lie in [0, 1]).
- A window scores ``-A_FN`` when it holds no detection; otherwise only its *first*
  detection counts, ``A_TP * S(p) / S(-1)`` with ``S(x) = 2 / (1 + exp(5x)) - 1`` and
  ``p = -(right - i + 1) / width`` (``-1`` at the window's first row, near 0 at its last):
  earlier is better.
- A detection outside every window is a false positive worth ``A_FP * S(p)`` (``S`` is
  negative there), ``p = (i - right) / (width - 1)`` against the closest preceding window
  (so a detection just after a window costs little), or ``-A_FP`` before the first window.
  (NAB divides by zero after a one-row window; here such FPs cost ``-A_FP``.)
- The threshold is swept over every distinct score of the corpus (the sweep starts above
  1.0, nothing detected) and the one with the highest corpus total is kept (ties: the
  higher threshold, as NAB's stable sort keeps it).
- Scores are compared as NAB stored them (``as_nab_stored``: 12 significant digits).
- Normalised score: ``100 * (raw - null) / (perfect - null)``, where ``null`` is the raw
  score of the null detector (a constant score, thresholds optimised the same way) and
  ``perfect = A_TP * windows``.

NAB's cost matrix stores magnitudes (``fpWeight: 0.11``); ``Profile`` does the same, and
the sweep applies the sign, exactly as NAB does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

PROBATION_PERCENT: Final = 0.15
PROBATION_CAP_ROWS: Final = 5000
SWEEP_START: Final = 1.1
"""The sweep's first threshold: above every valid score, so nothing is detected."""

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Profile:
    """One NAB application profile: the weights of a hit, a false alarm and a miss."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: Final = (
    Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
)


def scaled_sigmoid(position: float) -> float:
    """NAB's reward for a relative position: ``2 / (1 + exp(5x)) - 1``, and -1 past 3."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP: Final = scaled_sigmoid(-1.0)
"""The reward of a detection on a window's first row; TP rewards are scaled by it to 1."""


def probation_length(rows: int, percent: float = PROBATION_PERCENT) -> float:
    """Rows at the start of a series that are not scored (NAB's ``getProbationPeriod``)."""
    return min(math.floor(percent * rows), percent * PROBATION_CAP_ROWS)


@dataclass(frozen=True, slots=True)
class Series:
    """One labelled series: its row timestamps (file order) and anomaly windows."""

    name: str
    timestamps: I64
    windows: tuple[tuple[int, int], ...]
    """``(start, end)`` inclusive, on the same clock as ``timestamps``."""


@dataclass(slots=True)
class SweepRows:
    """Per row of one or more series: what a detection there is worth, before weights.

    ``window`` is a corpus-wide window id (-1 outside every window); ``tp`` is the scaled
    in-window reward (``S(p) / S(-1)``, to be multiplied by ``A_TP``); ``fp`` the unweighted
    false-positive value (``S(p)`` or -1, to be multiplied by ``A_FP``); ``scored`` is False
    in the probationary period.
    """

    window: I64
    tp: F64
    fp: F64
    scored: npt.NDArray[np.bool_]
    windows: int
    """Windows in the series (including any inside the probationary period)."""
    names: list[str] = field(default_factory=list)
    """Window names ``<series>|<start>``, indexed by window id."""


def sweep_rows(series: Series, *, probation_percent: float = PROBATION_PERCENT) -> SweepRows:
    """NAB's ``Sweeper.calcSweepScore`` for one series, without the anomaly scores.

    Windows are entered on the row whose timestamp equals the window's start and left on
    the row equal to its end, in file order, as NAB does (so NAB's quirks, a backward time
    step or a duplicate stamp, are scored the same way). Raises ``ValueError`` when a
    window's start or end is not the timestamp of any row.
    """
    ts = series.timestamps
    n = int(ts.shape[0])
    first: dict[int, int] = {}
    for i, t in enumerate(ts.tolist()):
        first.setdefault(t, i)
    for start, end in series.windows:
        for edge, what in ((start, "start"), (end, "end")):
            if edge not in first:
                raise ValueError(
                    f"{series.name}: window [{start}, {end}]: its {what} is not a row timestamp"
                )
    window = np.full(n, -1, dtype=np.int64)
    tp = np.zeros(n, dtype=np.float64)
    fp = np.zeros(n, dtype=np.float64)
    pending = list(series.windows)
    names: list[str] = []
    cur: tuple[int, int] | None = None
    cur_id = cur_right = 0
    cur_width = 0.0
    prev_right: int | None = None
    prev_width = 0.0
    for i, t in enumerate(ts.tolist()):
        if pending and t == pending[0][0]:
            cur = pending.pop(0)
            cur_id = len(names)
            names.append(f"{series.name}|{cur[0]}")
            cur_right = first[cur[1]]
            cur_width = float(cur_right - first[cur[0]] + 1)
        if cur is not None:
            window[i] = cur_id
            tp[i] = scaled_sigmoid(-(cur_right - i + 1) / cur_width) / MAX_TP
        elif prev_right is None:
            fp[i] = -1.0
        else:
            # NAB divides by (width - 1): a one-row window makes every later FP cost -1.
            denominator = prev_width - 1.0
            fp[i] = scaled_sigmoid(abs(prev_right - i) / denominator) if denominator else -1.0
        if cur is not None and t == cur[1]:
            prev_right, prev_width = i, cur_width
            cur = None
    scored = np.arange(n) >= probation_length(n, probation_percent)
    return SweepRows(window, tp, fp, scored, len(series.windows), names)


def concat(rows: Sequence[SweepRows]) -> SweepRows:
    """Several series' rows as one corpus, window ids renumbered to stay distinct."""
    offset = 0
    windows = []
    for r in rows:
        windows.append(np.where(r.window >= 0, r.window + offset, -1))
        offset += len(r.names)
    return SweepRows(
        window=np.concatenate(windows) if windows else np.zeros(0, np.int64),
        tp=np.concatenate([r.tp for r in rows]) if rows else np.zeros(0),
        fp=np.concatenate([r.fp for r in rows]) if rows else np.zeros(0),
        scored=np.concatenate([r.scored for r in rows]) if rows else np.zeros(0, bool),
        windows=sum(r.windows for r in rows),
        names=[name for r in rows for name in r.names],
    )


@dataclass(frozen=True, slots=True)
class ThresholdScore:
    """The raw NAB score at one threshold, with NAB's row counts (scored rows only)."""

    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    detected: int
    """Windows holding at least one scored detection."""


def check_scores(scores: F64, rows: SweepRows) -> None:
    """Raise ``ValueError`` unless ``scores`` has one finite value in [0, 1] per row."""
    if scores.shape != rows.tp.shape:
        raise ValueError(f"expected {rows.tp.shape[0]} anomaly scores, got {scores.shape[0]}")
    bad = ~((scores >= 0.0) & (scores <= 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"anomaly score {float(scores[i])!r} at row {i} is outside [0, 1]")


def sweep(scores: F64, rows: SweepRows, profile: Profile) -> list[ThresholdScore]:
    """NAB's ``Sweeper.calcScoreByThreshold``: the score at every distinct threshold.

    The first entry is the sweep start (nothing detected); each later one holds every
    scored row whose score is ``>=`` its threshold.
    """
    check_scores(scores, rows)
    keep = np.flatnonzero(rows.scored)
    order = keep[np.argsort(-scores[keep], kind="stable")]
    in_window = rows.window[keep] >= 0
    missed = len(np.unique(rows.window[keep][in_window]))
    total = -profile.fn_weight * missed
    best: dict[int, float] = {}  # detected window -> reward of its earliest detection so far
    fn = int(in_window.sum())
    tn = int(keep.shape[0]) - fn
    tp = fp = 0
    out: list[ThresholdScore] = []
    threshold = SWEEP_START
    for i in order.tolist():
        s = float(scores[i])
        if s != threshold:
            out.append(ThresholdScore(threshold, total, tp, tn, fp, fn, len(best)))
            threshold = s
        w = int(rows.window[i])
        if w < 0:
            fp += 1
            tn -= 1
            total += float(rows.fp[i]) * profile.fp_weight
            continue
        tp += 1
        fn -= 1
        value = float(rows.tp[i]) * profile.tp_weight
        old = best.get(w)
        if old is None:
            best[w] = value
            total += value + profile.fn_weight
        elif value > old:
            best[w] = value
            total += value - old
    out.append(ThresholdScore(threshold, total, tp, tn, fp, fn, len(best)))
    return out


def optimise(scores: F64, rows: SweepRows, profile: Profile) -> ThresholdScore:
    """The threshold with the highest corpus score (NAB's ``optimizeThreshold``)."""
    table = sweep(scores, rows, profile)
    return max(table, key=lambda r: r.score)  # max keeps the first: the highest threshold


def score_at(scores: F64, rows: SweepRows, profile: Profile, threshold: float) -> ThresholdScore:
    """The raw score when rows scoring ``>= threshold`` are detections (NAB's per-file score)."""
    check_scores(scores, rows)
    active = rows.scored & (scores >= threshold)
    inside = rows.window >= 0
    fp_rows = active & ~inside
    total = float((rows.fp[fp_rows] * profile.fp_weight).sum())
    detected = 0
    for w in np.unique(rows.window[rows.scored & inside]).tolist():
        hits = active & (rows.window == w)
        if hits.any():
            detected += 1
            total += float(rows.tp[hits].max()) * profile.tp_weight
        else:
            total -= profile.fn_weight
    tp = int((active & inside).sum())
    fp = int(fp_rows.sum())
    return ThresholdScore(
        threshold,
        total,
        tp=tp,
        tn=int((rows.scored & ~inside).sum()) - fp,
        fp=fp,
        fn=int((rows.scored & inside).sum()) - tp,
        detected=detected,
    )


def as_nab_stored(scores: F64) -> F64:
    """Scores as NAB's result CSVs hold them: 12 significant digits (Python 2's ``str``).

    NAB's published figures were swept over those files, so ``1 - 1e-13`` was a 1.0 there:
    a detector saturating near 1 (the windowed Gaussian) gains detections at 1.0.
    """
    return np.array([float(f"{v:.12g}") for v in scores.tolist()], dtype=np.float64)


def perfect_score(rows: SweepRows, profile: Profile) -> float:
    """What a detector hitting every window on its first row earns (NAB: ``A_TP * windows``)."""
    return profile.tp_weight * rows.windows


def normalised(raw: float, null: float, perfect: float) -> float:
    """``100 * (raw - null) / (perfect - null)``: 0 for the null detector, 100 for perfect."""
    if perfect == null:
        raise ValueError(f"perfect and null scores are equal ({perfect}): nothing to normalise")
    return 100.0 * (raw - null) / (perfect - null)
