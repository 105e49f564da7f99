"""bench.nab's corpus reader, detectors and table, on a small NAB directory written here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest

from bench.nab import __main__ as nab_main
from bench.nab.corpus import load
from bench.nab.detectors import (
    WeirSensor,
    WeirServed,
    likelihood_of,
    nab_likelihood_spec,
    null,
    windowed_gaussian,
)
from engines.bundle import Bundle
from engines.fake import tiny_mlp_onnx, write_tiny_trading_bundle
from engines.likelihood import LikelihoodSpec, log_likelihood
from schemas.events import SensorReading
from schemas.features import FeatureSpec, SensorState, Task

T0 = "2014-01-01 00:00:00"
T0_NS = 1388534400 * 10**9


def stamp(i: int) -> str:
    """The i-th 5-minute stamp after T0, NAB-style."""
    h, m = divmod(5 * i, 60)
    d, h = divmod(h, 24)
    return f"2014-01-{1 + d:02d} {h:02d}:{m:02d}:00"


def write_nab(root: Path, values: list[float], windows: list[tuple[int, int]]) -> Path:
    """A NAB directory with one series ``g/s.csv`` and its windows (row indices)."""
    (root / "data" / "g").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = ["timestamp,value"] + [f"{stamp(i)},{v}" for i, v in enumerate(values)]
    (root / "data" / "g" / "s.csv").write_text("\n".join(lines) + "\n")
    labels = {"g/s.csv": [[f"{stamp(a)}.000000", f"{stamp(b)}.000000"] for a, b in windows]}
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    return root


def test_load_reads_rows_and_windows_on_one_clock(tmp_path: Path) -> None:
    """Rows and window edges are UTC ns from the same naive stamps, so edges match rows."""
    files = load(write_nab(tmp_path, [1.0, 2.0, 3.0, 4.0], [(1, 2)]))
    [f] = files
    assert (f.name, f.sensor, len(f)) == ("g/s.csv", "s", 4)
    assert f.series.timestamps[0] == T0_NS
    assert f.series.windows == ((T0_NS + 300 * 10**9, T0_NS + 600 * 10**9),)
    assert f.values.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_load_refuses_a_directory_without_series(tmp_path: Path) -> None:
    """An empty directory names where it looked."""
    with pytest.raises(
        FileNotFoundError, match=r"^no NAB series under .*data \(expected \*/\*\.csv\)$"
    ):
        load(tmp_path)


def test_load_refuses_missing_labels(tmp_path: Path) -> None:
    """Series without the labels file name the missing file."""
    root = write_nab(tmp_path, [1.0], [])
    (root / "labels" / "combined_windows.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"^no NAB labels at .*combined_windows\.json$"):
        load(root)


def nab_windowed_gaussian(values: list[float], window: int, step: int) -> list[float]:
    """NAB's WindowedGaussianDetector loop, list by list, as the reference."""
    data: list[float] = []
    buf: list[float] = []
    mean, std = 0.0, 1.0
    out = []
    for v in values:
        score = 0.0
        if data:
            z = abs(v - mean) / std
            score = 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))
        if len(data) < window:
            data.append(v)
            mean, std = float(np.mean(data)), float(np.std(data)) or 1e-6
        else:
            buf.append(v)
            if len(buf) == step:
                data = data[step:] + buf
                buf = []
                mean, std = float(np.mean(data)), float(np.std(data)) or 1e-6
        out.append(score)
    return out


def test_windowed_gaussian_by_hand(tmp_path: Path) -> None:
    """0 first; 2 against N(0, 1e-6) is 1; 1 against N(1, 1) is 0.5; 3 against N(1, 2/3) is
    Phi(sqrt 6) = (1 + erf(sqrt 3)) / 2."""
    [f] = load(write_nab(tmp_path, [0.0, 2.0, 1.0, 3.0], []))
    got = windowed_gaussian(f)
    assert got.tolist()[:3] == [0.0, 1.0, 0.5]
    assert got[3] == pytest.approx((1.0 + math.erf(math.sqrt(3.0))) / 2.0)


def test_windowed_gaussian_matches_nabs_loop(tmp_path: Path) -> None:
    """The cumulative-sum version equals NAB's loop, window growing then sliding by steps."""
    values = np.random.default_rng(1).normal(10.0, 2.0, 200).round(3).tolist()
    [f] = load(write_nab(tmp_path, values, []))
    got = windowed_gaussian(f, window=16, step=5)
    assert got == pytest.approx(nab_windowed_gaussian(values, 16, 5), abs=1e-9)


def test_null_is_constant(tmp_path: Path) -> None:
    """The null detector scores 0.5 everywhere."""
    [f] = load(write_nab(tmp_path, [1.0, 5.0, 2.0], []))
    assert null(f).tolist() == [0.5, 0.5, 0.5]


def sensor_bundle(path: Path, window: int = 4) -> Bundle:
    """A sensor bundle whose model always forecasts 1.0 (a softmax over one output)."""
    spec = FeatureSpec(task=Task.SENSOR, window=window)
    return Bundle.write(
        path,
        models={"fp32": tiny_mlp_onnx(spec.n_features, (8,), 1)},
        feature_spec=msgspec.to_builtins(spec),
        model_version="sensor-test",
        task="sensor",
        n_features=spec.n_features,
        n_outputs=1,
        labels=["OK", "ALERT"],
    )


def test_weir_errors_go_through_the_serving_features(tmp_path: Path) -> None:
    """Errors are |last_z - forecast| from SensorState once the window is full, NaN before."""
    values = [1.0, 2.0, 4.0, 3.0, 5.0, 9.0, 2.0, 2.5]
    [f] = load(write_nab(tmp_path / "nab", values, []))
    weir = WeirSensor(sensor_bundle(tmp_path / "b").path)
    state = FeatureSpec(task=Task.SENSOR, window=4).new_state()
    assert isinstance(state, SensorState)
    expected, z = [], []
    for i, v in enumerate(values):
        ts = T0_NS + i * 300 * 10**9
        state.update(SensorReading(sensor_id="s", value=v, source_ts_ns=ts), ts)
        expected.append(abs(state.last_z - 1.0) if state.ready else math.nan)
        z.append(abs(state.last_z))
    err = weir.errors(f)
    assert np.isnan(err[:3]).all()
    assert err[3:] == pytest.approx(expected[3:], abs=1e-6)
    assert np.isnan(weir.surprise(f)[:3]).all()
    assert weir.surprise(f)[3:] == pytest.approx(z[3:])
    scores = weir.error_scores(f)
    assert scores[:3].tolist() == [0.0] * 3
    assert scores[3:] == pytest.approx(err[3:] / (1.0 + err[3:]))
    assert weir.errors(f) is err  # computed once per series


def test_weir_likelihood_scores_lie_in_unit_interval(tmp_path: Path) -> None:
    """Log-likelihoods are 0 while warming and stay in [0, 1]; a jump after a calm run stands out."""
    values = [10.0 + 0.1 * math.sin(i) for i in range(300)] + [40.0] + [10.0] * 20
    [f] = load(write_nab(tmp_path / "nab", values, []))
    weir = WeirSensor(sensor_bundle(tmp_path / "b").path)
    s = weir.likelihood_scores(f)
    assert s.shape == (321,)
    assert ((s >= 0.0) & (s <= 1.0)).all()
    assert s[:3].tolist() == [0.0] * 3
    assert int(np.argmax(s)) in range(300, 310)
    # The serving defaults need 288 + 100 scores before leaving 0.5: more than the 318 here.
    served = weir.serving_likelihood_scores(f)
    assert served.tolist() == [0.0] * 3 + [log_likelihood(0.5)] * 318


@pytest.mark.parametrize(
    ("rows", "learning", "estimation"), [(10_000, 375, 375), (1882, 141, 141), (5, 0, 1)]
)
def test_likelihood_learns_in_nabs_probationary_period(
    rows: int, learning: int, estimation: int
) -> None:
    """Learning and estimation split NAB's probationary period (min(15 %, 750 rows)) in half."""
    s = nab_likelihood_spec(rows)
    assert (s.learning_period, s.estimation_samples) == (learning, estimation)


def test_likelihood_of_skips_warming_rows() -> None:
    """NaN rows score 0 and are not fed: the likelihood starts on the first real score."""
    raw = np.array([np.nan, np.nan] + [1.0] * 6 + [9.0])
    got = likelihood_of(raw, LikelihoodSpec(learning_period=0, estimation_samples=5))
    assert got[:2].tolist() == [0.0, 0.0]
    assert got[2:7] == pytest.approx([math.log(0.5) / math.log(1e-10)] * 5)
    assert got[-1] > 0.5


def test_weir_refuses_a_trading_bundle(tmp_path: Path) -> None:
    """Only a sensor bundle forecasts readings."""
    b = write_tiny_trading_bundle(tmp_path / "t", window=4, model_version="t-1")
    with pytest.raises(ValueError, match=r"a trading bundle, expected a sensor one$"):
        WeirSensor(b.path)


def test_main_prints_the_table_for_the_baselines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a bundle the table has null (0 on every profile) and the windowed Gaussian."""
    values = [1.0] * 100 + [50.0] + [1.0] * 99
    root = write_nab(tmp_path / "nab", values, [(95, 110)])
    out_json = tmp_path / "r.json"
    assert nab_main.main(["--root", str(root), "--json", str(out_json), "--per-file"]) == 0
    text = capsys.readouterr().out
    assert "NAB: 1 series, 200 rows, 1 windows" in text
    null_line = next(line for line in text.splitlines() if line.startswith("null "))
    assert null_line.split() == ["null"] + ["0.0", "(0/1,", "0", "FP)"] * 3
    results = json.loads(out_json.read_text())
    gauss = results["windowed_gaussian"]["standard"]
    assert (gauss["detected"], gauss["windows"]) == (1, 1)
    assert gauss["score"] > 0.0
    assert text.splitlines()[-1].split()[:5] == ["s.csv", "-1.00", "(0,", "0", "FP)"]


def test_per_file_scores_add_up_to_the_corpus_score(tmp_path: Path) -> None:
    """Each profile's corpus raw score is the sum of its files' raw scores at its threshold."""
    root = tmp_path / "nab"
    write_nab(root, [1.0] * 100 + [50.0] + [1.0] * 99, [(95, 110)])
    (root / "data" / "g" / "t.csv").write_text(
        "timestamp,value\n" + "".join(f"{stamp(i)},{(i % 7) * 1.0}\n" for i in range(150))
    )
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    labels["g/t.csv"] = [[f"{stamp(80)}.000000", f"{stamp(90)}.000000"]]
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    results = nab_main.run(load(root), {"null": null, "windowed_gaussian": windowed_gaussian})
    for per in results.values():
        for r in per.values():
            assert isinstance(r, dict)
            assert sum(f["raw"] for f in r["files"].values()) == pytest.approx(r["raw"])
            assert sum(f["detected"] for f in r["files"].values()) == r["detected"]


def test_served_scores_equal_the_offline_likelihood_of_the_errors(tmp_path: Path) -> None:
    """The package's head, as served, gives what likelihood_of makes of the same errors,
    except that a key still warming its likelihood scores 0 (it cannot alert), not 0.03."""
    rng = np.random.default_rng(3)
    values = (10.0 + rng.normal(size=700)).tolist()
    values[650:660] = [40.0] * 10
    [f] = load(write_nab(tmp_path / "nab", values, []))
    path = sensor_bundle(tmp_path / "b").path
    errors = WeirSensor(path).errors(f)
    first = int(np.argmax(~np.isnan(errors)))

    def warm_zeroed(expected: np.ndarray, spec: LikelihoodSpec) -> np.ndarray:
        expected[first : first + spec.warm_scores] = 0.0
        return expected

    served = WeirServed(path)
    got = served.scores(f)
    assert got == pytest.approx(
        warm_zeroed(likelihood_of(errors, LikelihoodSpec()), LikelihoodSpec())
    )
    assert got[650:660].max() > 0.5 and served.alerts["g/s.csv"] >= 1
    split = WeirServed(path, nab_split=True).scores(f)
    spec = nab_likelihood_spec(len(values))
    assert split == pytest.approx(warm_zeroed(likelihood_of(errors), spec))


def test_served_refuses_a_classes_package(tmp_path: Path) -> None:
    """Only an anomaly package has likelihoods to score."""
    b = write_tiny_trading_bundle(tmp_path / "t", window=4, model_version="t-1")
    with pytest.raises(ValueError, match=r"a classes package, expected an anomaly one$"):
        WeirServed(b.path)


def test_main_with_a_bundle_scores_the_served_package(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--bundle adds the served rows and the score at the package's own threshold."""
    values = [1.0, 1.2] * 100 + [50.0] + [1.0] * 99
    root = write_nab(tmp_path / "nab", values, [(195, 210)])
    path = sensor_bundle(tmp_path / "b").path
    assert nab_main.main(["--root", str(root), "--bundle", str(path)]) == 0
    text = capsys.readouterr().out
    names = [line.split()[0] for line in text.splitlines() if line.startswith("weir_served")]
    assert names == ["weir_served", "weir_served_nab_split", "weir_served"]
    assert "weir_served at its package threshold (log-likelihood 0.5): standard " in text
