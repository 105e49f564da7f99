"""INT8/FP16 variants and the parity check (no torch needed: models from engines.fake)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.bundle import Bundle
from engines.export import onnx_outputs, quantize_int8, rows_reader, to_fp16
from engines.objective import macro_f1, per_class_f1
from engines.parity import (
    PARITY_FILE,
    TOLERANCES,
    Array,
    ParitySample,
    check_parity,
    verify_bundle,
)

onnx = pytest.importorskip("onnx", reason="onnx is a dev/train dependency")

from engines.fake import tiny_mlp_onnx  # noqa: E402  (needs onnx)

N_FEATURES = 24


@pytest.fixture
def fp32() -> bytes:
    return tiny_mlp_onnx(N_FEATURES, (32, 16), 3, seed=3)


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(400, N_FEATURES)).astype(np.float32)


def _sample(fp32: bytes, rows: np.ndarray, **models: bytes) -> ParitySample:
    sub = rows[:64]
    return ParitySample(
        rows=Array.of(sub),
        reference=Array.of(onnx_outputs(fp32, sub)),
        outputs={p: Array.of(onnx_outputs(m, sub)) for p, m in models.items()},
    )


def test_rows_reader_feeds_batches_then_none_and_rewinds(rows: np.ndarray) -> None:
    """The calibration reader yields every row once in batches, then None; rewind restarts."""
    reader = rows_reader(rows, batch=150)
    sizes = []
    while (item := reader.get_next()) is not None:
        sizes.append(item["input"].shape[0])
    assert sizes == [150, 150, 100]
    reader.rewind()
    assert reader.get_next() is not None


def test_int8_is_qdq_with_float_softmax_and_close(fp32: bytes, rows: np.ndarray) -> None:
    """INT8 has Q/DQ pairs, keeps Softmax in float, and stays close to FP32."""
    q = quantize_int8(fp32, rows[:200])
    ops = [n.op_type for n in onnx.load_from_string(q).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert ops[-1] == "Softmax"
    a, b = onnx_outputs(fp32, rows[200:]), onnx_outputs(q, rows[200:])
    assert np.abs(a - b).max() < 0.05
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.95


def test_int8_is_deterministic(fp32: bytes, rows: np.ndarray) -> None:
    """The same model and calibration rows give the same INT8 bytes."""
    assert quantize_int8(fp32, rows[:100]) == quantize_int8(fp32, rows[:100])


def test_fp16_keeps_float32_io_and_halves_weights(fp32: bytes, rows: np.ndarray) -> None:
    """FP16 stores float16 weights but still takes and returns float32."""
    half = onnx.load_from_string(to_fp16(fp32))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert half.graph.input[0].type.tensor_type.elem_type == f32
    assert half.graph.output[0].type.tensor_type.elem_type == f32
    assert {t.data_type for t in half.graph.initializer} == {f16}
    a, b = onnx_outputs(fp32, rows), onnx_outputs(half.SerializeToString(), rows)
    assert np.abs(a - b).max() < 5e-3


def test_parity_passes_at_every_bucket(fp32: bytes, rows: np.ndarray) -> None:
    """FP32 against its own reference passes at buckets 1..64, full and padded."""
    q = quantize_int8(fp32, rows)
    checks = check_parity({"fp32": fp32, "int8": q}, _sample(fp32, rows, int8=q))
    assert [c.precision for c in checks] == ["fp32", "int8"]
    assert all(c.ok for c in checks)
    assert checks[0].buckets == [1, 2, 4, 8, 16, 32, 64]
    assert checks[0].max_abs_diff <= TOLERANCES["fp32"].atol


def test_parity_fails_on_a_perturbed_reference(fp32: bytes, rows: np.ndarray) -> None:
    """A reference off by more than the tolerance in one element fails FP32 parity."""
    sample = _sample(fp32, rows)
    ref = sample.reference.numpy()
    ref[40, 1] += 1e-3
    bad = ParitySample(rows=sample.rows, reference=Array.of(ref))
    (check,) = check_parity({"fp32": fp32}, bad)
    assert not check.ok
    assert check.worst_excess > 0
    assert check.max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_array_round_trips_through_json(rows: np.ndarray) -> None:
    """Rows stored in the sample come back bit-exact."""
    sample = ParitySample(rows=Array.of(rows[:5]), reference=Array.of(rows[:5, :3]))
    back = ParitySample.from_json(sample.to_json())
    np.testing.assert_array_equal(back.rows.numpy(), rows[:5])


def test_verify_bundle_reads_the_stored_sample(
    fp32: bytes, rows: np.ndarray, tmp_path: Path
) -> None:
    """verify_bundle re-runs parity from parity_sample.json; a wrong reference fails it."""
    good = _sample(fp32, rows)
    ref = good.reference.numpy()
    ref[:, 0] += 0.01
    bad = ParitySample(rows=good.rows, reference=Array.of(ref))
    for name, sample, ok in (("good", good, True), ("bad", bad, False)):
        Bundle.write(
            tmp_path / name,
            models={"fp32": fp32},
            feature_spec={"task": "trading"},
            model_version=name,
            task="trading",
            n_features=N_FEATURES,
            n_outputs=3,
            extra_files={PARITY_FILE: sample.to_json()},
        )
        assert [c.ok for c in verify_bundle(tmp_path / name)] == [ok]


def test_macro_f1_is_the_unweighted_class_mean() -> None:
    """Macro-F1 averages per-class F1 (2TP / (2TP + FP + FN)) without weights."""
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    assert per_class_f1(y, pred) == pytest.approx([0.5, 0.8, 2 / 3])
    assert macro_f1(y, pred) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
