"""The model pipeline end to end on tiny feeds: train, distil, export, bundle, verify."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

pytest.importorskip("torch", reason="the model pipeline needs PyTorch (the train extra)")
pytest.importorskip("onnx", reason="export needs onnx (the train extra)")

from engines.bundle import Bundle
from engines.cli import register
from engines.descriptor import DEFAULT_THRESHOLD
from engines.export import export_onnx, finish_pruning, onnx_outputs, prune_magnitude
from engines.fitting import predict
from engines.head import Head
from engines.models import (
    deeplob_teacher,
    exported,
    gru_forecaster,
    mlp_student,
    relative_scale,
)
from engines.onnx import OnnxEngine
from engines.package import load_package
from engines.parity import PARITY_FILE, verify_bundle
from engines.train import BuildConfig, build_bundle
from schemas.events import Event, Quote, SensorReading, Trade
from schemas.features import FeatureSpec, Task
from schemas.feed import FeedWriter

T0 = 1_700_000_000_000_000_000


def tiny_config(**changes: Any) -> BuildConfig:
    """A build that takes a fraction of a second on the tiny feeds."""
    base: dict[str, Any] = {
        "teacher_epochs": 1,
        "student_epochs": 2,
        "batch_size": 64,
        "window": 8,
        "int8_margin": 1.0,
        "fp16_margin": 1.0,
    }
    return BuildConfig(**(base | changes))


def tiny_market(path: Path, n: int = 1500, seed: int = 0) -> Path:
    """One symbol whose next moves follow the quote's size imbalance (something to learn)."""
    rng = np.random.default_rng(seed)
    ticks = 10_000
    pressure = 0.0
    with FeedWriter(path) as w:
        for i in range(n):
            pressure = 0.9 * pressure + 0.3 * rng.normal()
            if rng.random() < 0.3:
                ticks += int(np.sign(pressure + 0.3 * rng.normal()))
            ev: Event
            if rng.random() < 0.75:
                imb = 1.0 / (1.0 + np.exp(-2 * pressure))
                ev = Quote(
                    symbol="TINY",
                    bid_px=(ticks - 1) / 100,
                    bid_qty=float(0.1 + 5 * imb),
                    ask_px=(ticks + 1) / 100,
                    ask_qty=float(0.1 + 5 * (1 - imb)),
                )
            else:
                ev = Trade(
                    symbol="TINY",
                    trade_id=i,
                    price=ticks / 100,
                    qty=float(rng.uniform(0.01, 1)),
                    buyer_is_maker=bool(pressure < 0),
                )
            w.write(ev, T0 + i * 1_000_000)
    return path


def tiny_sensor(path: Path, n: int = 1200) -> Path:
    """Two seasonal sensors with noise."""
    rng = np.random.default_rng(2)
    with FeedWriter(path) as w:
        for i in range(n):
            key = f"s{i % 2}"
            v = 20 + 3 * np.sin(i / 40) + rng.normal(0, 0.3)
            w.write(SensorReading(sensor_id=key, value=float(v)), T0 + i * 10**9)
    return path


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="weir")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


@pytest.fixture(scope="module")
def market_feed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_market(tmp_path_factory.mktemp("feed") / "tiny.parquet")


@pytest.fixture(scope="module")
def built(market_feed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    build_bundle(
        market_feed,
        out,
        tiny_config(),
        log=lambda _: None,
    )
    return out


def test_build_writes_a_bundle_the_service_loads(built: Path) -> None:
    """The bundle loads, its spec is a FeatureSpec and its fp32 model returns probabilities."""
    bundle = Bundle.load(built)
    meta = bundle.metadata
    spec = msgspec.convert(bundle.feature_spec, FeatureSpec)
    assert spec == FeatureSpec(task=Task.TRADING, window=8)
    assert (meta.task, meta.labels, meta.n_features, meta.n_outputs) == (
        "trading",
        ["SELL", "HOLD", "BUY"],
        80,
        3,
    )
    assert set(meta.models) == {"fp32", "int8", "fp16"}
    assert PARITY_FILE in meta.files
    for key in ("teacher_test_macro_f1", "student_test_macro_f1", "teacher_params"):
        assert key in meta.metrics
    assert meta.metrics["teacher_params"] > meta.metrics["student_params"]
    assert meta.data["dataset"]["horizon"] == 20
    assert meta.data["config"]["seed"] == 0
    assert {p.precision for p in meta.parity} == {"fp32", "int8", "fp16"}
    engine = OnnxEngine.from_bundle(bundle, max_batch=4)
    engine.input_buffer(4)[:] = np.random.default_rng(0).normal(size=(4, 80))
    out = engine.infer(4, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert Head.from_bundle(bundle).labels == ("SELL", "HOLD", "BUY")


def test_student_onnx_has_a_dynamic_batch_axis(built: Path) -> None:
    """student.onnx takes [batch, n_features] with batch symbolic."""
    import onnx

    model = onnx.load(str(built / "student.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 80
    assert model.opset_import[0].version >= 17


def test_int8_keeps_the_standardisation_and_softmax_in_float(built: Path) -> None:
    """The INT8 model reads the raw input in float (the per-window rescaling and the
    standardisation), quantizes first the standardised rows, ends with a float Softmax."""
    import onnx

    nodes = onnx.load(str(built / "student.int8.onnx")).graph.node
    assert [n.op_type for n in nodes if "input" in n.input] == ["Reshape"]
    first_q = next(n for n in nodes if n.op_type == "QuantizeLinear")
    producer = next(n for n in nodes if first_q.input[0] in n.output)
    assert producer.op_type == "Mul"
    assert any(name.endswith("inv_std") for name in producer.input)
    assert nodes[-1].op_type == "Softmax"
    assert sum(n.op_type == "QuantizeLinear" for n in nodes) >= 3


def test_verify_passes_then_fails_on_a_tampered_bundle(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """weir model verify exits 0 on the built bundle and 1 once its sample is altered."""
    assert all(c.ok for c in verify_bundle(built))
    assert _cli("model", "verify", str(built)) == 0
    assert "ok   fp32  vs torch" in capsys.readouterr().out
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in built.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    sample = json.loads((copy / PARITY_FILE).read_text())
    sample["reference"]["shape"] = [1, 1]
    (copy / PARITY_FILE).write_text(json.dumps(sample))
    assert _cli("model", "verify", str(copy)) == 1
    assert "hash mismatch for parity_sample.json" in capsys.readouterr().err


def test_build_is_reproducible(market_feed: Path, built: Path, tmp_path: Path) -> None:
    """The same feed, config and seed give byte-identical ONNX models."""
    build_bundle(
        market_feed,
        tmp_path / "again",
        tiny_config(),
        log=lambda _: None,
    )
    a, b = Bundle.load(built).metadata.files, Bundle.load(tmp_path / "again").metadata.files
    for name in ("student.onnx", "student.int8.onnx", "student.fp16.onnx", PARITY_FILE):
        assert a[name].sha256 == b[name].sha256, name


def test_cli_build_shows_progress_and_writes_teacher(
    market_feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """weir model build logs epochs and metrics, prints a JSON summary, can keep the teacher."""
    code = _cli(
        "model", "build", "--feed", str(market_feed), "--out", str(tmp_path / "b"),
        "--window", "8", "--epochs", "1", "--student-epochs", "1", "--batch-size", "128",
        "--no-int8", "--no-fp16", "--teacher-out", str(tmp_path / "t"),
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "teacher epoch 1/1" in captured.err and "student epoch 1/1" in captured.err
    assert "test: teacher macro-F1" in captured.err
    summary = json.loads(captured.out)
    assert summary["bundle"] == str(tmp_path / "b")
    assert set(Bundle.load(tmp_path / "b").metadata.models) == {"fp32"}
    assert Bundle.load(tmp_path / "t").metadata.model_version.endswith("-teacher")


def test_build_refuses_an_out_dir_with_foreign_files(market_feed: Path, tmp_path: Path) -> None:
    """--out that holds something other than bundle files is not emptied."""
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code = _cli("model", "build", "--feed", str(market_feed), "--out", str(out), "--window", "8")
    assert code == 1
    assert (out / "notes.txt").exists()


def test_sensor_build_writes_an_anomaly_package(tmp_path: Path) -> None:
    """A sensor build forecasts one value, records its train-error quantile and writes a
    package whose head judges the error's likelihood against the package's threshold."""
    feed = tiny_sensor(tmp_path / "s.parquet")
    result = build_bundle(
        feed,
        tmp_path / "sb",
        tiny_config(fp16=False, int8_margin=0.03),
        log=lambda _: None,
    )
    meta = Bundle.load(tmp_path / "sb").metadata
    assert (meta.task, meta.n_outputs, meta.labels) == ("sensor", 1, [])
    assert meta.metrics["alert_threshold"] > 0
    assert "student_test_mae" in meta.metrics
    package = load_package(tmp_path / "sb")
    assert package.descriptor.features.impl == "schemas.features:FeatureSpec"
    assert isinstance(package.features, FeatureSpec) and package.features.task is Task.SENSOR
    assert (package.head.kind, package.head.threshold) == ("anomaly", DEFAULT_THRESHOLD)
    assert all(c.ok for c in result.parity)


def test_teacher_exports_with_dynamic_batch_and_matches_torch() -> None:
    """The conv+GRU teacher and the GRU forecaster export and agree with torch at any batch."""
    mean, std = np.zeros(80, np.float32), np.ones(80, np.float32)
    x = np.random.default_rng(0).normal(size=(5, 80)).astype(np.float32)
    for model, softmax in (
        (deeplob_teacher(8, 10, mean, std, channels=8, hidden=16), True),
        (gru_forecaster(20, 4, mean, std, hidden=8), False),
    ):
        wrapped = exported(model, softmax=softmax)
        raw = export_onnx(wrapped, 80)
        for n in (1, 5):
            np.testing.assert_allclose(
                onnx_outputs(raw, x[:n]), predict(wrapped, x[:n]), atol=1e-5, rtol=1e-4
            )


def test_pruning_zeroes_weights_and_keeps_them_zero_while_tuning() -> None:
    """Masked weights stay zero through an optimizer step; finishing reports the sparsity."""
    import torch

    torch.manual_seed(0)
    student = mlp_student(20, 3, np.zeros(20, np.float32), np.ones(20, np.float32), (16,))
    prune_magnitude(student, 0.5)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    student(torch.randn(8, 20)).sum().backward()
    opt.step()
    sparsity = finish_pruning(student)
    assert sparsity == pytest.approx(0.5, abs=0.01)
    assert not any("mask" in name for name, _ in student.named_buffers())


def test_relative_scale_divides_each_column_by_its_window_mean_magnitude() -> None:
    """Listed columns are divided by the mean |value| of the window's non-zero values
    (an all-zero column stays zero); so scaling such a column changes nothing."""
    pre = relative_scale(4, 3, [0, 2])
    x = np.array([[1, 5, 0, 3, 5, 0, 0, 5, 0, 2, 5, 0]], dtype=np.float32)
    np.testing.assert_array_equal(
        predict(pre, x), np.array([[0.5, 5, 0, 1.5, 5, 0, 0, 5, 0, 1, 5, 0]], dtype=np.float32)
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 12)).astype(np.float32)
    scaled = x.copy()
    scaled[:, 0::3] *= 23.0
    np.testing.assert_allclose(predict(pre, scaled), predict(pre, x), rtol=1e-5)


def test_build_drops_and_rescales_features_inside_the_exported_models(
    market_feed: Path, tmp_path: Path
) -> None:
    """--drop-features: the student's ONNX output ignores the column; --relative-features:
    scaling the column by a symbol-like factor leaves the output unchanged; both are
    recorded in the bundle's config."""
    code = _cli(
        "model", "build", "--feed", str(market_feed), "--out", str(tmp_path / "b"),
        "--window", "8", "--epochs", "1", "--student-epochs", "1", "--batch-size", "128",
        "--no-int8", "--no-fp16", "--drop-features", "spread_bps",
        "--relative-features", "signed_log_trade",
    )  # fmt: skip
    assert code == 0
    bundle = Bundle.load(tmp_path / "b")
    config = bundle.metadata.data["config"]
    assert config["drop_features"] == ["spread_bps"]
    assert config["relative_features"] == ["signed_log_trade"]
    model = bundle.model_path().read_bytes()
    spec = FeatureSpec(task=Task.TRADING, window=8)
    x = np.random.default_rng(1).normal(size=(16, spec.n_features)).astype(np.float32)
    base = onnx_outputs(model, x)
    spread = x.copy()
    spread[:, 1 :: spec.row_width] = 1e3
    np.testing.assert_array_equal(onnx_outputs(model, spread), base)
    trade = x.copy()
    trade[:, 3 :: spec.row_width] *= 23.0
    np.testing.assert_allclose(onnx_outputs(model, trade), base, atol=1e-5)


def test_build_names_an_unknown_feature_column(
    market_feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown --relative-features column fails the build before training, naming it."""
    code = _cli(
        "model", "build", "--feed", str(market_feed), "--out", str(tmp_path / "b"),
        "--relative-features", "trade_size",
    )  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "weir model build: relative_features: unknown column(s) trade_size; known: "
        + ", ".join(FeatureSpec(task=Task.TRADING).row_names)
    )
    assert not (tmp_path / "b").exists()


def test_eval_on_the_training_feed_reproduces_the_builds_test_metric(
    market_feed: Path, built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """weir model eval --rows test labels and splits as the build did: same student
    macro-F1 and the same test rows."""
    argv = ["model", "eval", str(built), "--feed", str(market_feed)]
    assert _cli(*argv, "--train-feed", str(market_feed), "--rows", "test") == 0
    out = capsys.readouterr().out
    meta = Bundle.load(built).metadata
    test_rows = meta.data["dataset"]["test_rows"]
    assert f": {test_rows:,} rows (test)" in out.splitlines()[0]
    student = next(line for line in out.splitlines() if line.startswith("student "))
    assert student.split()[1] == f"{meta.metrics['student_test_macro_f1']:.4f}"


def test_trading_build_is_scale_free_by_default(built: Path) -> None:
    """Without --relative-features a trading build rescales the symbol-scaled columns:
    the config names them and multiplying them by 23 leaves the student's output alone."""
    bundle = Bundle.load(built)
    assert bundle.metadata.data["config"]["relative_features"] == [
        "mid_ret_bps",
        "spread_bps",
        "signed_log_trade",
        "trade_dev_bps",
        "log_gap_ms",
    ]
    spec = FeatureSpec(task=Task.TRADING, window=8)
    x = np.random.default_rng(2).normal(size=(16, spec.n_features)).astype(np.float32)
    scaled = x.copy()
    for col in (0, 1, 3, 4, 6):
        scaled[:, col :: spec.row_width] *= 23.0
    model = bundle.model_path().read_bytes()
    np.testing.assert_allclose(onnx_outputs(model, scaled), onnx_outputs(model, x), atol=1e-5)


def test_empty_relative_features_switch_the_rescaling_off(
    market_feed: Path, tmp_path: Path
) -> None:
    """--relative-features with no column: none is rescaled (the raw columns reach the model)."""
    code = _cli(
        "model", "build", "--feed", str(market_feed), "--out", str(tmp_path / "b"),
        "--window", "8", "--epochs", "1", "--student-epochs", "1", "--batch-size", "128",
        "--no-int8", "--no-fp16", "--relative-features",
    )  # fmt: skip
    assert code == 0
    bundle = Bundle.load(tmp_path / "b")
    assert bundle.metadata.data["config"]["relative_features"] == []
    spec = FeatureSpec(task=Task.TRADING, window=8)
    x = np.random.default_rng(3).normal(size=(16, spec.n_features)).astype(np.float32)
    scaled = x.copy()
    scaled[:, 3 :: spec.row_width] *= 23.0
    model = bundle.model_path().read_bytes()
    assert not np.allclose(onnx_outputs(model, scaled), onnx_outputs(model, x), atol=1e-5)
