"""The Engine call contract, for every engine present on this machine."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from engines import Bundle, Engine, EngineError, FakeEngine, load_engine, write_tiny_bundle


def _has_gpu_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cuda") is None:
        return False
    try:
        from engines.tensorrt import host_plan_key

        host_plan_key()
    except EngineError:  # no driver, no device: the test is skipped, never failed
        return False
    return True


_HAS_TORCH = importlib.util.find_spec("torch") is not None

KINDS = [
    "onnx",
    "fake",
    pytest.param(
        "torch", marks=pytest.mark.skipif(not _HAS_TORCH, reason="torch is not installed")
    ),
    pytest.param(
        "tensorrt",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(
                not _has_gpu_tensorrt(), reason="needs TensorRT, cuda-python and an NVIDIA GPU"
            ),
        ],
    ),
]

N_FEATURES = 8
HIDDEN = 16
N_OUTPUTS = 3


def _torch_twin(bundle: Bundle) -> Any:
    """An nn.Module with the bundle MLP's weights (read from the ONNX initializers)."""
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.load_model_from_string(bundle.model_path().read_bytes())
    w = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    l0, l1 = torch.nn.Linear(N_FEATURES, HIDDEN), torch.nn.Linear(HIDDEN, N_OUTPUTS)
    with torch.no_grad():
        l0.weight.copy_(torch.from_numpy(w["w0"].T.copy()))
        l0.bias.copy_(torch.from_numpy(w["b0"].copy()))
        l1.weight.copy_(torch.from_numpy(w["w1"].T.copy()))
        l1.bias.copy_(torch.from_numpy(w["b1"].copy()))
    return torch.nn.Sequential(l0, torch.nn.ReLU(), l1, torch.nn.Softmax(dim=-1))


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return write_tiny_bundle(
        tmp_path / "bundle", n_features=N_FEATURES, hidden=(HIDDEN,), n_outputs=N_OUTPUTS
    )


@pytest.fixture
def make_engine(bundle: Bundle) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(kind: str, *, max_batch: int = 8, **options: Any) -> Any:
        if kind == "torch":
            from engines.torch import TorchEngine

            engine: Any = TorchEngine(
                _torch_twin(bundle), n_features=N_FEATURES, max_batch=max_batch, **options
            )
        else:
            engine = load_engine(bundle, kind, max_batch=max_batch, options=options)
        made.append(engine)
        return engine

    yield make
    for e in made:
        e.close()


def _reference(kind: str, engine: Any, bundle: Bundle, rows: np.ndarray) -> np.ndarray:
    if isinstance(engine, FakeEngine):
        return engine.expected(rows)
    sess = ort.InferenceSession(str(bundle.model_path()), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"input": rows})[0])


def _atol(kind: str) -> float:
    return 1e-3 if kind == "tensorrt" else 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_buckets_are_powers_of_two_up_to_max(kind: str, make_engine: Callable[..., Any]) -> None:
    """Buckets are 1, 2, 4, ... and the max batch, even when it is not a power of two."""
    assert make_engine(kind, max_batch=8).buckets == (1, 2, 4, 8)
    engine = make_engine(kind, max_batch=6)
    assert engine.buckets == (1, 2, 4, 6)
    assert engine.max_batch == 6
    assert [engine.bucket_for(n) for n in (1, 2, 3, 5, 6)] == [1, 2, 4, 6, 6]


@pytest.mark.parametrize("kind", KINDS)
def test_engine_satisfies_the_protocol(kind: str, make_engine: Callable[..., Any]) -> None:
    """Every engine has every member of the Engine protocol and reports its widths."""
    engine = make_engine(kind)
    members = [n for n in vars(Engine) if not n.startswith("_")]
    assert {"infer", "input_buffer", "profile", "warm_up", "describe"} <= set(members)
    for name in members:
        assert inspect.getattr_static(type(engine), name, None) is not None, name
    assert (engine.n_features, engine.n_outputs) == (N_FEATURES, N_OUTPUTS)


@pytest.mark.parametrize("kind", KINDS)
def test_input_buffers_are_preallocated_per_bucket(
    kind: str, make_engine: Callable[..., Any]
) -> None:
    """Each bucket has one C-contiguous float32 [bucket, n_features] input, always the same."""
    engine = make_engine(kind)
    for b in engine.buckets:
        buf = engine.input_buffer(b)
        assert buf.shape == (b, N_FEATURES)
        assert buf.dtype == np.float32
        assert buf.flags.c_contiguous
        assert engine.input_buffer(b) is buf


@pytest.mark.parametrize("kind", KINDS)
def test_infer_matches_the_reference_in_every_bucket(
    kind: str, make_engine: Callable[..., Any], bundle: Bundle
) -> None:
    """A full bucket's outputs equal the reference model's on the same rows."""
    engine = make_engine(kind)
    rng = np.random.default_rng(7)
    for b in engine.buckets:
        rows = rng.standard_normal((b, N_FEATURES), dtype=np.float32)
        engine.input_buffer(b)[:] = rows
        out = engine.infer(b)
        assert out.shape == (b, N_OUTPUTS)
        np.testing.assert_allclose(out, _reference(kind, engine, bundle, rows), atol=_atol(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_padding_gives_the_same_outputs_as_an_unpadded_run(
    kind: str, make_engine: Callable[..., Any]
) -> None:
    """Rows run padded in a larger bucket (stale padding rows included) match an unpadded run."""
    engine = make_engine(kind)
    rows = np.random.default_rng(3).standard_normal((4, N_FEATURES), dtype=np.float32)
    engine.input_buffer(4)[:] = rows
    unpadded = engine.infer(4).copy()
    big = engine.input_buffer(8)
    big[:] = 1e6  # stale garbage from an earlier batch
    big[:4] = rows
    padded = engine.infer(8, 4)
    assert padded.shape == (4, N_OUTPUTS)
    np.testing.assert_allclose(padded, unpadded, atol=_atol(kind))
    assert not big[4:].any(), "padding rows are zeroed"


@pytest.mark.parametrize("kind", KINDS)
def test_infer_returns_the_same_preallocated_view(
    kind: str, make_engine: Callable[..., Any]
) -> None:
    """infer returns one cached read-only view per (bucket, n_rows) over the output buffer."""
    engine = make_engine(kind)
    first = engine.infer(8, 5)
    again = engine.infer(8, 5)
    assert again is first
    assert np.shares_memory(first, engine.output_buffer(8))
    assert not first.flags.writeable
    assert engine.infer(8) is engine.infer(8)


@pytest.mark.parametrize("kind", KINDS)
def test_profile_comes_from_warm_up(kind: str, make_engine: Callable[..., Any]) -> None:
    """Before warm-up there is no profile; warm-up measures every bucket."""
    engine = make_engine(kind)
    with pytest.raises(EngineError, match="no latency profile yet"):
        _ = engine.profile
    profile = engine.warm_up(20)
    assert engine.profile is profile
    assert profile.buckets == engine.buckets
    for s in profile.stats():
        assert s.samples == 20
        assert 0 < s.p50_ns <= s.p99_ns <= s.p999_ns
    assert all(not engine.input_buffer(b).any() for b in engine.buckets)


@pytest.mark.parametrize("kind", KINDS)
def test_real_calls_feed_the_profile(kind: str, make_engine: Callable[..., Any]) -> None:
    """Every infer is observed into the profile and sets last_latency_ns."""
    engine = make_engine(kind)
    engine.warm_up(10)
    before = {s.bucket: s.samples for s in engine.profile.stats()}
    for _ in range(5):
        engine.infer(4, 3)
        assert engine.last_latency_ns > 0
    after = {s.bucket: s.samples for s in engine.profile.stats()}
    assert after[4] == before[4] + 5
    assert after[8] == before[8]


@pytest.mark.parametrize("kind", KINDS)
def test_describe_names_what_runs(kind: str, make_engine: Callable[..., Any]) -> None:
    """describe() gives kind, precision, device, model version, buckets and versions."""
    info = make_engine(kind).describe()
    assert info.kind == kind
    assert info.precision == "fp32"
    assert info.device
    assert info.buckets == (1, 2, 4, 8)
    assert "numpy" in info.versions
    if kind != "torch":
        assert info.model_version == "tiny-1"


@pytest.mark.parametrize("kind", KINDS)
def test_bad_bucket_or_row_count_is_refused(kind: str, make_engine: Callable[..., Any]) -> None:
    """A bucket that does not exist or a row count outside 1..bucket raises EngineError."""
    engine = make_engine(kind)
    with pytest.raises(EngineError) as info:
        engine.infer(3)
    assert str(info.value) == f"{kind} engine: no bucket 3; buckets are [1, 2, 4, 8]"
    with pytest.raises(EngineError) as info:
        engine.infer(4, 5)
    assert str(info.value) == f"{kind} engine: n_rows must be in 1..4 for bucket 4, got 5"
    with pytest.raises(EngineError, match="does not fit buckets"):
        engine.bucket_for(9)


@pytest.mark.parametrize("kind", KINDS)
def test_closed_engine_refuses_to_infer(kind: str, make_engine: Callable[..., Any]) -> None:
    """After close() infer raises; close() is idempotent."""
    engine = make_engine(kind)
    engine.close()
    engine.close()
    with pytest.raises(EngineError, match="is closed"):
        engine.infer(1)
