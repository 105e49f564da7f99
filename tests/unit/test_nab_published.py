"""bench.nab reproduces NAB's own published per-file scores on the shared realKnownCause data.

Reference: numenta/NAB ``results/windowedGaussian/windowedGaussian_standard_scores.csv`` and
``..._reward_low_FP_rate_scores.csv`` (commit de8e91a4): the windowed Gaussian detector at
its optimised threshold 1.0, per file: raw score, TP, TN, FP, FN rows. Our port of the
detector, NAB's 12-digit storage of its scores and our scorer must give the same figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.nab.corpus import load
from bench.nab.detectors import windowed_gaussian
from bench.nab.scorer import PROFILES, as_nab_stored, score_at, sweep_rows

NAB = (
    Path(
        os.environ.get("WEIR_FEEDS_DIR")
        or Path(__file__).resolve().parents[2] / ".." / "shared" / "feeds"
    )
    / "nab"
)

pytestmark = pytest.mark.skipif(
    not (NAB / "data" / "realKnownCause").is_dir(),
    reason=f"shared NAB feed not found at {NAB} (set WEIR_FEEDS_DIR)",
)

# file: (standard score, reward_low_FP_rate score, TP, TN, FP, FN), as NAB published them.
PUBLISHED = {
    "ambient_temperature_system_failure.csv": (-2.0, -2.0, 0, 5791, 0, 726),
    "cpu_utilization_asg_misconfiguration.csv": (-1.11, -1.22, 0, 15800, 1, 1499),
    "ec2_request_latency_system_failure.csv": (2.02150685678, 2.02150685678, 8, 3082, 0, 338),
    "machine_temperature_system_failure.csv": (-4.0, -4.0, 0, 19677, 0, 2268),
    "nyc_taxi.csv": (-5.0, -5.0, 0, 8535, 0, 1035),
    "rogue_agent_key_hold.csv": (-2.44, -2.88, 0, 1406, 4, 190),
    "rogue_agent_key_updown.csv": (-1.3964908955, -2.1748083231, 1, 4027, 8, 529),
}


def test_windowed_gaussian_matches_nabs_published_scores() -> None:
    """Every realKnownCause file scores what NAB's results files say, on two profiles."""
    standard, low_fp = PROFILES[0], PROFILES[1]
    files = {f.sensor + ".csv": f for f in load(NAB)}
    assert set(files) == set(PUBLISHED)
    for name, (s_std, s_fp, tp, tn, fp, fn) in PUBLISHED.items():
        f = files[name]
        rows = sweep_rows(f.series)
        scores = as_nab_stored(windowed_gaussian(f))
        got = score_at(scores, rows, standard, 1.0)
        assert (name, got.score) == (name, pytest.approx(s_std, abs=1e-10))
        assert (name, got.tp, got.tn, got.fp, got.fn) == (name, tp, tn, fp, fn)
        assert score_at(scores, rows, low_fp, 1.0).score == pytest.approx(s_fp, abs=1e-10)
