"""NAB's scoring rules (bench.nab.scorer) on cases small enough to work out by hand.

``S(x) = 2 / (1 + exp(5x)) - 1`` equals ``tanh(-5x / 2)``, which is how the expected values
below are written: ``S(-1) = tanh(2.5) = 0.98661`` and ``S(-0.5) = tanh(1.25) = 0.84828``
are the figures NAB's own docstring gives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.nab.scorer import (
    MAX_TP,
    PROFILES,
    Profile,
    Series,
    SweepRows,
    ThresholdScore,
    concat,
    normalised,
    optimise,
    perfect_score,
    probation_length,
    scaled_sigmoid,
    score_at,
    sweep,
    sweep_rows,
)

STANDARD, LOW_FP, LOW_FN = PROFILES


def series(n: int = 20, windows: tuple[tuple[int, int], ...] = ((10, 13),)) -> Series:
    """``n`` rows stamped 0..n-1 with the given windows."""
    return Series("g/f.csv", np.arange(n, dtype=np.int64), windows)


def detections(n: int, *rows: int) -> np.ndarray:
    """Scores of 1.0 on ``rows``, 0.0 elsewhere."""
    s = np.zeros(n)
    s[list(rows)] = 1.0
    return s


def test_profiles_are_nabs() -> None:
    """The three profiles carry NAB's config/profiles.json weights."""
    names = [(p.name, p.tp_weight, p.fp_weight, p.fn_weight) for p in PROFILES]
    assert names == [
        ("standard", 1.0, 0.11, 1.0),
        ("reward_low_FP_rate", 1.0, 0.22, 1.0),
        ("reward_low_FN_rate", 1.0, 0.11, 2.0),
    ]


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (-1.0, 0.98661),
        (-0.5, 0.84828),
        (0.0, 0.0),
        (1.0, -0.98661),
        (3.0, -0.99999939),
        (3.0001, -1.0),
    ],
)
def test_scaled_sigmoid(position: float, expected: float) -> None:
    """The reward curve hits NAB's documented points and is -1 beyond 3."""
    assert scaled_sigmoid(position) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("rows", "percent", "expected"),
    [
        (100, 0.0, 0),
        (100, 1.0, 100),
        (100, 0.1, 10),
        (100, 0.15, 15),
        (5000, 0.1, 500),
        (6000, 0.1, 500),
    ],
)
def test_probation_length(rows: int, percent: float, expected: int) -> None:
    """The probationary period is floor(percent * rows), capped at percent * 5000 (NAB's cases)."""
    assert probation_length(rows, percent) == expected


def test_sweep_rows_by_hand() -> None:
    """In-window rows earn S(-(right-i+1)/width)/S(-1); rows after it S(dist/(width-1)); before, -1."""
    r = sweep_rows(series())
    assert r.window.tolist() == [-1] * 10 + [0] * 4 + [-1] * 6
    assert r.fp[:10].tolist() == [-1.0] * 10
    assert r.tp[10] == pytest.approx(1.0)  # first row: position -4/4 = -1
    assert r.tp[11] == pytest.approx(math.tanh(1.875) / math.tanh(2.5))  # -3/4
    assert r.tp[13] == pytest.approx(math.tanh(0.625) / math.tanh(2.5))  # -1/4
    assert r.fp[14] == pytest.approx(-math.tanh(5 / 6))  # 1 / (4 - 1) past the end
    assert r.fp[19] == pytest.approx(-math.tanh(5.0))  # 6 / 3 = 2
    assert r.scored.tolist() == [False] * 3 + [True] * 17  # floor(0.15 * 20) = 3
    assert r.names == ["g/f.csv|10"]
    assert r.windows == 1


def test_first_detection_in_a_window_counts_once() -> None:
    """Two detections in one window score as the earlier one alone."""
    r = sweep_rows(series())
    one = score_at(detections(20, 11), r, STANDARD, 0.5)
    two = score_at(detections(20, 11, 12), r, STANDARD, 0.5)
    assert one.score == pytest.approx(math.tanh(1.875) / math.tanh(2.5))
    assert two.score == one.score
    assert (two.detected, two.tp) == (1, 2)


def test_false_positive_costs_by_distance_from_the_previous_window() -> None:
    """A hit plus a FP before the window (-A_FP) and one just after it (A_FP * S(1/3))."""
    r = sweep_rows(series())
    got = score_at(detections(20, 5, 10, 14), r, STANDARD, 1.0)
    assert got.score == pytest.approx(1.0 - 0.11 - 0.11 * math.tanh(5 / 6))
    low_fp = score_at(detections(20, 5, 10, 14), r, LOW_FP, 1.0)
    assert low_fp.score == pytest.approx(1.0 - 0.22 - 0.22 * math.tanh(5 / 6))
    assert (got.tp, got.fp, got.fn, got.tn, got.detected) == (1, 2, 3, 11, 1)


def test_missed_window_costs_a_fn_per_profile() -> None:
    """No detection: -1 per window (standard), -2 (reward_low_FN_rate)."""
    r = sweep_rows(series(windows=((10, 13), (16, 18))))
    nothing = np.zeros(20)
    assert score_at(nothing, r, STANDARD, 0.5).score == -2.0
    assert score_at(nothing, r, LOW_FN, 0.5).score == -4.0


def test_probationary_rows_are_not_scored() -> None:
    """A detection in the first 15 % costs nothing; a window wholly inside it is not counted."""
    r = sweep_rows(series(windows=((0, 1), (10, 13))))
    got = score_at(detections(20, 2, 10), r, STANDARD, 0.5)
    assert got.score == pytest.approx(1.0)
    assert score_at(np.zeros(20), r, STANDARD, 0.5).score == -1.0
    assert r.windows == 2  # still counted for the perfect score, as NAB counts labels


def test_sweep_matches_nabs_hand_worked_case() -> None:
    """NAB's sweeper_test case: thresholds 1.1/0.5/0.3/0.2/0.0 score -10/-3/12/22/19."""
    rows = SweepRows(
        window=np.array([-1, -1, -1, 0, 0, 1, -1]),
        tp=np.array([0.0, 0.0, 0.0, 20.0, 10.0, 5.0, 0.0]),
        fp=np.array([-1000.0, -1000.0, -3.0, 0.0, 0.0, 0.0, -3.0]),
        scored=np.array([False, False, True, True, True, True, True]),
        windows=2,
    )
    scores = np.array([0.5, 0.5, 0.0, 0.2, 0.3, 0.5, 0.5])
    got = sweep(scores, rows, Profile("t", tp_weight=1.0, fp_weight=1.0, fn_weight=5.0))
    assert got == [
        ThresholdScore(1.1, -10.0, tp=0, tn=2, fp=0, fn=3, detected=0),
        ThresholdScore(0.5, 5 - 3 - 5.0, tp=1, tn=1, fp=1, fn=2, detected=1),
        ThresholdScore(0.3, 5 - 3 + 10.0, tp=2, tn=1, fp=1, fn=1, detected=2),
        ThresholdScore(0.2, 5 - 3 + 20.0, tp=3, tn=1, fp=1, fn=0, detected=2),
        ThresholdScore(0.0, 5 - 3 + 20 - 3.0, tp=3, tn=0, fp=2, fn=0, detected=2),
    ]


def test_optimise_picks_the_best_threshold_and_the_higher_one_on_ties() -> None:
    """0.9 catches the window at its start; 0.8 adds a later hit in it (a tie); 0.4 a FP."""
    r = sweep_rows(series())
    s = np.zeros(20)
    s[10], s[11], s[15] = 0.9, 0.8, 0.4
    table = sweep(s, r, STANDARD)
    assert [(t.threshold, round(t.score, 6)) for t in table] == [
        (1.1, -1.0),
        (0.9, 1.0),
        (0.8, 1.0),
        (0.4, round(1.0 - 0.11 * math.tanh(5 * 2 / 3 / 2), 6)),  # 2 rows past, width 4
        (0.0, round(table[-1].score, 6)),
    ]
    best = optimise(s, r, STANDARD)
    assert (best.threshold, best.score) == (0.9, pytest.approx(1.0))


def test_null_detector_prefers_detecting_nothing_on_a_long_series() -> None:
    """A constant score is all or nothing; with hundreds of FP rows nothing wins (-A_FN each)."""
    r = sweep_rows(series(400, ((100, 104), (250, 260))))
    for p in PROFILES:
        best = optimise(np.full(400, 0.5), r, p)
        assert (best.threshold, best.score) == (1.1, -2 * p.fn_weight)


def test_sweep_agrees_with_score_at_every_threshold() -> None:
    """Each sweep entry equals scoring the corpus at that threshold directly."""
    rng = np.random.default_rng(3)
    files = [series(40, ((10, 14), (25, 30))), series(30, ((20, 22),))]
    rows = concat([sweep_rows(f) for f in files])
    s = np.round(rng.random(70), 1)
    for p in PROFILES:
        for entry in sweep(s, rows, p)[1:]:
            direct = score_at(s, rows, p, entry.threshold)
            assert direct.score == pytest.approx(entry.score)
            assert (direct.tp, direct.tn, direct.fp, direct.fn, direct.detected) == (
                entry.tp,
                entry.tn,
                entry.fp,
                entry.fn,
                entry.detected,
            )


def test_concat_keeps_windows_apart() -> None:
    """Two series' windows keep distinct ids, and the corpus counts both."""
    rows = concat([sweep_rows(series()), sweep_rows(series())])
    assert sorted(set(rows.window.tolist())) == [-1, 0, 1]
    assert rows.windows == 2
    assert perfect_score(rows, STANDARD) == 2.0


def test_perfect_and_null_normalise_to_100_and_0() -> None:
    """A detector hitting each window's first row and nothing else scores 100; null scores 0."""
    rows = concat(
        [sweep_rows(series(400, ((100, 104), (250, 260)))), sweep_rows(series(300, ((200, 210),)))]
    )
    perfect = np.zeros(700)
    perfect[[100, 250, 600]] = 1.0
    for p in PROFILES:
        null = optimise(np.full(700, 0.5), rows, p).score
        assert null == -p.fn_weight * 3
        raw = optimise(perfect, rows, p).score
        assert raw == pytest.approx(perfect_score(rows, p))
        assert normalised(raw, null, perfect_score(rows, p)) == pytest.approx(100.0)
        assert normalised(null, null, perfect_score(rows, p)) == 0.0


def test_one_row_window_makes_later_fps_cost_the_full_weight() -> None:
    """NAB divides by (width - 1); a one-row window leaves later FPs at -1 instead of failing."""
    r = sweep_rows(series(windows=((10, 10),)))
    assert r.tp[10] == pytest.approx(1.0)
    assert r.fp[11:].tolist() == [-1.0] * 9


def test_window_edges_follow_file_order_as_nab_does() -> None:
    """With a duplicate stamp the window is entered on the first row holding its start."""
    ts = np.array([0, 1, 2, 3, 3, 4, 5, 6, 7, 8], dtype=np.int64)
    r = sweep_rows(Series("g/d.csv", ts, ((3, 5),)))
    assert r.window.tolist() == [-1, -1, -1, 0, 0, 0, 0, -1, -1, -1]
    assert r.tp[3] == pytest.approx(1.0)  # width: first index of 5 (6) - first of 3 (3) + 1


def test_window_edge_not_a_row_is_refused() -> None:
    """A window whose end matches no timestamp is named in the error."""
    with pytest.raises(
        ValueError, match=r"^g/f\.csv: window \[10, 99\]: its end is not a row timestamp$"
    ):
        sweep_rows(series(windows=((10, 99),)))


def test_scores_outside_unit_interval_are_refused() -> None:
    """A score above 1 (or NaN) would escape the sweep's start: refused with its row."""
    r = sweep_rows(series())
    s = np.zeros(20)
    s[4] = 1.5
    with pytest.raises(ValueError, match=r"^anomaly score 1\.5 at row 4 is outside \[0, 1\]$"):
        optimise(s, r, STANDARD)
    s[4] = np.nan
    with pytest.raises(ValueError, match=r"^anomaly score nan at row 4 is outside \[0, 1\]$"):
        score_at(s, r, STANDARD, 0.5)
    with pytest.raises(ValueError, match=r"^expected 20 anomaly scores, got 3$"):
        sweep(np.zeros(3), r, STANDARD)


def test_normalising_without_spread_is_refused() -> None:
    """perfect == null leaves nothing to scale by."""
    with pytest.raises(
        ValueError, match=r"^perfect and null scores are equal \(0\.0\): nothing to normalise$"
    ):
        normalised(1.0, 0.0, 0.0)


def test_max_tp_is_s_of_minus_one() -> None:
    """TP rewards are scaled so a window's first row earns exactly A_TP."""
    assert math.isclose(MAX_TP, math.tanh(2.5))
