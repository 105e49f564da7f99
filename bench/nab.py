"""NAB realKnownCause: precision/recall of a sensor bundle's alerts against labelled windows.

usage: python -m bench.nab FEED BUNDLE [--quantile Q ...]

    weir replay import nab ../shared/feeds/nab/data/realKnownCause/*.csv --out nab.parquet
    weir model build --feed nab.parquet --task sensor --split key --window 32 --out nab-bundle
    python -m bench.nab nab.parquet nab-bundle

Replays every reading through schemas.features (engines.dataset.collect: the serving
path), runs the bundle's fp32 model with ONNX Runtime, score = |last_z - forecast|,
ALERT when score > metadata.metrics["alert_threshold"] (or thresholds re-derived from
other train-score quantiles, for the table).

Definitions (per key; windows are inclusive, on the feed's time = NAB timestamp):
  event precision = alerts inside a labelled window / all alerts
  window recall   = labelled windows holding >= 1 alert / labelled windows
  event recall    = in-window readings alerted / in-window readings
Reported over the test period (last 30 % of each series, the split the model was built
with; a window counts if it overlaps it) and over the whole series.
"""

from __future__ import annotations

import sys

import msgspec
import numpy as np

from engines.bundle import Bundle
from engines.dataset import collect, split_times
from engines.export import onnx_outputs
from replay import anomaly_windows
from schemas.features import FeatureSpec


def evaluate(t, key, alert, keys, windows, lo=None):
    tp = n_alert = in_win = in_win_alert = 0
    wins = detected = 0
    for k, name in enumerate(keys):
        m = key == k
        tk, ak = t[m], alert[m]
        start = lo[name] if lo is not None else tk.min()
        sel = tk >= start
        tk, ak = tk[sel], ak[sel]
        inside = np.zeros(tk.shape[0], bool)
        for s, e in windows.get(name, []):
            if e < start:
                continue
            w = (tk >= s) & (tk <= e)
            inside |= w
            wins += 1
            detected += int(ak[w].any())
        tp += int((ak & inside).sum())
        n_alert += int(ak.sum())
        in_win += int(inside.sum())
        in_win_alert += int((ak & inside).sum())
    return {
        "alerts": n_alert,
        "event_precision": tp / n_alert if n_alert else float("nan"),
        "windows": wins,
        "detected_windows": detected,
        "window_recall": detected / wins if wins else float("nan"),
        "event_recall": in_win_alert / in_win if in_win else float("nan"),
    }


def main() -> None:
    feed, bundle_dir = sys.argv[1], sys.argv[2]
    bundle = Bundle.load(bundle_dir)
    spec = msgspec.convert(bundle.feature_spec, FeatureSpec)
    rows, _ = collect(feed, spec)
    cfg = bundle.metadata.data["config"]
    cut = split_times(
        rows.arrival_ns, rows.key, len(rows.keys), mode=cfg["split"], train_frac=cfg["train_frac"]
    )
    forecast = onnx_outputs(bundle.model_path("fp32").read_bytes(), rows.x)[:, 0]
    score = np.abs(rows.y - forecast)
    windows = anomaly_windows(feed)
    lo = {name: int(cut[rows.key == k][0]) for k, name in enumerate(rows.keys)}
    train = rows.arrival_ns < cut
    thr0 = bundle.metadata.metrics["alert_threshold"]
    print(
        f"bundle threshold {thr0:.3f} (train quantile {bundle.metadata.metrics['alert_quantile']})"
    )
    for q in ("bundle", 0.99, 0.995, 0.999):
        thr = thr0 if q == "bundle" else float(np.quantile(score[train], q))
        alert = score > thr
        for period, start in (("test", lo), ("all", None)):
            r = evaluate(rows.arrival_ns, rows.key, alert, rows.keys, windows, start)
            print(
                f"q={q:<6} thr={thr:6.3f} {period:<4} alerts {r['alerts']:5d}  "
                f"event precision {r['event_precision']:.3f}  windows {r['detected_windows']}/"
                f"{r['windows']} (recall {r['window_recall']:.3f})  event recall {r['event_recall']:.3f}"
            )
    # base rate: fraction of readings inside windows (precision of random alerts)
    r = evaluate(rows.arrival_ns, rows.key, np.ones_like(score, bool), rows.keys, windows, lo)
    print(f"base rate (test): {r['event_precision']:.3f} of readings lie in windows")


if __name__ == "__main__":
    main()
