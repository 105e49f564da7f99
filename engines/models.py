"""Teacher and student networks and the distillation losses (PyTorch, imported lazily).

Every network takes the flat feature row ``[batch, window * row_width]`` the service
feeds (``schemas.features``), standardises it with constants computed on the training
rows (:class:`Standardize`, exported into the ONNX graph as a Sub and a Mul, so serving
feeds raw rows), and returns logits ``[batch, 3]`` (trading) or the forecast ``[batch, 1]``
(sensor). :class:`Exported` adds the softmax for export.

Teachers (larger, sequence models over the ``[window, row_width]`` grid):
    trading, :class:`DeepLOBTeacher` (after Zhang et al., DeepLOB, 2019): a per-step
    convolution mixing the row's features (a 2-D conv with a ``(1, row_width)`` kernel,
    written as a 1-D conv with ``row_width`` channels), two temporal convolutions, an
    inception module (1x1 → 3, 1x1 → 5, max-pool → 1x1) and a GRU; its last state gives
    the logits.
    sensor, :class:`GRUForecaster`: a two-layer GRU over the window's rows.
Students: :class:`MLPStudent`, ``n_features → hidden... → n_outputs`` with ReLU.

Distillation (Hinton, Vinyals, Dean 2015): :func:`distill_loss` is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
+ (1 - alpha) * CE(student, label; class weights)``, defaults ``T = 2``, ``alpha = 0.7``
(the ``T^2`` keeps the soft term's gradients on the hard term's scale). For the sensor task
:func:`forecast_distill_loss` is ``alpha * MSE(student, teacher) + (1 - alpha) *
MSE(student, target)``.

``torch`` is imported by :func:`torch_module` on first use; type hints use ``Any``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from engines.errors import EngineError

DEFAULT_TEMPERATURE: Final = 2.0
DEFAULT_ALPHA: Final = 0.7
DEFAULT_STUDENT_HIDDEN: Final = (64, 32)

_torch: Any = None


def torch_module() -> Any:
    """``torch``, imported on first use (it is in the ``train`` extra only)."""
    global _torch
    if _torch is None:
        try:
            _torch = importlib.import_module("torch")
        except ImportError as exc:
            raise EngineError(
                "the model pipeline needs PyTorch: pip install 'weir[train]'"
            ) from exc
    return _torch


def count_params(model: Any) -> int:
    """Trainable parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def _nn() -> Any:
    return torch_module().nn


def standardize(mean: np.ndarray, std: np.ndarray) -> Any:
    """A module computing ``(x - mean) / std`` with constant buffers."""
    torch = torch_module()

    class Standardize(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(np.asarray(mean, np.float32)))
            self.register_buffer("inv_std", torch.from_numpy(1.0 / np.asarray(std, np.float32)))

        def forward(self, x: Any) -> Any:
            return (x - self.mean) * self.inv_std

    return Standardize()


def relative_scale(window: int, row_width: int, columns: Sequence[int]) -> Any:
    """A module dividing each of ``columns`` (row indices) by its window's mean magnitude.

    Input ``[B, window * row_width]`` (rows oldest first), output the same shape: for each
    listed column, every value of the window is divided by the mean ``|value|`` over the
    window's non-zero values of that column (a column all zero stays zero); other columns
    pass through. The result no longer carries the symbol's scale (tick size in bps,
    base-asset quantity), only how the value compares with its recent ones. Computed from
    the input itself, so it runs identically in training, in the exported ONNX and at
    serving; the standardisation after it is fitted on the training rows it produced.
    """
    torch = torch_module()
    mask = np.zeros((1, 1, row_width), dtype=bool)
    mask[0, 0, list(columns)] = True

    class RelativeScale(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mask", torch.from_numpy(mask))

        def forward(self, x: Any) -> Any:
            z = x.reshape(-1, window, row_width)
            mag = z.abs()
            count = (mag > 0).to(z.dtype).sum(dim=1, keepdim=True).clamp(min=1.0)
            scale = mag.sum(dim=1, keepdim=True) / count
            factor = torch.where(self.mask & (scale > 0), 1.0 / scale.clamp(min=1e-12), 1.0)
            return (z * factor).reshape(-1, window * row_width)

    return RelativeScale()


def with_input_transform(pre: Any, model: Any) -> Any:
    """``model`` applied to ``pre(x)``, as one module (exported as one graph)."""
    torch = torch_module()

    class Transformed(torch.nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.pre = pre
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model(self.pre(x))

    Transformed.__name__ = f"{type(pre).__name__}+{type(model).__name__}"
    return Transformed()


def mlp_student(
    n_features: int,
    n_outputs: int,
    mean: np.ndarray,
    std: np.ndarray,
    hidden: Sequence[int] = DEFAULT_STUDENT_HIDDEN,
) -> Any:
    """The student: standardise, then ``n_features → hidden... → n_outputs`` with ReLU."""
    nn = _nn()
    layers: list[Any] = [standardize(mean, std)]
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def deeplob_teacher(
    window: int,
    row_width: int,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    channels: int = 32,
    hidden: int = 96,
    n_outputs: int = 3,
) -> Any:
    """The trading teacher (see the module docstring)."""
    torch = torch_module()
    nn = torch.nn
    branch = channels // 2

    class DeepLOBTeacher(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.norm = standardize(mean, std)
            act = nn.LeakyReLU(0.01)
            self.mix = nn.Sequential(nn.Conv1d(row_width, channels, 1), act)
            self.temporal = nn.Sequential(
                nn.Conv1d(channels, channels, 3, padding=1),
                act,
                nn.Conv1d(channels, channels, 3, padding=1),
                act,
            )
            self.inc3 = nn.Sequential(
                nn.Conv1d(channels, branch, 1), act, nn.Conv1d(branch, branch, 3, padding=1), act
            )
            self.inc5 = nn.Sequential(
                nn.Conv1d(channels, branch, 1), act, nn.Conv1d(branch, branch, 5, padding=2), act
            )
            self.incp = nn.Sequential(
                nn.MaxPool1d(3, stride=1, padding=1), nn.Conv1d(channels, branch, 1), act
            )
            self.gru = nn.GRU(3 * branch, hidden, batch_first=True)
            self.head = nn.Linear(hidden, n_outputs)

        def forward(self, x: Any) -> Any:
            z = self.norm(x).reshape(-1, window, row_width).transpose(1, 2)  # [B, C, W]
            z = self.temporal(self.mix(z))
            z = torch.cat([self.inc3(z), self.inc5(z), self.incp(z)], dim=1)
            _, h = self.gru(z.transpose(1, 2))  # [B, W, 3*branch] → h [1, B, hidden]
            return self.head(h[-1])

    return DeepLOBTeacher()


def gru_forecaster(
    window: int,
    row_width: int,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    hidden: int = 64,
    layers: int = 2,
) -> Any:
    """The sensor teacher: a GRU over the window's rows, the last state → the forecast."""
    torch = torch_module()
    nn = torch.nn

    class GRUForecaster(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.norm = standardize(mean, std)
            self.gru = nn.GRU(row_width, hidden, num_layers=layers, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x: Any) -> Any:
            _, h = self.gru(self.norm(x).reshape(-1, window, row_width))
            return self.head(h[-1])

    return GRUForecaster()


def exported(model: Any, *, softmax: bool) -> Any:
    """``model`` with a softmax on its output (trading) or as is (sensor), in eval mode."""
    nn = _nn()
    out = nn.Sequential(model, nn.Softmax(dim=-1)) if softmax else nn.Sequential(model)
    return out.eval()


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (n_classes * count)`` (1 where a class is absent)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1.0)), 1.0)
    return w.astype(np.float32)


def distill_loss(
    student: Any,
    teacher: Any,
    y: Any,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    alpha: float = DEFAULT_ALPHA,
    weight: Any = None,
) -> Any:
    """Hinton distillation loss on logits (see the module docstring)."""
    f = torch_module().nn.functional
    t = temperature
    soft = f.kl_div(
        f.log_softmax(student / t, dim=-1),
        f.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = f.cross_entropy(student, y, weight=weight)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def forecast_distill_loss(
    student: Any, teacher: Any, y: Any, *, alpha: float = DEFAULT_ALPHA
) -> Any:
    """``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, target)``."""
    f = torch_module().nn.functional
    s = student[:, 0]
    return alpha * f.mse_loss(s, teacher[:, 0]) + (1.0 - alpha) * f.mse_loss(s, y)
