"""ONNX Runtime engine: IOBinding on preallocated buffers, session options, errors."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from engines import EngineError, OnnxEngine, tiny_mlp_onnx
from engines.onnx import session_options


@pytest.fixture
def make_onnx() -> Callable[..., OnnxEngine]:
    def make(**kw: Any) -> OnnxEngine:
        kw.setdefault("max_batch", 8)
        model = kw.pop("model", None) or tiny_mlp_onnx(8, (16,), 3, seed=1)
        return OnnxEngine(model, **kw)

    return make


def test_outputs_are_written_in_place_into_the_bound_buffer(
    make_onnx: Callable[..., OnnxEngine],
) -> None:
    """run_with_iobinding writes the bucket's own output array, which infer returns a view of."""
    engine = make_onnx()
    out = engine.output_buffer(4)
    address = out.ctypes.data
    rng = np.random.default_rng(0)
    for _ in range(3):
        rows = rng.standard_normal((4, 8), dtype=np.float32)
        engine.input_buffer(4)[:] = rows
        result = engine.infer(4)
        assert result.base is out or np.shares_memory(result, out)
        assert engine.output_buffer(4).ctypes.data == address
        expected = engine.session.run(None, {"input": rows})[0]
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_infer_allocates_no_array_per_call(make_onnx: Callable[..., OnnxEngine]) -> None:
    """A thousand kept infer results share the output buffer and take no memory per call.

    A copy per call would keep 1000 output buffers alive; the bound allows a twentieth of
    that so that unrelated interpreter allocations (caches, other threads) cannot fail it.
    """
    engine = make_onnx(max_batch=64, observe=False)
    engine.input_buffer(64)[:] = 1.0
    engine.infer(64, 50)
    held: list[Any] = [None] * 1000
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for i in range(1000):
            held[i] = engine.infer(64, 50)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = engine.output_buffer(64)
    assert all(np.shares_memory(result, out) for result in held)
    copies = 1000 * out.nbytes
    assert current - base < copies / 20
    assert peak - base < copies / 20


def test_spinning_is_off_by_default() -> None:
    """Session options disable intra- and inter-op spinning unless asked."""
    so = session_options()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert so.intra_op_num_threads == 1
    spin = session_options(threads=2, spinning=True)
    assert spin.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spin.intra_op_num_threads == 2


def test_options_show_in_describe(make_onnx: Callable[..., OnnxEngine]) -> None:
    """threads, spinning, optimization and providers are reported by describe()."""
    info = make_onnx(threads=2, spinning=True, optimization="basic").describe()
    assert info.options["threads"] == "2"
    assert info.options["spinning"] == "true"
    assert info.options["optimization"] == "basic"
    assert info.options["providers"] == "CPUExecutionProvider"
    assert "onnxruntime" in info.versions


def test_unknown_optimization_level_is_refused(make_onnx: Callable[..., OnnxEngine]) -> None:
    """An unknown graph optimisation level names the valid ones."""
    with pytest.raises(EngineError) as info:
        make_onnx(optimization="max")
    assert str(info.value) == (
        "onnx engine: unknown optimization 'max'; choose from "
        "['all', 'basic', 'disable', 'extended']"
    )


def test_zero_threads_is_refused(make_onnx: Callable[..., OnnxEngine]) -> None:
    """threads must be at least 1."""
    with pytest.raises(EngineError, match=r"^onnx engine: threads must be >= 1, got 0$"):
        make_onnx(threads=0)


def test_unloadable_model_is_wrapped(make_onnx: Callable[..., OnnxEngine]) -> None:
    """Bytes that are not ONNX raise EngineError with ORT's error as the cause."""
    with pytest.raises(EngineError, match=r"^onnx engine: cannot load <bytes>: ") as info:
        make_onnx(model=b"not a model")
    assert info.value.__cause__ is not None


def test_unknown_output_name_is_refused(make_onnx: Callable[..., OnnxEngine]) -> None:
    """Asking for an output the model lacks names the model's inputs and outputs."""
    with pytest.raises(EngineError) as info:
        make_onnx(output_name="logits")
    assert str(info.value) == (
        "onnx engine: model has inputs ['input'] and outputs ['output']; "
        "asked for 'input' -> 'logits'"
    )


def test_threads_two_gives_the_same_outputs(make_onnx: Callable[..., OnnxEngine]) -> None:
    """Two intra-op threads (spinning or not) compute the same answer as one."""
    rows = np.random.default_rng(5).standard_normal((8, 8), dtype=np.float32)
    results = []
    for threads, spinning in ((1, False), (2, False), (2, True)):
        engine = make_onnx(threads=threads, spinning=spinning)
        engine.input_buffer(8)[:] = rows
        results.append(engine.infer(8).copy())
    np.testing.assert_allclose(results[1], results[0], atol=1e-6)
    np.testing.assert_allclose(results[2], results[0], atol=1e-6)
