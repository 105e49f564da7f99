"""The engine registry: one table of kinds, load_engine and load_model."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import engines
from engines import Bundle, EngineError, FakeEngine, load_engine, load_model, write_tiny_bundle
from engines.fake import tiny_mlp_onnx, write_tiny_trading_bundle
from engines.registry import ENGINE_CLASSES, ENGINE_KINDS, engine_class
from schemas.features import FeatureSpec, Task
from service.errors import ConfigError
from service.settings import load_settings


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    """A tiny classification bundle."""
    return write_tiny_bundle(tmp_path / "b")


def test_kinds_are_the_loadable_implementations() -> None:
    """Every kind is a class with from_bundle, and the package's lazy names are those classes."""
    assert ENGINE_KINDS == ("fake", "onnx", "tensorrt")
    assert engines.ENGINE_KINDS == ENGINE_KINDS
    assert engine_class("fake") is FakeEngine
    for kind, (module, name) in ENGINE_CLASSES.items():
        assert getattr(engines, name).__module__ == module, kind


@pytest.mark.parametrize("kind", ["torch", "gpu", ""])
def test_unknown_kind_is_refused(bundle: Bundle, kind: str) -> None:
    """A kind outside the table (torch included: it is built from a module) is refused."""
    with pytest.raises(EngineError) as info:
        load_engine(bundle, kind)
    assert str(info.value) == (
        f"unknown engine kind {kind!r}; kinds are ['fake', 'onnx', 'tensorrt']"
    )


def test_fake_kind_takes_the_bundle_shape_and_the_precision_label(bundle: Bundle) -> None:
    """load_engine(kind='fake') builds a fake with the bundle's widths, version and precision."""
    engine = load_engine(bundle, "fake", precision="int8", max_batch=4, options={"seed": 3})
    assert isinstance(engine, FakeEngine)
    info = engine.describe()
    assert (info.kind, info.precision, info.model_version) == ("fake", "int8", "tiny-1")
    assert (info.n_features, info.n_outputs, info.buckets) == (8, 3, (1, 2, 4))


def test_onnx_kind_runs_the_bundle(bundle: Bundle) -> None:
    """load_engine(kind='onnx') gives an engine that runs the bundle's model."""
    pytest.importorskip("onnxruntime")
    engine = load_engine(bundle, "onnx", max_batch=2, options={"threads": 1})
    assert engine.describe().kind == "onnx"
    assert engine.infer(2).shape == (2, 3)
    engine.close()


def test_load_model_builds_warms_and_reads_head_and_spec(tmp_path: Path) -> None:
    """load_model(settings) loads the settings' bundle, warms the engine, reads head and spec."""
    path = tmp_path / "trading"
    write_tiny_trading_bundle(path, window=4, model_version="t-1")
    settings = load_settings(
        env={
            "WEIR_ENGINE__BUNDLE": str(path),
            "WEIR_ENGINE__KIND": "fake",
            "WEIR_ENGINE__MAX_BATCH": "4",
            "WEIR_ENGINE__WARMUP_ITERS": "3",
        }
    )
    bundle, engine, head, spec = load_model(settings)
    assert bundle.path == path
    assert spec == FeatureSpec(task=Task.TRADING, window=4)
    assert engine.n_features == spec.n_features and engine.buckets == (1, 2, 4)
    assert engine.profile.buckets == (1, 2, 4)  # warmed: a profile measured from its runs
    assert (head.task, head.labels) == ("trading", ("SELL", "HOLD", "BUY"))


def test_load_model_refuses_an_unknown_kind_before_building(tmp_path: Path) -> None:
    """A settings kind outside the table fails with the registry's message."""
    path = tmp_path / "trading"
    write_tiny_trading_bundle(path, window=4, model_version="t-1")
    settings = load_settings(env={"WEIR_ENGINE__BUNDLE": str(path), "WEIR_ENGINE__KIND": "torch"})
    with pytest.raises(EngineError, match=r"^unknown engine kind 'torch'; kinds are "):
        load_model(settings)


def _sensor_bundle(path: Path) -> Path:
    spec = FeatureSpec(task=Task.SENSOR, window=4)
    Bundle.write(
        path,
        models={"fp32": tiny_mlp_onnx(spec.n_features, (8,), 1)},
        feature_spec=msgspec.to_builtins(spec),
        model_version="s-1",
        task="sensor",
        n_features=spec.n_features,
        n_outputs=1,
    )
    return path


@pytest.mark.parametrize(("override", "expected"), [(None, 0.5), ("0.8", 0.8)])
def test_load_model_takes_the_package_threshold_unless_overridden(
    tmp_path: Path, override: str | None, expected: float
) -> None:
    """[engine] alert_threshold replaces the package's anomaly threshold; unset keeps it."""
    env = {
        "WEIR_ENGINE__BUNDLE": str(_sensor_bundle(tmp_path / "s")),
        "WEIR_ENGINE__KIND": "fake",
        "WEIR_ENGINE__MAX_BATCH": "2",
        "WEIR_ENGINE__WARMUP_ITERS": "1",
    }
    if override is not None:
        env["WEIR_ENGINE__ALERT_THRESHOLD"] = override
    _, _, head, spec = load_model(load_settings(env=env))
    assert (head.kind, head.threshold) == ("anomaly", expected)
    assert spec == FeatureSpec(task=Task.SENSOR, window=4)


def test_an_alert_threshold_outside_0_1_is_refused() -> None:
    """The override is a log-likelihood: outside [0, 1] the settings fail to load."""
    with pytest.raises(ConfigError, match=r"<= 1.0 - at `\$.engine.alert_threshold`"):
        load_settings(env={"WEIR_ENGINE__ALERT_THRESHOLD": "1.5"})
