"""Trained networks to ONNX: FP32 export, INT8 (Q/DQ) and FP16 variants, magnitude pruning.

``export_onnx`` runs ``torch.onnx.export`` (TorchScript exporter, opset 17, input
``input`` ``[batch, n_features]`` and output ``output`` ``[batch, n_outputs]`` with a
dynamic ``batch`` axis, constants folded); the bytes depend only on the weights.

``quantize_int8`` is ONNX Runtime static quantization in the QDQ format (after ONNX Runtime's
``quant_pre_process``: shape inference and basic graph optimisation): weights int8
(symmetric, per tensor), activations uint8, ranges calibrated (MinMax) by running the FP32
model on training rows fed through :class:`RowsReader` (a ``CalibrationDataReader``).
Two parts stay in float: the input standardisation (the raw row mixes scales, z-scores up
to 10 beside one-hots and bps, so one uint8 scale for it lost 4-9 % MAE on NAB; quantized
after standardisation the loss was 0.5 %) and the final Softmax (quantizing probabilities
costs accuracy and saves nothing).

``to_fp16`` converts weights and ops to float16 with ``keep_io_types=True`` (the model
still takes and returns float32, so the engine contract is unchanged): for GPU hosts;
ONNX Runtime's CPU provider runs it too (slowly), which is how the build checks it.

``prune_magnitude`` masks the smallest ``amount`` of the Linear/Conv weights (global L1,
``torch.nn.utils.prune``); ``finish_pruning`` makes it permanent. Dense kernels do not skip zeros, so it
shrinks nothing at run time by itself; the build reports its effect on the metric.
"""

from __future__ import annotations

import importlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np

from engines.errors import EngineError
from engines.models import torch_module

OPSET: Final = 17
INPUT_NAME: Final = "input"
OUTPUT_NAME: Final = "output"
CALIBRATION_BATCH: Final = 64


def export_onnx(module: Any, n_features: int, *, opset: int = OPSET) -> bytes:
    """``module`` (eval mode, ``[batch, n_features]`` in) as ONNX bytes with a dynamic batch."""
    torch = torch_module()
    module = module.eval()
    buf = io.BytesIO()
    dummy = torch.zeros((2, n_features), dtype=torch.float32)
    with warnings.catch_warnings():
        # The TorchScript exporter announces its deprecation; it is the one that exports
        # GRUs to the ONNX GRU op quietly and deterministically in torch 2.x.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            buf,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return buf.getvalue()


def _rows_reader_base() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader  # type: ignore[no-any-return]


def rows_reader(rows: np.ndarray, batch: int = CALIBRATION_BATCH) -> Any:
    """A ``CalibrationDataReader`` feeding ``rows`` in batches of ``batch``."""
    base = _rows_reader_base()

    class RowsReader(base):  # type: ignore[misc, valid-type]
        """Feeds float32 rows to the calibrator, ``batch`` at a time."""

        def __init__(self) -> None:
            self._rows = np.ascontiguousarray(rows, dtype=np.float32)
            self._pos = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._pos >= self._rows.shape[0]:
                return None
            chunk = self._rows[self._pos : self._pos + batch]
            self._pos += batch
            return {INPUT_NAME: chunk}

        def rewind(self) -> None:
            self._pos = 0

    return RowsReader()


def _float_nodes(model: Any) -> list[str]:
    """Nodes left in float: the input standardisation (everything before the first
    Gemm/MatMul/Conv) and the final Softmax."""
    names: list[str] = []
    before_first_layer = True
    for node in model.graph.node:
        if node.op_type in ("Gemm", "MatMul", "Conv"):
            before_first_layer = False
        if before_first_layer or node.op_type == "Softmax":
            names.append(node.name)
    return names


def quantize_int8(fp32: bytes, calibration_rows: np.ndarray) -> bytes:
    """Static INT8 quantization (QDQ, MinMax) of ``fp32``, calibrated on the given rows."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load_from_string(fp32)
    keep_float = _float_nodes(model)
    with tempfile.TemporaryDirectory(prefix="weir-int8-") as tmp:
        src, pre, dst = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "pre", "int8"))
        src.write_bytes(fp32)
        try:
            quant_pre_process(str(src), str(pre))
            quantize_static(
                str(pre),
                str(dst),
                rows_reader(calibration_rows),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=False,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=keep_float,
            )
        except Exception as exc:  # ORT's quantizer raises untyped errors: wrapped
            raise EngineError(f"int8 quantization failed: {exc}") from exc
        return dst.read_bytes()


def to_fp16(fp32: bytes) -> bytes:
    """``fp32`` with float16 weights and ops, float32 inputs and outputs kept."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load_from_string(fp32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about values clamped to the fp16 range
        half = convert_float_to_float16(model, keep_io_types=True)
    return bytes(half.SerializeToString())


def _prune_module() -> Any:
    torch_module()
    return importlib.import_module("torch.nn.utils.prune")


def _prunable(model: Any) -> list[tuple[Any, str]]:
    nn = torch_module().nn
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    return [(m, "weight") for m in model.modules() if isinstance(m, kinds)]


def prune_magnitude(model: Any, amount: float) -> None:
    """Mask the ``amount`` smallest-magnitude Linear/Conv weights (global L1).

    The masks stay in place (fine-tuning keeps pruned weights at zero) until
    :func:`finish_pruning`.
    """
    if not 0.0 < amount < 1.0:
        raise EngineError(f"prune amount must be in (0, 1), got {amount}")
    prune = _prune_module()
    prune.global_unstructured(_prunable(model), pruning_method=prune.L1Unstructured, amount=amount)


def finish_pruning(model: Any) -> float:
    """Make the masks permanent (plain weights again); return the fraction of zero weights."""
    prune = _prune_module()
    params = _prunable(model)
    for m, name in params:
        if prune.is_pruned(m):
            prune.remove(m, name)
    total = sum(int(m.weight.numel()) for m, _ in params)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    return zeros / total if total else 0.0


def onnx_outputs(model: bytes, rows: np.ndarray, *, batch: int = 1024) -> np.ndarray:
    """Run ``model`` on ``rows`` with ONNX Runtime (CPU, 1 thread), in chunks of ``batch``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    outs = [
        np.asarray(sess.run([OUTPUT_NAME], {INPUT_NAME: rows[i : i + batch]})[0])
        for i in range(0, rows.shape[0], batch)
    ]
    if not outs:
        return np.zeros((0, 1), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)
