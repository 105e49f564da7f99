"""The reference torch engine (skipped where PyTorch is absent)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="torch is not installed"
)


def _mlp() -> object:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(-1)
    )


def test_cpu_engine_matches_the_module() -> None:
    """On CPU infer equals calling the module on the same rows."""
    import torch

    from engines.torch import TorchEngine

    module = _mlp()
    engine = TorchEngine(module, n_features=8, max_batch=8)
    rows = np.random.default_rng(0).standard_normal((5, 8), dtype=np.float32)
    engine.input_buffer(8)[:5] = rows
    with torch.no_grad():
        expected = module(torch.from_numpy(rows)).numpy()  # type: ignore[operator]
    np.testing.assert_allclose(engine.infer(8, 5), expected, atol=1e-6)


@pytest.mark.gpu
def test_cuda_graphs_match_eager() -> None:
    """Each bucket's CUDA graph replays to the eager module's outputs."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    from engines.torch import TorchEngine

    module = _mlp()
    graphs = TorchEngine(module, n_features=8, max_batch=8, device="cuda")
    eager = TorchEngine(module, n_features=8, max_batch=8, device="cuda", cuda_graphs=False)
    rng = np.random.default_rng(1)
    for b in graphs.buckets:
        rows = rng.standard_normal((b, 8), dtype=np.float32)
        graphs.input_buffer(b)[:] = rows
        eager.input_buffer(b)[:] = rows
        np.testing.assert_allclose(graphs.infer(b), eager.infer(b), atol=1e-6)
    assert graphs.describe().options["cuda_graphs"] == "true"
