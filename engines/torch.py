"""Reference PyTorch engine: eager on CPU, one CUDA graph per bucket on CUDA.

It takes an ``nn.Module`` (the model pipeline passes the student or the teacher it just
trained); nothing is unpickled here. Weights that come from a file must be a state dict
read with ``torch.load(path, weights_only=True)`` by the caller (a bundle never holds
one: bundles are ONNX + JSON).

CPU: the input and output buffers are numpy arrays shared with tensors
(``torch.from_numpy``); ``infer`` runs the module eagerly under ``torch.inference_mode``
and copies its result into the output tensor (the module's own result is allocated by
torch: eager mode cannot avoid that). ``threads`` calls ``torch.set_num_threads``, which is
process-wide.

CUDA: input/output buffers are pinned host tensors; each bucket has static device input
and output tensors and a ``torch.cuda.CUDAGraph`` captured (after three warm-up runs on a
side stream, as PyTorch requires) around ``module(static_input)``. ``infer`` copies the
pinned input to the static input, replays the graph, copies the static output to the
pinned output, all on the engine's own stream, then synchronises that stream: it blocks
the caller. With ``cuda_graphs=False`` it runs eagerly on the same stream instead.

``torch`` is imported when an engine is constructed, never at package import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engines.base import DEFAULT_MAX_BATCH, FloatArray
from engines.bucket import _BucketEngine
from engines.errors import EngineError

if TYPE_CHECKING:
    from engines.profile import LatencyProfile


def _import_torch() -> Any:
    try:
        import torch  # optional (train extra)
    except ImportError as exc:
        raise EngineError("torch engine needs PyTorch (pip install 'weir[train]')") from exc
    return torch


class TorchEngine(_BucketEngine):
    """An ``nn.Module`` behind the engine contract (see the module docstring)."""

    kind: ClassVar[str] = "torch"

    def __init__(
        self,
        module: Any,
        *,
        n_features: int,
        max_batch: int = DEFAULT_MAX_BATCH,
        device: str = "cpu",
        cuda_graphs: bool = True,
        threads: int | None = None,
        model_version: str = "unknown",
        profile: LatencyProfile | None = None,
        observe: bool = True,
        clock: Callable[[], int] | None = None,
    ) -> None:
        torch = _import_torch()
        self._torch = torch
        self._dev = torch.device(device)
        self._is_cuda = self._dev.type == "cuda"
        if self._is_cuda and not torch.cuda.is_available():
            raise EngineError(f"torch engine: device {device} asked for but CUDA is unavailable")
        if threads is not None:
            torch.set_num_threads(threads)
        self._threads = threads
        self._cuda_graphs = cuda_graphs and self._is_cuda
        self._module = module.to(self._dev).eval()
        self._stream: Any = torch.cuda.Stream(device=self._dev) if self._is_cuda else None
        with torch.inference_mode():
            probe = self._module(torch.zeros((1, n_features), device=self._dev))
        if probe.dim() != 2:
            raise EngineError(
                f"torch engine: module must map [batch, {n_features}] to [batch, n_outputs], "
                f"got output shape {tuple(probe.shape)}"
            )
        n_outputs = int(probe.shape[1])
        self._in_t: dict[int, Any] = {}
        self._out_t: dict[int, Any] = {}
        self._static_in: dict[int, Any] = {}
        self._static_out: dict[int, Any] = {}
        self._graphs: dict[int, Any] = {}
        self._host_tensors: list[Any] = []
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        name = torch.cuda.get_device_name(self._dev) if self._is_cuda else "cpu"
        super().__init__(
            n_features=n_features,
            n_outputs=n_outputs,
            max_batch=max_batch,
            precision="fp32",
            device=f"{self._dev} {name}" if self._is_cuda else "cpu",
            model_version=model_version,
            profile=profile,
            observe=observe,
            **kwargs,
        )

    def _alloc(self, shape: tuple[int, int]) -> FloatArray:
        t = self._torch.zeros(shape, dtype=self._torch.float32, pin_memory=self._is_cuda)
        self._host_tensors.append(t)
        arr: FloatArray = t.numpy()
        return arr

    def _bind(self, bucket: int) -> None:
        torch = self._torch
        self._in_t[bucket] = torch.from_numpy(self._inputs[bucket])
        self._out_t[bucket] = torch.from_numpy(self._outputs[bucket])
        if not self._is_cuda:
            return
        static_in = torch.zeros((bucket, self._n_features), device=self._dev)
        self._static_in[bucket] = static_in
        with torch.cuda.stream(self._stream), torch.inference_mode():
            for _ in range(3):
                out = self._module(static_in)
            self._stream.synchronize()
            if self._cuda_graphs:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._stream):
                    out = self._module(static_in)
                self._graphs[bucket] = graph
            self._static_out[bucket] = out

    def _run(self, bucket: int) -> None:
        torch = self._torch
        with torch.inference_mode():
            if not self._is_cuda:
                self._out_t[bucket].copy_(self._module(self._in_t[bucket]))
                return
            with torch.cuda.stream(self._stream):
                self._static_in[bucket].copy_(self._in_t[bucket], non_blocking=True)
                if self._cuda_graphs:
                    self._graphs[bucket].replay()
                else:
                    self._static_out[bucket] = self._module(self._static_in[bucket])
                self._out_t[bucket].copy_(self._static_out[bucket], non_blocking=True)
            self._stream.synchronize()

    def _versions(self) -> dict[str, str]:
        v = {"numpy": np.__version__, "torch": str(self._torch.__version__)}
        if self._is_cuda:
            v["cuda_runtime"] = str(self._torch.version.cuda)
        return v

    def _options(self) -> dict[str, str]:
        return {
            "cuda_graphs": str(self._cuda_graphs).lower(),
            "threads": "default" if self._threads is None else str(self._threads),
        }

    def _release(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._graphs.clear()
        self._static_in.clear()
        self._static_out.clear()
