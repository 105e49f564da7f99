"""Train a small forecaster on a NAB series with ``RollingLevel`` and write a weir package.

usage: python examples/sensor_package/train.py [--csv FILE] [--out DIR] [--limit N]

1. Every reading of the CSV (``timestamp,value``, NAB's format; the default is
   ``../shared/feeds/nab/data/realKnownCause/machine_temperature_system_failure.csv``) goes
   through ``RollingLevel`` exactly as weir will run it when serving: one state, updated
   once per reading; each ready reading gives an input row and its target.
2. A ridge regression on the first ``--train-frac`` of the rows (NAB's probationary
   15 %: no labelled anomaly in it) forecasts the target from the row.
3. The fitted linear map is exported to ONNX (a dynamic batch axis) and written with a
   descriptor naming ``rolling_features:RollingLevel`` as a weir model package
   (``engines.write_package``: hashes in metadata.json, checked at every load).

Serve it with ``rolling_features`` importable: ``PYTHONPATH=examples/sensor_package``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rolling_features import RollingLevel

from engines import DecisionSpec, FeaturesRef, LikelihoodSpec, PackageDescriptor, write_package
from engines.export import export_onnx
from engines.models import torch_module
from schemas.events import SensorReading

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = (
    HERE.parents[1].parent
    / "shared/feeds/nab/data/realKnownCause/machine_temperature_system_failure.csv"
)
SETTINGS = {"window": 16, "alpha": 0.01, "clip": 8.0}


def read_csv(path: Path, limit: int | None) -> tuple[list[int], list[float]]:
    """NAB rows: naive ``YYYY-MM-DD HH:MM:SS`` stamps (read as UTC ns) and values."""
    ts: list[int] = []
    values: list[float] = []
    with path.open() as f:
        for row in csv.DictReader(f):
            stamp = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            ts.append(int(stamp.timestamp()) * 10**9)
            values.append(float(row["value"]))
            if limit is not None and len(values) >= limit:
                break
    return ts, values


def rows(
    features: RollingLevel, key: str, ts: list[int], values: list[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Input rows and targets of the ready readings, through the serving code path."""
    state = features.new_state()
    x = np.zeros((len(values), features.n_features), dtype=np.float32)
    y = np.zeros(len(values))
    n = 0
    for t, v in zip(ts, values, strict=True):
        state.update(SensorReading(sensor_id=key, value=v, source_ts_ns=t), t)
        if state.ready:
            state.write_input(x[n])
            y[n] = state.target()
            n += 1
    return x[:n], y[:n]


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """Weights and bias minimising squared error plus ``lam`` times the weights' norm."""
    xm, ym = x.mean(axis=0), float(y.mean())
    xc = x - xm
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, ym - float(xm @ w)


def to_onnx(w: np.ndarray, b: float) -> bytes:
    """The linear forecaster ``x @ w + b`` as ONNX ``[batch, n] -> [batch, 1]``."""
    torch = torch_module()
    lin = torch.nn.Linear(w.shape[0], 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w[None, :], dtype=torch.float32))
        lin.bias.fill_(b)
    return export_onnx(lin, w.shape[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--out", type=Path, default=Path("build/machine-temp"))
    ap.add_argument("--train-frac", type=float, default=0.15)
    ap.add_argument("--limit", type=int, help="read the first N rows only")
    ap.add_argument("--threshold", type=float, default=0.5, help="ALERT at this log-likelihood")
    args = ap.parse_args(argv)
    features = RollingLevel(**SETTINGS)
    ts, values = read_csv(args.csv, args.limit)
    x, y = rows(features, args.csv.stem, ts, values)
    n_fit = max(1, int(len(y) * args.train_frac))
    w, b = fit_ridge(x[:n_fit], y[:n_fit], lam=1.0)
    mae = float(np.abs(x[n_fit:] @ w + b - y[n_fit:]).mean()) if len(y) > n_fit else 0.0
    model = to_onnx(w, b)
    name = args.out.name
    descriptor = PackageDescriptor(
        name=name,
        version=f"{name}-{hashlib.sha256(model).hexdigest()[:12]}",
        features=FeaturesRef(impl="rolling_features:RollingLevel", settings=SETTINGS),
        decision=DecisionSpec(
            kind="anomaly", threshold=args.threshold, likelihood=LikelihoodSpec()
        ),
    )
    pkg = write_package(
        args.out,
        descriptor,
        models={"fp32": model},
        n_outputs=1,
        metrics={"fit_rows": float(n_fit), "test_mae": mae},
        data={"csv": args.csv.name, "rows": len(values), "train_frac": args.train_frac},
    )
    print(f"wrote {pkg.bundle.path} ({pkg.model_version}): {n_fit} fit rows, test MAE {mae:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
