"""NAB scores of weir's sensor detector and NAB's baselines, side by side.

usage: python -m bench.nab [--bundle DIR] [--root ../shared/feeds/nab] [--json OUT] [--per-file]

    weir replay import nab ../shared/feeds/nab/data/realKnownCause/*.csv --out nab.parquet
    weir model build --feed nab.parquet --task sensor --split key --window 32 \
        --train-frac 0.15 --out nab-bundle
    python -m bench.nab --bundle nab-bundle

``--train-frac 0.15`` trains on the first 15 % of each series, NAB's probationary period,
which holds no labelled window except a part of machine_temperature's first; a bundle
trained on more has seen the anomalies it is scored on.

Every CSV under ``ROOT/data`` is scored with NAB's rules (``bench.nab.scorer``): per
detector and profile, the threshold is optimised over the whole corpus, the raw score is
normalised between the null detector (0) and a perfect one (100). Scores are rounded as
NAB's result files stored them (12 significant digits), as its published figures were. Without ``--bundle``
only the baselines are scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.nab.corpus import DEFAULT_ROOT, NabFile, load
from bench.nab.detectors import Detector, WeirSensor, WeirServed, null, windowed_gaussian
from bench.nab.scorer import (
    PROFILES,
    SweepRows,
    ThresholdScore,
    as_nab_stored,
    concat,
    normalised,
    optimise,
    perfect_score,
    score_at,
    sweep_rows,
)


def run(files: list[NabFile], detectors: dict[str, Detector]) -> dict[str, dict[str, object]]:
    """Per detector and profile: threshold, raw and normalised score, windows hit, FPs,
    and per file the raw score at that threshold (NAB's ``<detector>_<profile>_scores.csv``)."""
    per_file = [sweep_rows(f.series) for f in files]
    rows: SweepRows = concat(per_file)
    bounds = np.cumsum([0] + [len(f) for f in files])
    scores = {
        name: as_nab_stored(np.concatenate([d(f) for f in files])) for name, d in detectors.items()
    }
    nulls = {p.name: optimise(scores["null"], rows, p).score for p in PROFILES}
    out: dict[str, dict[str, object]] = {}
    for name, s in scores.items():
        out[name] = {}
        for p in PROFILES:
            best: ThresholdScore = optimise(s, rows, p)
            files_at = {}
            for f, r, lo, hi in zip(files, per_file, bounds[:-1], bounds[1:], strict=True):
                t = score_at(s[lo:hi], r, p, best.threshold)
                files_at[f.name] = {"raw": t.score, "detected": t.detected, "fp_rows": t.fp}
            out[name][p.name] = {
                "threshold": best.threshold,
                "raw": best.score,
                "score": normalised(best.score, nulls[p.name], perfect_score(rows, p)),
                "detected": best.detected,
                "windows": rows.windows,
                "fp_rows": best.fp,
                "files": files_at,
            }
    return out


def file_table(results: dict[str, dict[str, object]], profile: str = "standard") -> str:
    """Per file and detector: raw score (windows detected, FP rows) at the corpus threshold."""
    names = list(results)
    first = results[names[0]][profile]
    assert isinstance(first, dict)
    head = f"{'file (' + profile + ', raw)':<44}" + "".join(f"{n[:24]:>26}" for n in names)
    lines = [head, "-" * len(head)]
    for file in first["files"]:
        cells = []
        for n in names:
            r = results[n][profile]
            assert isinstance(r, dict)
            c = r["files"][file]
            cells.append(f"{c['raw']:7.2f} ({c['detected']}, {c['fp_rows']:>3} FP)")
        lines.append(f"{file.split('/')[-1][:43]:<44}" + "".join(f"{c:>26}" for c in cells))
    return "\n".join(lines)


def table(results: dict[str, dict[str, object]]) -> str:
    """The results as a fixed-width text table, one line per detector."""
    head = f"{'detector':<26}" + "".join(f"{p.name:>22}" for p in PROFILES)
    lines = [head, "-" * len(head)]
    for name, per in results.items():
        cells = []
        for p in PROFILES:
            r = per[p.name]
            assert isinstance(r, dict)
            cells.append(
                f"{r['score']:7.1f} ({r['detected']}/{r['windows']}, {r['fp_rows']:>4} FP)"
            )
        lines.append(f"{name:<26}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def package_line(
    results: dict[str, dict[str, object]], files: list[NabFile], served: WeirServed
) -> str:
    """How the served package does at its *own* threshold (not NAB's optimised one)."""
    thr = served.package.head.threshold
    per_file = [sweep_rows(f.series) for f in files]
    rows = concat(per_file)
    s = as_nab_stored(np.concatenate([served.scores(f) for f in files]))
    nulls = {p.name: optimise(np.full(s.shape[0], 0.5), rows, p).score for p in PROFILES}
    cells = []
    for p in PROFILES:
        t = score_at(s, rows, p, thr)
        score = normalised(t.score, nulls[p.name], perfect_score(rows, p))
        cells.append(f"{p.name} {score:.1f} ({t.detected}/{rows.windows}, {t.fp} FP)")
    alerts = sum(served.alerts.values())
    return (
        f"weir_served at its package threshold (log-likelihood {thr}): "
        + ", ".join(cells)
        + f"; {alerts} ALERT decisions"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.nab", description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="NAB directory (data/, labels/)")
    ap.add_argument("--bundle", help="a weir sensor bundle (weir model build --task sensor)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--per-file", action="store_true", help="also print per-file raw scores")
    args = ap.parse_args(argv)
    files = load(args.root)
    detectors: dict[str, Detector] = {"null": null, "windowed_gaussian": windowed_gaussian}
    if args.bundle:
        weir = WeirSensor(args.bundle)
        detectors["weir_error"] = weir.error_scores
        detectors["weir_likelihood"] = weir.likelihood_scores
        detectors["weir_likelihood_serving"] = weir.serving_likelihood_scores
        detectors["weir_surprise_likelihood"] = weir.surprise_likelihood_scores
        served = WeirServed(args.bundle)
        detectors["weir_served"] = served.scores
        detectors["weir_served_nab_split"] = WeirServed(args.bundle, nab_split=True).scores
    results = run(files, detectors)
    rows = sum(len(f) for f in files)
    windows = sum(len(f.series.windows) for f in files)
    print(f"NAB: {len(files)} series, {rows:,} rows, {windows} windows under {args.root}")
    print("normalised score (windows detected, false-positive rows) at each profile's")
    print("optimised threshold; null = 0, perfect = 100")
    print(table(results))
    if args.bundle:
        print(package_line(results, files, served))
    if args.per_file:
        print()
        print(file_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
