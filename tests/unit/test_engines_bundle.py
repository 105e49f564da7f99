"""Bundles: written with hashes, verified on load, pickles and strangers refused."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engines import (
    Bundle,
    BundleError,
    EngineError,
    FakeEngine,
    LatencyModel,
    load_engine,
    tiny_mlp_onnx,
    write_tiny_bundle,
)


@pytest.fixture
def make_bundle(tmp_path: Path) -> Callable[..., Bundle]:
    def make(**kw: Any) -> Bundle:
        return write_tiny_bundle(tmp_path / "b", **kw)

    return make


def _edit_metadata(bundle: Bundle, change: Callable[[dict[str, Any]], None]) -> None:
    path = bundle.path / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _refusal(path: Path) -> str:
    with pytest.raises(BundleError) as info:
        Bundle.load(path)
    return str(info.value)


def test_written_bundle_loads_with_its_metadata(make_bundle: Callable[..., Bundle]) -> None:
    """write() lists every file with its sha256 and load() returns the same metadata."""
    bundle = make_bundle(n_features=6, n_outputs=4, model_version="v7")
    meta = bundle.metadata
    assert meta.schema_version == 1
    assert (meta.model_version, meta.n_features, meta.n_outputs) == ("v7", 6, 4)
    assert meta.models == {"fp32": "student.onnx"}
    assert sorted(meta.files) == ["feature_spec.json", "student.onnx"]
    onnx_bytes = bundle.model_path().read_bytes()
    assert meta.files["student.onnx"].sha256 == hashlib.sha256(onnx_bytes).hexdigest()
    assert meta.files["student.onnx"].size_bytes == len(onnx_bytes)
    assert bundle.feature_spec == {"kind": "opaque", "n_features": 6}
    assert meta.labels == ["class_0", "class_1", "class_2", "class_3"]
    assert Bundle.load(bundle.path).metadata == meta


def test_extra_precisions_are_listed(make_bundle: Callable[..., Bundle]) -> None:
    """A second precision is written as student.<precision>.onnx and found by model_path."""
    bundle = make_bundle(extra_models={"int8": tiny_mlp_onnx(8, (16,), 3, seed=9)})
    assert bundle.model_path("int8").name == "student.int8.onnx"
    with pytest.raises(BundleError) as info:
        bundle.model_path("fp16")
    assert (
        str(info.value) == f"bundle {bundle.path}: no fp16 model; precisions are ['fp32', 'int8']"
    )


def test_tampered_model_is_refused_with_both_hashes(make_bundle: Callable[..., Bundle]) -> None:
    """A changed ONNX file fails its hash check; the message names the file and both hashes."""
    bundle = make_bundle()
    model = bundle.model_path()
    expected = bundle.metadata.files["student.onnx"].sha256
    model.write_bytes(model.read_bytes() + b"\0")
    got = hashlib.sha256(model.read_bytes()).hexdigest()
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: hash mismatch for student.onnx: "
        f"expected sha256 {expected}, got {got}"
    )


def test_missing_listed_file_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """A file listed in metadata but absent is named."""
    bundle = make_bundle()
    (bundle.path / "feature_spec.json").unlink()
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: missing file feature_spec.json listed in metadata.json"
    )


def test_missing_metadata_is_refused(tmp_path: Path) -> None:
    """A directory without metadata.json is not a bundle."""
    assert _refusal(tmp_path) == f"bundle {tmp_path}: missing metadata.json"


def test_pickle_file_in_the_bundle_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """Any .pkl file in the directory is refused, listed or not."""
    bundle = make_bundle()
    (bundle.path / "model.pkl").write_bytes(pickle.dumps({"w": 1}))
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: refusing model.pkl: pickle files are never loaded "
        "(weir loads ONNX and JSON only)"
    )


def test_listed_torch_checkpoint_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """A .pt file listed in metadata is refused before any hash is read."""
    bundle = make_bundle()

    def add_pt(meta: dict[str, Any]) -> None:
        meta["files"]["teacher.pt"] = {"sha256": "00", "size_bytes": 1}

    _edit_metadata(bundle, add_pt)
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: refusing teacher.pt: pickle files are never loaded "
        "(weir loads ONNX and JSON only)"
    )


def test_pickle_disguised_as_onnx_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """A pickle renamed .onnx (with a matching hash) is recognised by its first bytes."""
    bundle = make_bundle()
    payload = pickle.dumps(["not", "onnx"], protocol=4)
    bundle.model_path().write_bytes(payload)

    def rehash(meta: dict[str, Any]) -> None:
        meta["files"]["student.onnx"]["sha256"] = hashlib.sha256(payload).hexdigest()

    _edit_metadata(bundle, rehash)
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: refusing student.onnx: it is a pickle (protocol 4), not ONNX "
        "(weir loads ONNX and JSON only)"
    )


def test_unknown_extension_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """A file of another extension is refused, naming the allowed ones."""
    bundle = make_bundle()
    (bundle.path / "notes.txt").write_text("hello")
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: refusing notes.txt: extension .txt is not allowed "
        "(allowed: .json, .onnx)"
    )


def test_unlisted_onnx_file_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """An ONNX file that metadata does not list is refused."""
    bundle = make_bundle()
    (bundle.path / "extra.onnx").write_bytes(bundle.model_path().read_bytes())
    assert (
        _refusal(bundle.path) == f"bundle {bundle.path}: extra.onnx is not listed in metadata.json"
    )


def test_listed_path_outside_the_bundle_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """A listed file name with a directory part (e.g. ../x.onnx) is refused."""
    bundle = make_bundle()

    def escape(meta: dict[str, Any]) -> None:
        meta["files"]["../x.onnx"] = {"sha256": "00", "size_bytes": 1}

    _edit_metadata(bundle, escape)
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: listed file ../x.onnx must be a plain file name"
    )


def test_plans_directory_holds_plans_sidecars_and_caches(
    make_bundle: Callable[..., Bundle],
) -> None:
    """plans/ may hold .plan, .json and .cache files, but no pickle."""
    bundle = make_bundle()
    bundle.plans_dir.mkdir()
    for name in ("a.plan", "a.json", "timing.cache"):
        (bundle.plans_dir / name).write_bytes(b"x")
    Bundle.load(bundle.path)
    (bundle.plans_dir / "a.pkl").write_bytes(b"x")
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: refusing plans/a.pkl: pickle files are never loaded "
        "(weir loads ONNX and JSON only)"
    )


def test_unknown_metadata_fields_are_tolerated(make_bundle: Callable[..., Bundle]) -> None:
    """A newer writer's extra field does not stop an older reader."""
    bundle = make_bundle()
    _edit_metadata(bundle, lambda m: m.update(future_field={"a": 1}))
    assert Bundle.load(bundle.path).metadata.model_version == "tiny-1"


def test_newer_schema_version_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """A schema_version above this weir's is refused."""
    bundle = make_bundle()
    _edit_metadata(bundle, lambda m: m.update(schema_version=2))
    assert _refusal(bundle.path) == (
        f"bundle {bundle.path}: metadata.json schema_version 2 is newer than this weir reads (1)"
    )


def test_invalid_metadata_is_refused(make_bundle: Callable[..., Bundle]) -> None:
    """metadata.json that does not decode names the field."""
    bundle = make_bundle()
    _edit_metadata(bundle, lambda m: m.update(n_features="eight"))
    message = _refusal(bundle.path)
    assert message.startswith(f"bundle {bundle.path}: invalid metadata.json: Expected `int`")
    assert "$.n_features" in message


def test_recorded_profile_seeds_the_engine(make_bundle: Callable[..., Bundle]) -> None:
    """A profile saved in metadata comes back as the engine's profile before warm-up."""
    bundle = make_bundle()
    fake = FakeEngine(n_features=8, max_batch=8, latency=LatencyModel(base_ns=40_000))
    measured = fake.warm_up(20)
    bundle = bundle.record_profile("onnx", "fp32", "cpu", measured, {"threads": "1"})
    assert [p.engine for p in bundle.metadata.profiles] == ["onnx"]
    engine = load_engine(bundle, "onnx", max_batch=8)
    assert engine.profile.p50_ns(8) == measured.p50_ns(8)
    assert engine.profile.p99_ns(1) == measured.p99_ns(1)
    bundle = bundle.record_profile("onnx", "fp32", "cpu", measured)
    assert len(bundle.metadata.profiles) == 1


def test_stored_profile_of_another_max_batch_is_ignored(
    make_bundle: Callable[..., Bundle],
) -> None:
    """A stored profile whose buckets differ from the engine's is not used."""
    bundle = make_bundle()
    measured = FakeEngine(n_features=8, max_batch=4).warm_up(5)
    bundle = bundle.record_profile("onnx", "fp32", "cpu", measured)
    engine = load_engine(bundle, "onnx", max_batch=8)
    with pytest.raises(EngineError, match="no latency profile yet"):
        _ = engine.profile
