"""Training with PyTorch: seeding, batched prediction, and the epoch loop that keeps the best.

Everything here is task-agnostic; what a task trains for comes in as an
:class:`engines.objective.Objective` (its metric and which way is better) and a loss.
PyTorch is imported on first call (``engines.models.torch_module``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np

from engines.models import torch_module
from engines.objective import Objective

Log = Callable[[str], None]
EVAL_BATCH: Final = 4096


def seed_everything(seed: int, threads: int) -> Any:
    """Seed torch, fix its threads, make it deterministic; return ``torch``."""
    torch = torch_module()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return torch


def predict(model: Any, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    """``model`` outputs on ``x`` (eval mode, no grad), float32."""
    torch = torch_module()
    model.eval()
    with torch.inference_mode():
        outs = [
            model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch]))).numpy()
            for i in range(0, x.shape[0], batch)
        ]
    if not outs:
        return np.zeros((0, 1), dtype=np.float32)
    return np.concatenate(outs).astype(np.float32, copy=False)


def fit(
    model: Any,
    loss_fn: Callable[[Any, np.ndarray], Any],
    x: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    rng: np.random.Generator,
    evaluate: Callable[[Any], float],
    objective: Objective,
    name: str,
    log: Log,
) -> tuple[Any, list[dict[str, float]]]:
    """Adam over shuffled mini-batches; keep the weights of the best validation epoch.

    ``loss_fn(outputs, batch_indices)`` gives the loss of a batch; ``evaluate(model)`` the
    validation metric, compared with ``objective.better``. Returns the model (best weights
    loaded) and the per-epoch history.
    """
    torch = torch_module()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    xt = torch.from_numpy(x)
    best = objective.worst
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    n = x.shape[0]
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[torch.from_numpy(idx)]), idx)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
        sched.step()
        val = evaluate(model)
        kept = objective.better(val, best)
        if kept:
            best = val
            best_state = copy.deepcopy(model.state_dict())
        log(
            f"{name} epoch {epoch}/{epochs}  loss {total / max(n, 1):.4f}  "
            f"val {objective.metric_name} {val:.4f}"
            f"{'  *' if kept else ''}  {time.perf_counter() - t0:.1f}s"
        )
        history.append({"epoch": epoch, "loss": total / max(n, 1), "val": val})
    model.load_state_dict(best_state)
    model.eval()
    return model, history
