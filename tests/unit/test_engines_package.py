"""Model packages: descriptor, feature implementation, head; the built-ins through them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from engines.bundle import Bundle
from engines.descriptor import DESCRIPTOR_FILE, DecisionSpec, FeaturesRef, PackageDescriptor
from engines.errors import BundleError, EngineError
from engines.fake import tiny_mlp_onnx, write_tiny_bundle, write_tiny_trading_bundle
from engines.head import Head
from engines.likelihood import AnomalyLikelihood, LikelihoodSpec
from engines.package import load_package, make_features, resolve_impl, write_package
from schemas.decision import Decision, Status
from schemas.events import SensorReading
from schemas.features import FeatureSpec, Task

USER_FEATURES = textwrap.dedent(
    '''
    import numpy as np

    class LastValues:
        """The last `window` readings, oldest first; the target is the newest."""

        def __init__(self, window=3, scale=1.0):
            self.window = window
            self.scale = scale

        @property
        def n_features(self):
            return self.window

        def new_state(self):
            return _State(self.window, self.scale)

    class _State:
        def __init__(self, window, scale):
            self.ring = np.zeros(window, dtype=np.float32)
            self.count = 0
            self.scale = scale
            self.last = 0.0

        @property
        def ready(self):
            return self.count >= self.ring.shape[0]

        def update(self, event, arrival_ns):
            self.ring[:-1] = self.ring[1:]
            self.ring[-1] = self.last = event.value * self.scale
            self.count += 1

        def write_input(self, out):
            out[:] = self.ring

        def target(self):
            return self.last

    NOT_CALLABLE = 3
    '''
)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's feature module importable as ``user_feats_<n>`` (fresh per test)."""
    name = f"user_feats_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(USER_FEATURES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _descriptor(impl: str, **decision: Any) -> PackageDescriptor:
    return PackageDescriptor(
        name="user",
        version="user-1",
        features=FeaturesRef(impl=impl, settings={"window": 3}),
        decision=DecisionSpec(**({"kind": "anomaly"} | decision)),
    )


def test_a_user_package_round_trips(tmp_path: Path, user_module: str) -> None:
    """write_package + load_package give the user's features, the head and the version."""
    pkg = write_package(
        tmp_path / "p",
        _descriptor(f"{user_module}:LastValues", threshold=0.7),
        models={"fp32": tiny_mlp_onnx(3, (4,), 1)},
        n_outputs=1,
    )
    again = load_package(tmp_path / "p")
    assert again.descriptor == pkg.descriptor
    assert again.model_version == "user-1" and again.features.n_features == 3
    assert (again.head.kind, again.head.threshold, again.head.labels) == (
        "anomaly",
        0.7,
        ("OK", "ALERT"),
    )
    state = again.features.new_state()
    for v in (1.0, 2.0, 3.0):
        state.update(SensorReading(sensor_id="s", value=v), 0)
    row = np.zeros(3, dtype=np.float32)
    state.write_input(row)
    assert state.ready and row.tolist() == [1.0, 2.0, 3.0] and state.target() == 3.0


def test_the_threshold_can_be_overridden_at_load(tmp_path: Path, user_module: str) -> None:
    """load_package(threshold=...) replaces the package's own threshold."""
    write_package(
        tmp_path / "p",
        _descriptor(f"{user_module}:LastValues"),
        models={"fp32": tiny_mlp_onnx(3, (4,), 1)},
        n_outputs=1,
    )
    assert load_package(tmp_path / "p", threshold=0.9).head.threshold == 0.9


def test_a_tampered_descriptor_fails_its_hash(tmp_path: Path, user_module: str) -> None:
    """package.json is listed in metadata.json: editing it after writing is refused."""
    write_package(
        tmp_path / "p",
        _descriptor(f"{user_module}:LastValues"),
        models={"fp32": tiny_mlp_onnx(3, (4,), 1)},
        n_outputs=1,
    )
    path = tmp_path / "p" / DESCRIPTOR_FILE
    path.write_bytes(path.read_bytes().replace(b"0.5", b"0.1"))
    with pytest.raises(BundleError, match=r"hash mismatch for package\.json"):
        load_package(tmp_path / "p")


@pytest.mark.parametrize(
    ("section", "key", "where"),
    [
        (("decision",), "treshold", "$.decision"),
        (("decision", "likelihood"), "learning_perod", "$.decision.likelihood"),
    ],
)
def test_an_unknown_descriptor_key_is_refused(
    tmp_path: Path, user_module: str, section: tuple[str, ...], key: str, where: str
) -> None:
    """A misspelt key in package.json is an error naming it, not silently ignored."""
    pkg = write_package(
        tmp_path / "p",
        _descriptor(f"{user_module}:LastValues"),
        models={"fp32": tiny_mlp_onnx(3, (4,), 1)},
        n_outputs=1,
    )
    raw = json.loads((tmp_path / "p" / DESCRIPTOR_FILE).read_bytes())
    node = raw
    for part in section:
        node = node[part]
    node[key] = 0.1
    meta = pkg.bundle.metadata
    Bundle.write(
        tmp_path / "q",
        models={"fp32": pkg.bundle.model_path().read_bytes()},
        feature_spec=pkg.bundle.feature_spec,
        model_version=meta.model_version,
        task=meta.task,
        n_features=3,
        n_outputs=1,
        extra_files={DESCRIPTOR_FILE: json.dumps(raw).encode()},
    )
    with pytest.raises(BundleError) as err:
        load_package(tmp_path / "q")
    assert str(err.value) == (
        f"package {tmp_path / 'q'}: invalid package.json: Object contains unknown field "
        f"`{key}` - at `{where}`"
    )


@pytest.mark.parametrize(
    ("impl", "message"),
    [
        (
            "no_such_module_xyz:Features",
            "package: feature implementation 'no_such_module_xyz:Features': cannot import "
            "'no_such_module_xyz' (No module named 'no_such_module_xyz'); is it on PYTHONPATH?",
        ),
        (
            "schemas.features:NoSuchClass",
            "package: feature implementation 'schemas.features:NoSuchClass': "
            "'schemas.features' has no 'NoSuchClass'",
        ),
        (
            "not-registered",
            "package: feature implementation 'not-registered' is neither module:Class nor "
            "registered under the 'weir.features' entry-point group",
        ),
        (
            "schemas.features:FEATURE_SPEC_VERSION",
            "package: feature implementation 'schemas.features:FEATURE_SPEC_VERSION' is not "
            "callable",
        ),
    ],
)
def test_a_feature_implementation_that_cannot_be_found_is_named(impl: str, message: str) -> None:
    """Each way of naming a missing implementation fails with what was looked for."""
    with pytest.raises(BundleError) as err:
        resolve_impl(impl)
    assert str(err.value) == message


def test_settings_the_implementation_refuses_are_named(user_module: str) -> None:
    """A setting the class does not take fails at load, naming the implementation."""
    with pytest.raises(BundleError, match=r"refused its settings: .*unexpected keyword"):
        make_features(FeaturesRef(impl=f"{user_module}:LastValues", settings={"windw": 3}))


def test_a_struct_implementation_gets_its_settings_validated() -> None:
    """A msgspec Struct class is built with msgspec.convert: a bad value is refused."""
    ref = FeaturesRef(impl="schemas.features:FeatureSpec", settings={"task": "sensor", "window": 0})
    with pytest.raises(BundleError, match=r"refused its settings: Expected `int` >= 1"):
        make_features(ref)


def test_an_object_that_is_not_features_is_refused(user_module: str) -> None:
    """An implementation without n_features and new_state() is refused at load."""
    with pytest.raises(BundleError) as err:
        make_features(FeaturesRef(impl="engines.likelihood:LikelihoodSpec"))
    assert str(err.value) == (
        "package: feature implementation 'engines.likelihood:LikelihoodSpec' made "
        "LikelihoodSpec, which lacks an int n_features and a new_state() "
        "(engines.features.Features)"
    )


def test_a_width_mismatch_between_features_and_model_is_refused(
    tmp_path: Path, user_module: str
) -> None:
    """Features giving 3 values for a model taking 5 are refused at load."""
    desc = _descriptor(f"{user_module}:LastValues")
    raw = desc.to_json()
    Bundle.write(
        tmp_path / "p",
        models={"fp32": tiny_mlp_onnx(5, (4,), 1)},
        feature_spec={"window": 3},
        model_version="user-1",
        task="user",
        n_features=5,
        n_outputs=1,
        extra_files={DESCRIPTOR_FILE: raw},
    )
    with pytest.raises(BundleError) as err:
        load_package(tmp_path / "p")
    assert str(err.value) == (
        f"package {tmp_path / 'p'}: feature implementation '{user_module}:LastValues' gives "
        "3 features per input but the model takes 5"
    )


def test_classes_labels_must_match_the_outputs(tmp_path: Path, user_module: str) -> None:
    """A classes head with two labels over a three-output model is refused."""
    with pytest.raises(BundleError, match=r"2 labels for 3 model outputs"):
        write_package(
            tmp_path / "p",
            _descriptor(f"{user_module}:LastValues", kind="classes", labels=["A", "B"]),
            models={"fp32": tiny_mlp_onnx(3, (4,), 3)},
            n_outputs=3,
        )


def test_an_old_trading_bundle_loads_as_the_builtin_package(tmp_path: Path) -> None:
    """A bundle without package.json is read as the package its task implies."""
    write_tiny_trading_bundle(tmp_path / "t", window=4, model_version="t-1")
    pkg = load_package(tmp_path / "t")
    assert pkg.descriptor.features.impl == "schemas.features:FeatureSpec"
    assert pkg.features == FeatureSpec(task=Task.TRADING, window=4)
    assert (pkg.head.kind, pkg.head.labels) == ("classes", ("SELL", "HOLD", "BUY"))


def test_an_old_bundle_of_another_task_is_refused_with_the_fix(tmp_path: Path) -> None:
    """Without package.json only the built-in tasks can be implied; the error says what to add."""
    write_tiny_bundle(tmp_path / "b")
    with pytest.raises(BundleError) as err:
        load_package(tmp_path / "b")
    assert str(err.value) == (
        f"package {tmp_path / 'b'}: no package.json and task 'classification' is not a "
        "built-in one (trading, sensor): add a package.json (see docs/model-packages.md)"
    )


def test_the_default_bundle_loads_through_the_contract() -> None:
    """The committed default bundle is a trading package with its own package.json."""
    from engines.defaults import default_bundle_path

    pkg = load_package(default_bundle_path())
    assert DESCRIPTOR_FILE in pkg.bundle.metadata.files
    assert pkg.descriptor.features.impl == "schemas.features:FeatureSpec"
    assert isinstance(pkg.features, FeatureSpec) and pkg.head.kind == "classes"


def test_an_anomaly_head_refuses_decide_without_key_states() -> None:
    """decide() has no key likelihoods to judge with: it says to call judge()."""
    with pytest.raises(EngineError, match=r"call judge\(outputs, targets, key_states\)"):
        Head("anomaly").decide(np.zeros((1, 1), np.float32), np.zeros(1))


def test_an_unknown_decision_kind_is_refused() -> None:
    """Only classes and anomaly heads exist."""
    with pytest.raises(EngineError) as err:
        Head("regression")
    assert str(err.value) == "unknown decision kind 'regression' (kinds: anomaly, classes)"


def test_the_anomaly_head_judges_rows_in_order_per_key() -> None:
    """Two keys' rows in one batch each update their own key's likelihood once."""
    spec = LikelihoodSpec(
        averaging_window=1,
        learning_period=0,
        estimation_samples=2,
        historic_window=10,
        reestimation_period=1,
    )
    head = Head("anomaly", threshold=0.5, likelihood=spec)
    a, b = head.new_key_state(), head.new_key_state()
    assert isinstance(a, AnomalyLikelihood) and isinstance(b, AnomalyLikelihood)
    out = np.array([[0.0], [0.0], [0.0], [0.0], [0.0], [0.0]], np.float32)
    targets = np.array([0.1, 5.0, 0.1, 5.0, 9.0, 5.0])
    idx, scores, details = head.judge(out, targets, [a, b, a, b, a, b])
    assert (a.count, b.count) == (3, 3)
    assert details is not None and [d.likelihood is None for d in details] == [True] * 4 + [
        False,
        False,
    ]
    assert idx.tolist() == [0, 0, 0, 0, 1, 0] and scores[4, 0] == pytest.approx(9.0)


def test_a_decision_without_anomaly_still_decodes() -> None:
    """Decisions written before the anomaly field decode with anomaly None."""
    old = b'{"topic":"t","partition":0,"offset":1,"key":"k","model_version":"v","status":"ok"}'
    d = msgspec.json.decode(old, type=Decision)
    assert d.status is Status.OK and d.anomaly is None


def test_an_entry_point_names_the_implementation(tmp_path: Path, user_module: str) -> None:
    """A name registered under weir.features resolves to the class it points at."""
    dist = tmp_path / "user_feats-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-feats\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[weir.features]\nlast-values = {user_module}:LastValues\n"
    )
    features = make_features(FeaturesRef(impl="last-values", settings={"window": 5}))
    assert type(features).__name__ == "LastValues" and features.n_features == 5
