"""Parity: does ONNX Runtime, through the serving engine, reproduce the trained model?

A bundle carries ``parity_sample.json`` (:class:`ParitySample`): held-out input rows
(64 by default, float32, base64) with the PyTorch reference outputs and, per precision,
the ONNX Runtime outputs measured at build time. :func:`check_parity` runs every model
through :class:`engines.onnx.OnnxEngine` at EVERY bucket (1, 2, 4, ... up to the rows
held) on full batches and on half-filled padded ones (the engine's padding path), and
compares row by row, per element: ``|got - want| <= atol + rtol * |want|``.

- ``fp32`` is compared with PyTorch: ``atol 1e-5, rtol 1e-4`` (same math, another
  kernel order; probabilities and z-score forecasts are O(1)).
- ``int8`` and ``fp16`` are compared with their own build-time outputs (``atol 2e-2``
  and ``5e-3``): other CPUs may pick other int8/fp16 kernels; that they are close enough
  to the reference is the build's task-metric check (macro-F1 / MAE within a margin,
  recorded in ``metadata.metrics``), and here classification must also keep >= 95 % of
  arg-maxes.

Needs numpy and onnxruntime only (no torch): ``weir model verify`` runs on serving hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec
import numpy as np

from engines.bundle import Bundle, ParityResult
from engines.errors import BundleError, EngineError

PARITY_FILE: Final = "parity_sample.json"
PARITY_ROWS: Final = 64


class Array(msgspec.Struct, frozen=True, kw_only=True):
    """A float32 matrix as JSON: shape and little-endian bytes (base64 in JSON)."""

    shape: tuple[int, int]
    data: bytes
    dtype: str = "<f4"

    @classmethod
    def of(cls, a: np.ndarray) -> Array:
        """Wrap a 2-D array (cast to float32)."""
        a2 = np.ascontiguousarray(a, dtype="<f4")
        if a2.ndim != 2:
            raise EngineError(f"parity arrays are 2-D, got shape {a2.shape}")
        return cls(shape=(int(a2.shape[0]), int(a2.shape[1])), data=a2.tobytes())

    def numpy(self) -> np.ndarray:
        """The array (a fresh float32 copy)."""
        return np.frombuffer(self.data, dtype=self.dtype).reshape(self.shape).astype(np.float32)


class Tolerance(msgspec.Struct, frozen=True, kw_only=True):
    """Per-element ``atol + rtol * |want|``, and the arg-max agreement required."""

    atol: float
    rtol: float = 0.0
    min_argmax_agreement: float = 0.0


TOLERANCES: Final = {
    "fp32": Tolerance(atol=1e-5, rtol=1e-4, min_argmax_agreement=1.0),
    "int8": Tolerance(atol=2e-2, min_argmax_agreement=0.95),
    "fp16": Tolerance(atol=5e-3, min_argmax_agreement=0.95),
}


class ParitySample(msgspec.Struct, frozen=True, kw_only=True):
    """``parity_sample.json``: rows, the torch outputs, each precision's build outputs."""

    rows: Array
    reference: Array
    reference_name: str = "torch"
    outputs: dict[str, Array] = {}
    tolerances: dict[str, Tolerance] = {}
    classification: bool = True

    def to_json(self) -> bytes:
        """Compact JSON (the bundle file)."""
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, raw: bytes) -> ParitySample:
        """Read ``parity_sample.json``."""
        return msgspec.json.decode(raw, type=cls)


class ParityCheck(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome for one precision: the worst element over every bucket and fill checked."""

    precision: str
    reference: str
    buckets: list[int]
    n_rows: int
    max_abs_diff: float
    worst_excess: float
    """Largest ``|got - want| - (atol + rtol*|want|)``; <= 0 means every element passed."""
    argmax_agreement: float
    ok: bool

    def result(self) -> ParityResult:
        """As stored in ``metadata.parity``."""
        return ParityResult(
            engine="onnx",
            precision=self.precision,
            reference=self.reference,
            n_rows=self.n_rows,
            max_abs_diff=self.max_abs_diff,
            argmax_agreement=self.argmax_agreement,
        )


def _fills(bucket: int) -> tuple[int, ...]:
    return (bucket,) if bucket == 1 else (bucket, bucket // 2 + 1)


def check_parity(
    models: Mapping[str, bytes | str | Path],
    sample: ParitySample,
    *,
    threads: int = 1,
) -> list[ParityCheck]:
    """Run each model at every bucket through ``OnnxEngine`` and compare (module docstring)."""
    from engines.onnx import OnnxEngine

    rows = sample.rows.numpy()
    n = rows.shape[0]
    checks: list[ParityCheck] = []
    for precision, model in sorted(models.items()):
        tol = sample.tolerances.get(precision) or TOLERANCES.get(precision) or TOLERANCES["int8"]
        if precision == "fp32":
            want_all, ref_name = sample.reference.numpy(), sample.reference_name
        elif precision in sample.outputs:
            want_all, ref_name = sample.outputs[precision].numpy(), f"onnx-{precision}-build"
        else:
            raise EngineError(f"parity sample has no reference outputs for {precision}")
        engine = OnnxEngine(model, max_batch=n, threads=threads, precision=precision, observe=False)
        worst = -np.inf
        max_diff = 0.0
        agree = total = 0
        try:
            for b in engine.buckets:
                for fill in _fills(b):
                    engine.input_buffer(b)[:fill] = rows[:fill]
                    got = np.array(engine.infer(b, fill), dtype=np.float32)
                    want = want_all[:fill]
                    diff = np.abs(got.astype(np.float64) - want)
                    max_diff = max(max_diff, float(diff.max()))
                    excess = diff - (tol.atol + tol.rtol * np.abs(want))
                    worst = max(worst, float(excess.max()))
                    agree += int((got.argmax(axis=1) == want.argmax(axis=1)).sum())
                    total += fill
            buckets = list(engine.buckets)
        finally:
            engine.close()
        agreement = agree / total if total else 1.0
        ok = worst <= 0.0 and (not sample.classification or agreement >= tol.min_argmax_agreement)
        checks.append(
            ParityCheck(
                precision=precision,
                reference=ref_name,
                buckets=buckets,
                n_rows=n,
                max_abs_diff=max_diff,
                worst_excess=float(worst),
                argmax_agreement=agreement,
                ok=ok,
            )
        )
    return checks


def verify_bundle(path: str | Path, *, threads: int = 1) -> list[ParityCheck]:
    """Load (hashes checked) and re-run parity of every precision of a bundle."""
    bundle = Bundle.load(path)
    if PARITY_FILE not in bundle.metadata.files:
        raise BundleError(f"bundle {bundle.path}: no {PARITY_FILE} to verify against")
    try:
        sample = ParitySample.from_json((bundle.path / PARITY_FILE).read_bytes())
    except msgspec.DecodeError as exc:
        raise BundleError(f"bundle {bundle.path}: invalid {PARITY_FILE}: {exc}") from exc
    models = {p: bundle.model_path(p) for p in bundle.metadata.models}
    return check_parity(models, sample, threads=threads)


def format_checks(checks: list[ParityCheck]) -> str:
    """One line per precision: verdict, reference, worst diff, arg-max agreement."""
    lines = []
    for c in checks:
        verdict = "ok  " if c.ok else "FAIL"
        lines.append(
            f"{verdict} {c.precision:<5} vs {c.reference:<18} buckets {c.buckets[0]}..{c.buckets[-1]} "
            f"rows {c.n_rows}  max|diff| {c.max_abs_diff:.3g}  "
            f"worst excess {c.worst_excess:+.3g}  argmax agree {c.argmax_agreement:.4f}"
        )
    return "\n".join(lines)
