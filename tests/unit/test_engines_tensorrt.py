"""TensorRT plans: keying, sidecars and refusals (pure functions), and the GPU engine."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from engines import Bundle, BundleError, EngineError, write_tiny_bundle
from engines.tensorrt import (
    PlanKey,
    PlanSidecar,
    check_plan,
    plan_files,
    plan_stem,
    read_sidecar,
    timing_cache_file,
    verify_plan_bytes,
    write_plan,
)

H200 = PlanKey(gpu_name="NVIDIA H200", compute_capability="9.0", tensorrt_version="10.3.0")
A100 = PlanKey(
    gpu_name="NVIDIA A100-SXM4-80GB", compute_capability="8.0", tensorrt_version="10.0.1"
)
BUCKETS = [1, 2, 4, 8]


def _sidecar(key: PlanKey = H200, raw: bytes = b"plan-bytes", **kw: object) -> PlanSidecar:
    fields: dict[str, object] = {
        "key": key,
        "onnx_file": "student.onnx",
        "onnx_sha256": "aa" * 32,
        "precision": "fp16",
        "strongly_typed": False,
        "buckets": BUCKETS,
        "plan_sha256": hashlib.sha256(raw).hexdigest(),
    }
    fields.update(kw)
    return PlanSidecar(**fields)  # type: ignore[arg-type]


def _check(sidecar: PlanSidecar, host: PlanKey = H200, **kw: object) -> None:
    args: dict[str, object] = {
        "plan": Path("/b/plans/x.plan"),
        "host": host,
        "onnx_sha256": "aa" * 32,
        "precision": "fp16",
        "buckets": BUCKETS,
    }
    args.update(kw)
    check_plan(sidecar, **args)  # type: ignore[arg-type]


def test_plan_file_name_carries_gpu_capability_and_version() -> None:
    """The plan stem names model, precision, GPU slug, sm, TensorRT version and max batch."""
    stem = plan_stem("student.onnx", "fp16", H200, 64)
    assert stem == "student.fp16.nvidia-h200.sm90.trt10.3.0.b64"
    plan, side = plan_files(Path("/b/plans"), stem)
    assert plan == Path("/b/plans/student.fp16.nvidia-h200.sm90.trt10.3.0.b64.plan")
    assert side == Path("/b/plans/student.fp16.nvidia-h200.sm90.trt10.3.0.b64.json")
    assert timing_cache_file(Path("/p"), A100).name == (
        "timing.nvidia-a100-sxm4-80gb.sm80.trt10.0.1.cache"
    )


def test_plan_from_another_gpu_is_refused_naming_both_keys() -> None:
    """A sidecar keyed to another GPU/TensorRT is refused with both keys in the message."""
    with pytest.raises(BundleError) as info:
        _check(_sidecar(A100))
    assert str(info.value) == (
        "plan /b/plans/x.plan: built for NVIDIA A100-SXM4-80GB (sm_80), TensorRT 10.0.1, "
        "this host is NVIDIA H200 (sm_90), TensorRT 10.3.0; rebuild the plan on this host"
    )


def test_plan_from_another_tensorrt_version_is_refused() -> None:
    """Same GPU, other TensorRT version: refused too."""
    other = PlanKey(gpu_name="NVIDIA H200", compute_capability="9.0", tensorrt_version="10.4.0")
    with pytest.raises(BundleError, match=r"built for NVIDIA H200 \(sm_90\), TensorRT 10\.4\.0,"):
        _check(_sidecar(other))


def test_plan_from_another_model_is_refused() -> None:
    """A plan built from other ONNX bytes names both model hashes."""
    with pytest.raises(BundleError) as info:
        _check(_sidecar(), onnx_sha256="bb" * 32)
    assert str(info.value) == (
        f"plan /b/plans/x.plan: built from student.onnx sha256 {'aa' * 32}, "
        f"the bundle's model is sha256 {'bb' * 32}; rebuild the plan"
    )


def test_plan_for_other_buckets_or_precision_is_refused() -> None:
    """Bucket set and precision must match too."""
    with pytest.raises(BundleError, match=r"built for buckets \[1, 2, 4, 8\], asked for \[1, 2\]"):
        _check(_sidecar(), buckets=[1, 2])
    with pytest.raises(BundleError, match="built for precision fp16, asked for int8"):
        _check(_sidecar(), precision="int8")


def test_matching_plan_passes() -> None:
    """A sidecar equal to this host and model raises nothing."""
    _check(_sidecar())


def test_sidecar_round_trips_and_plan_hash_is_checked(tmp_path: Path) -> None:
    """write_plan writes plan + sidecar; a changed plan fails its sha256 check."""
    raw = b"\x01serialized-engine"
    sidecar = _sidecar(raw=raw)
    plan = write_plan(tmp_path, "s", raw, sidecar)
    assert read_sidecar(tmp_path / "s.json") == sidecar
    assert verify_plan_bytes(plan, sidecar) == raw
    plan.write_bytes(raw + b"!")
    got = hashlib.sha256(raw + b"!").hexdigest()
    with pytest.raises(BundleError) as info:
        verify_plan_bytes(plan, sidecar)
    assert str(info.value) == (
        f"plan {plan}: hash mismatch: expected sha256 {sidecar.plan_sha256}, got {got}"
    )


def test_missing_or_bad_sidecar_is_refused(tmp_path: Path) -> None:
    """A plan without a readable sidecar is never used."""
    with pytest.raises(BundleError, match=r"^plan sidecar .*/none\.json is missing$"):
        read_sidecar(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"key": 3}')
    with pytest.raises(BundleError, match=r"^plan sidecar .*/bad\.json is invalid: "):
        read_sidecar(tmp_path / "bad.json")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here"
)
def test_without_tensorrt_the_engine_says_what_to_install(tmp_path: Path) -> None:
    """Loading a TensorRT engine without tensorrt raises EngineError naming the extra."""
    from engines import load_engine

    bundle = write_tiny_bundle(tmp_path / "b")
    with pytest.raises(EngineError) as info:
        load_engine(bundle, "tensorrt")
    assert str(info.value) == "tensorrt engine needs the tensorrt package (pip install 'weir[gpu]')"


def _gpu_ready() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cuda") is None:
        return False
    try:
        from engines.tensorrt import host_plan_key

        host_plan_key()
    except EngineError:
        return False
    return True


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_ready(), reason="needs TensorRT, cuda-python and an NVIDIA GPU")
def test_plan_is_built_once_then_reused(tmp_path: Path) -> None:
    """The first load builds and keys a plan with a sidecar; the second reuses it."""
    from engines.tensorrt import TensorRTEngine, host_plan_key

    bundle = write_tiny_bundle(tmp_path / "b")
    engine = TensorRTEngine.from_bundle(bundle, max_batch=8)
    rows = np.random.default_rng(0).standard_normal((8, 8), dtype=np.float32)
    engine.input_buffer(8)[:] = rows
    first = engine.infer(8).copy()
    engine.close()
    plans = sorted(p.name for p in bundle.plans_dir.iterdir())
    stem = plan_stem("student.onnx", "fp32", host_plan_key(), 8)
    assert f"{stem}.plan" in plans
    assert f"{stem}.json" in plans
    assert any(p.endswith(".cache") for p in plans)
    again = TensorRTEngine.from_bundle(Bundle.load(bundle.path), max_batch=8, build=False)
    again.input_buffer(8)[:] = rows
    np.testing.assert_allclose(again.infer(8), first, atol=1e-5)
    again.close()
