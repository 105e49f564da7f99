"""The engines package's lazy imports (its ``__all__``: tests/unit/test_exported_members.py)."""

from __future__ import annotations

import subprocess
import sys


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
