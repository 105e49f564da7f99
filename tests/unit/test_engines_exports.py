"""The engines package's public surface and its lazy imports."""

from __future__ import annotations

import subprocess
import sys

import engines


def test_all_is_pinned_and_sorted() -> None:
    """__all__ lists exactly the public names, sorted, each importable."""
    assert engines.__all__ == [
        "ENGINE_KINDS",
        "BucketStats",
        "Bundle",
        "BundleError",
        "BundleMetadata",
        "Engine",
        "EngineError",
        "EngineInfo",
        "EngineProfile",
        "FakeEngine",
        "FileDigest",
        "LatencyModel",
        "LatencyProfile",
        "OnnxEngine",
        "ParityResult",
        "PlanKey",
        "PlanSidecar",
        "ProfileError",
        "TensorRTEngine",
        "TensorSpec",
        "TorchEngine",
        "bucket_sizes",
        "load_engine",
        "load_model",
        "tiny_mlp_onnx",
        "write_tiny_bundle",
    ]
    for name in engines.__all__:
        assert getattr(engines, name) is not None


def test_import_pulls_in_no_runtime() -> None:
    """Importing engines imports neither onnxruntime, onnx, torch nor tensorrt."""
    code = (
        "import sys, engines; "
        "print(sorted(m for m in ('onnxruntime', 'onnx', 'torch', 'tensorrt') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
