"""ONNX Runtime CPU engine: one IOBinding per bucket over preallocated numpy buffers.

Each bucket's input and output arrays are wrapped once in ``OrtValue``s that share their
memory (``OrtValue.ortvalue_from_numpy``) and bound once (``bind_ortvalue_input`` /
``bind_ortvalue_output``); ``infer`` is then a single ``run_with_iobinding``, which reads
the input buffer in place and writes the output buffer in place: no array is allocated
per call, in Python or in the binding.

Threads and spinning. ``threads`` sets ``intra_op_num_threads`` (``inter_op`` is 1 and the
execution mode sequential: these graphs are a chain). With ``threads=1`` (the default) ORT
runs the graph on the calling thread and creates no pool. With more, pool workers by
default SPIN after each run waiting for the next; weir shares its process (and, with one
worker per core, its core) with the asyncio loop, so spinning is OFF here
(``session.intra_op.allow_spinning`` and ``session.inter_op.allow_spinning`` = ``0``)
unless ``spinning=True``. Measured with ``python -m bench.engines`` (2-core host shared
with other work, ORT 1.32, MLP 64-128-64-3), bucket 8 paced at 1 kHz from a worker thread
beside a stand-in loop thread, three runs: threads=2 with spinning used 0.63 / 0.84 /
1.22 cores against 0.27 / 0.22 / 0.22 without (0.4 to 1.0 core burnt while idle), for no
latency gain (infer p50 31-51 vs 34-35 us, p99 353-416 vs 408-671 us: noise); the loop's
wake-up lag p99 was 1.2x to 15x worse with spinning. With one worker process per core
that core belongs to another worker's loop. Closed loop, threads=1 is as fast as or
faster than threads=2 at every bucket (p50 4.0 us at bucket 1, 22-23 us at bucket 64,
against 30-42 us for threads=2), so 1 is the default.

``infer`` calls ``run_with_iobinding`` WITHOUT ``RunOptions``: with one, ORT 1.32's Python
wrapper looks up an unset run-config key and swallows the RuntimeError, ~40 us per call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import onnxruntime as ort

from engines.base import DEFAULT_MAX_BATCH
from engines.bucket import _BucketEngine
from engines.errors import EngineError

if TYPE_CHECKING:
    from engines.bundle import Bundle
    from engines.profile import LatencyProfile

GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
DEFAULT_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)


def session_options(
    *, threads: int = 1, spinning: bool = False, optimization: str = "all"
) -> ort.SessionOptions:
    """The SessionOptions weir runs with (see the module docstring for the choices)."""
    if threads < 1:
        raise EngineError(f"onnx engine: threads must be >= 1, got {threads}")
    try:
        level = GRAPH_OPTIMIZATION[optimization]
    except KeyError:
        raise EngineError(
            f"onnx engine: unknown optimization {optimization!r}; "
            f"choose from {sorted(GRAPH_OPTIMIZATION)}"
        ) from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = level
    so.log_severity_level = 3
    spin = "1" if spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return so


def _width(shape: Sequence[Any]) -> int | None:
    if len(shape) != 2:
        return None
    last = shape[1]
    return last if isinstance(last, int) else None


class OnnxEngine(_BucketEngine):
    """ONNX Runtime engine on preallocated, IO-bound per-bucket buffers."""

    kind: ClassVar[str] = "onnx"

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        threads: int = 1,
        spinning: bool = False,
        optimization: str = "all",
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        input_name: str | None = None,
        output_name: str | None = None,
        precision: str = "fp32",
        model_version: str = "unknown",
        profile: LatencyProfile | None = None,
        observe: bool = True,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._threads = threads
        self._spinning = spinning
        self._optimization = optimization
        self._providers = tuple(providers)
        so = session_options(threads=threads, spinning=spinning, optimization=optimization)
        src = model if isinstance(model, bytes) else os.fspath(model)
        try:
            self._session = ort.InferenceSession(src, sess_options=so, providers=list(providers))
        except Exception as exc:  # ORT raises untyped errors: wrapped
            where = "<bytes>" if isinstance(model, bytes) else os.fspath(model)
            raise EngineError(f"onnx engine: cannot load {where}: {exc}") from exc
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        self._in_name = input_name or inputs[0].name
        self._out_name = output_name or outputs[0].name
        in_meta = {i.name: i for i in inputs}
        out_meta = {o.name: o for o in outputs}
        if self._in_name not in in_meta or self._out_name not in out_meta:
            raise EngineError(
                f"onnx engine: model has inputs {sorted(in_meta)} and outputs "
                f"{sorted(out_meta)}; asked for {self._in_name!r} -> {self._out_name!r}"
            )
        if len(inputs) != 1:
            raise EngineError(
                f"onnx engine: expected one input [batch, n_features], got {sorted(in_meta)}"
            )
        n_features = _width(in_meta[self._in_name].shape)
        if n_features is None:
            raise EngineError(
                f"onnx engine: input {self._in_name!r} must be [batch, n_features] with a "
                f"fixed n_features, got {in_meta[self._in_name].shape}"
            )
        n_outputs = _width(out_meta[self._out_name].shape)
        if n_outputs is None:
            probe = self._session.run(
                [self._out_name], {self._in_name: np.zeros((1, n_features), np.float32)}
            )[0]
            n_outputs = int(np.asarray(probe).shape[-1])
        self._bindings: dict[int, ort.IOBinding] = {}
        self._ortvalues: list[ort.OrtValue] = []  # keep the shared-memory wrappers alive
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        super().__init__(
            n_features=n_features,
            n_outputs=n_outputs,
            max_batch=max_batch,
            precision=precision,
            device="cpu",
            model_version=model_version,
            profile=profile,
            observe=observe,
            **kwargs,
        )

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        precision: str = "fp32",
        max_batch: int = DEFAULT_MAX_BATCH,
        **options: Any,
    ) -> OnnxEngine:
        """Build from a verified bundle's ONNX model of ``precision``."""
        meta = bundle.metadata
        options.setdefault("input_name", meta.inputs[0].name if meta.inputs else None)
        options.setdefault("output_name", meta.outputs[0].name if meta.outputs else None)
        stored = bundle.stored_profile(cls.kind, precision, "cpu")
        if stored is not None and stored.max_batch == max_batch:
            options.setdefault("profile", stored)
        engine = cls(
            bundle.model_path(precision),
            max_batch=max_batch,
            precision=precision,
            model_version=meta.model_version,
            **options,
        )
        if engine.n_features != meta.n_features:
            engine.close()
            raise EngineError(
                f"bundle {bundle.path}: model takes {engine.n_features} features, "
                f"metadata says {meta.n_features}"
            )
        return engine

    def _bind(self, bucket: int) -> None:
        binding = self._session.io_binding()
        inp = ort.OrtValue.ortvalue_from_numpy(self._inputs[bucket])
        out = ort.OrtValue.ortvalue_from_numpy(self._outputs[bucket])
        binding.bind_ortvalue_input(self._in_name, inp)
        binding.bind_ortvalue_output(self._out_name, out)
        self._ortvalues += [inp, out]
        self._bindings[bucket] = binding

    def _run(self, bucket: int) -> None:
        try:
            # No RunOptions on purpose (see the module docstring): ~40 us per call.
            self._session.run_with_iobinding(self._bindings[bucket])
        except Exception as exc:  # ORT raises untyped errors: wrapped
            raise EngineError(f"onnx engine: bucket {bucket} failed: {exc}") from exc

    def _versions(self) -> dict[str, str]:
        return {"numpy": np.__version__, "onnxruntime": ort.__version__}

    def _options(self) -> dict[str, str]:
        return {
            "threads": str(self._threads),
            "spinning": str(self._spinning).lower(),
            "optimization": self._optimization,
            "providers": ",".join(self._providers),
            "input": self._in_name,
            "output": self._out_name,
        }

    def _release(self) -> None:
        self._bindings.clear()
        self._ortvalues.clear()

    @property
    def session(self) -> ort.InferenceSession:
        """The underlying session (for parity checks; do not run it concurrently)."""
        return self._session
