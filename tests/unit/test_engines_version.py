"""Model versions: loading one verifies hashes and parity and warms it up; the feature
contract decides whether it may replace the version serving; profiles are adopted whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from engines.bundle import Bundle
from engines.errors import BundleError, ProfileError
from engines.fake import FakeEngine, tiny_mlp_onnx
from engines.head import Head
from engines.onnx import OnnxEngine
from engines.parity import PARITY_FILE, Array, ParitySample
from engines.profile import LatencyProfile
from engines.version import ModelVersion, contract_change, load_version
from schemas.features import FeatureSpec, Task
from service.settings import EngineSettings

WINDOW = 2


def _write(
    path: Path,
    version: str,
    *,
    window: int = WINDOW,
    parity: str = "good",
    seed: int = 0,
    **spec: Any,
) -> Path:
    """A trading bundle over ``FeatureSpec(window=window, **spec)`` with a tiny MLP and a
    parity sample whose reference is right (``good``), off by 0.5 (``bad``) or absent."""
    features = FeatureSpec(task=Task.TRADING, window=window, **spec)
    onnx = tiny_mlp_onnx(features.n_features, (16,), 3, seed=seed)
    extra: dict[str, bytes] = {}
    if parity != "none":
        rows = np.random.default_rng(1).standard_normal((8, features.n_features))
        engine = OnnxEngine(onnx, max_batch=8, observe=False)
        engine.input_buffer(8)[:] = rows
        ref = np.array(engine.infer(8), dtype=np.float32)
        engine.close()
        if parity == "bad":
            ref = ref + 0.5
        sample = ParitySample(rows=Array.of(rows), reference=Array.of(ref))
        extra[PARITY_FILE] = sample.to_json()
    Bundle.write(
        path,
        models={"fp32": onnx},
        feature_spec=msgspec.to_builtins(features),
        model_version=version,
        task="trading",
        n_features=features.n_features,
        n_outputs=3,
        labels=["SELL", "HOLD", "BUY"],
        extra_files=extra,
    )
    return path


def _choice(**kw: Any) -> EngineSettings:
    return EngineSettings(**{"kind": "onnx", "max_batch": 4, "warmup_iters": 3, **kw})


def test_a_good_package_loads_verified_and_warmed(tmp_path: Path) -> None:
    """The version string, a measured profile over the served buckets, the package's
    features and head."""
    v = load_version(_write(tmp_path / "v2", "v2"), _choice())
    assert v.version == "v2" and v.path == str(tmp_path / "v2")
    assert v.engine.buckets == (1, 2, 4)
    assert [s.samples for s in v.engine.profile.stats()] == [3, 3, 3]
    assert v.features == FeatureSpec(task=Task.TRADING, window=WINDOW)
    assert v.head.labels == ("SELL", "HOLD", "BUY")
    v.engine.close()


def test_a_tampered_file_is_refused_by_its_hash(tmp_path: Path) -> None:
    """A model file changed after the bundle was written fails its sha256."""
    path = _write(tmp_path / "v2", "v2")
    (path / "student.onnx").write_bytes(tiny_mlp_onnx(WINDOW * 10, (16,), 3, seed=9))
    with pytest.raises(BundleError) as info:
        load_version(path, _choice())
    assert str(info.value).startswith(f"bundle {path}: hash mismatch for student.onnx: ")


def test_a_package_whose_parity_fails_is_refused(tmp_path: Path) -> None:
    """Outputs off the stored reference by 0.5: the parity check names the worst excess."""
    path = _write(tmp_path / "v2", "v2", parity="bad")
    with pytest.raises(BundleError) as info:
        load_version(path, _choice())
    assert str(info.value).startswith(
        f"package {path}: parity check failed for fp32 against torch: max|diff| 0.5, "
    )


def test_require_parity_refuses_a_package_without_a_sample(tmp_path: Path) -> None:
    """With require_parity a package lacking parity_sample.json is refused; without, loaded."""
    path = _write(tmp_path / "v2", "v2", parity="none")
    with pytest.raises(BundleError) as info:
        load_version(path, _choice(), require_parity=True)
    assert str(info.value) == (f"package {path}: no parity_sample.json and require_parity is set")
    load_version(path, _choice()).engine.close()


def test_a_missing_directory_is_named() -> None:
    """A path that is not there: the bundle loader's message."""
    with pytest.raises(BundleError) as info:
        load_version("/nonexistent/v9", _choice())
    assert str(info.value) == "bundle /nonexistent/v9: not a directory"


def _mv(version: str, *, window: int = WINDOW, max_batch: int = 4, **spec: Any) -> ModelVersion:
    features = FeatureSpec(task=Task.TRADING, window=window, **spec)
    engine = FakeEngine(n_features=features.n_features, n_outputs=3, max_batch=max_batch)
    return ModelVersion(
        version=version, engine=engine, head=Head("trading", ["S", "H", "B"]), features=features
    )


def test_the_same_contract_may_replace_the_serving_version() -> None:
    """Other weights, labels or version: no contract change."""
    assert contract_change(_mv("v1"), _mv("v2")) is None


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (_mv("v2", window=3), "the model input width changes from 20 to 30 features"),
        (_mv("v2", max_batch=8), "the batch buckets change from [1, 2, 4] to [1, 2, 4, 8]"),
    ],
)
def test_a_contract_change_is_named(candidate: ModelVersion, reason: str) -> None:
    """Width and buckets: the reason names both sides."""
    assert contract_change(_mv("v1"), candidate) == reason


def test_other_feature_settings_of_the_same_width_are_a_contract_change() -> None:
    """Same width, another clip: the windows the service holds were computed differently."""
    got = contract_change(_mv("v1"), _mv("v2", clip_bps=10.0))
    assert got is not None and got.startswith("the feature implementation changes from ")


def test_another_decision_kind_is_a_contract_change() -> None:
    """classes -> anomaly would leave every key without its likelihood state."""
    v2 = _mv("v2")
    v2.head = Head("anomaly")
    assert contract_change(_mv("v1"), v2) == "the decision kind changes from classes to anomaly"


def test_a_profile_adopts_another_whole_and_refuses_other_buckets() -> None:
    """After adopt, every quantile and sample count is the other's; other buckets raise."""
    mine = LatencyProfile({1: [10] * 5, 2: [20] * 5})
    other = LatencyProfile({1: [100] * 7, 2: [200] * 7})
    before = mine.version
    mine.adopt(other)
    assert [(s.p99_ns, s.samples) for s in mine.stats()] == [(100, 7), (200, 7)]
    # A new version stamp, shared with no other profile: caches keyed on it refresh.
    assert mine.version not in (before, other.version)
    mine.observe(1, 100)  # still a working ring
    with pytest.raises(ProfileError) as info:
        mine.adopt(LatencyProfile({1: [1], 4: [1]}))
    assert str(info.value) == "cannot adopt a profile of buckets [1, 4] into one of [1, 2]"


def test_the_default_bundle_loads_as_a_version_with_its_parity_checked() -> None:
    """The committed built-in trading model goes through the same load: hashes, its stored
    parity sample re-run at fp32, warm-up; its features are the built-in FeatureSpec."""
    from engines.defaults import default_bundle_path

    v = load_version(default_bundle_path(), _choice(max_batch=8), require_parity=True)
    assert v.version == Bundle.load(default_bundle_path()).metadata.model_version
    assert v.features_ref is not None and v.features_ref.impl == "schemas.features:FeatureSpec"
    assert isinstance(v.features, FeatureSpec) and v.engine.n_features == v.features.n_features
    v.engine.close()
