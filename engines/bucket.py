"""The machinery every engine here shares: buffers, cached views, padding, timing, warm-up.

``_BucketEngine`` implements the call contract of :class:`engines.base.Engine` once; each
runtime (``onnx``, ``torch``, ``tensorrt``, ``fake``) subclasses it and supplies ``_run``.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np

from engines.base import DEFAULT_MAX_BATCH, DEFAULT_WARMUP_ITERATIONS, EngineInfo, FloatArray
from engines.errors import EngineError
from engines.profile import LatencyProfile, bucket_sizes

if TYPE_CHECKING:
    from types import TracebackType


class _BucketEngine(abc.ABC):
    """Shared machinery: buffers, cached views, padding, timing, profile, warm-up.

    A subclass allocates its runtime first, then calls ``super().__init__``; it may
    override ``_alloc`` (pinned host memory) and ``_bind`` (called once per bucket after
    allocation), and implements ``_run(bucket)``, which returns ``None`` (the wall time
    is measured) or a latency in ns to record instead (a virtual clock's fake engine).
    """

    kind: ClassVar[str] = "abstract"

    def __init__(
        self,
        *,
        n_features: int,
        n_outputs: int,
        max_batch: int = DEFAULT_MAX_BATCH,
        precision: str = "fp32",
        device: str = "cpu",
        model_version: str = "unknown",
        profile: LatencyProfile | None = None,
        observe: bool = True,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if n_features < 1 or n_outputs < 1:
            raise EngineError(
                f"{self.kind} engine: n_features and n_outputs must be >= 1, "
                f"got {n_features} and {n_outputs}"
            )
        self._n_features = n_features
        self._n_outputs = n_outputs
        self._buckets = bucket_sizes(max_batch)
        self._precision = precision
        self._device = device
        self._model_version = model_version
        self._observe = observe
        self._clock = clock
        self._last_ns = 0
        self._closed = False
        if profile is not None and profile.buckets != self._buckets:
            raise EngineError(
                f"{self.kind} engine: profile buckets {list(profile.buckets)} do not match "
                f"engine buckets {list(self._buckets)}"
            )
        self._profile = profile
        self._inputs: dict[int, FloatArray] = {}
        self._outputs: dict[int, FloatArray] = {}
        # Views built once: _out_views[b][n] is outputs[b][:n] (read-only), _pad_views[b][n]
        # is inputs[b][n:]; index 0 unused.
        self._out_views: dict[int, list[FloatArray]] = {}
        self._pad_views: dict[int, list[FloatArray]] = {}
        for b in self._buckets:
            inp = self._alloc((b, n_features))
            out = self._alloc((b, n_outputs))
            inp.fill(0.0)
            out.fill(0.0)
            self._inputs[b] = inp
            self._outputs[b] = out
            views: list[FloatArray] = [out[:0]]
            pads: list[FloatArray] = [inp[0:]]
            for n in range(1, b + 1):
                v = out[:n]
                v.flags.writeable = False
                views.append(v)
                pads.append(inp[n:])
            self._out_views[b] = views
            self._pad_views[b] = pads
        for b in self._buckets:
            self._bind(b)

    # -- hooks -------------------------------------------------------------------------

    def _alloc(self, shape: tuple[int, int]) -> FloatArray:
        """Allocate one host buffer (plain numpy here; pinned memory on GPU engines)."""
        return np.zeros(shape, dtype=np.float32)

    def _bind(self, bucket: int) -> None:  # noqa: B027 - optional hook, empty by default
        """Bind the bucket's buffers to the runtime (IOBinding, tensor addresses...)."""

    @abc.abstractmethod
    def _run(self, bucket: int) -> int | None:
        """Run ``bucket`` on its input buffer into its output buffer."""

    def _versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def _options(self) -> dict[str, str]:
        return {}

    def _release(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Free native resources (called once by ``close``)."""

    # -- the Engine protocol -------------------------------------------------------------

    @property
    def n_features(self) -> int:
        """Width of one input row."""
        return self._n_features

    @property
    def n_outputs(self) -> int:
        """Width of one output row."""
        return self._n_outputs

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch buckets, ascending."""
        return self._buckets

    @property
    def max_batch(self) -> int:
        """The largest bucket."""
        return self._buckets[-1]

    @property
    def precision(self) -> str:
        """Numeric precision of the compiled model (``fp32``, ``fp16``, ``int8``)."""
        return self._precision

    @property
    def profile(self) -> LatencyProfile:
        """Current latency profile; raises EngineError before warm-up if none was given."""
        if self._profile is None:
            raise EngineError(
                f"{self.kind} engine has no latency profile yet: call warm_up() first"
            )
        return self._profile

    @property
    def last_latency_ns(self) -> int:
        """Wall time (or reported time) of the latest ``infer`` in ns."""
        return self._last_ns

    @property
    def observe(self) -> bool:
        """Whether ``infer`` records its latency in ``profile`` (off when a scheduler does)."""
        return self._observe

    @observe.setter
    def observe(self, value: bool) -> None:
        self._observe = value

    def bucket_for(self, n_rows: int) -> int:
        """Smallest bucket holding ``n_rows`` rows."""
        for b in self._buckets:
            if b >= n_rows >= 1:
                return b
        raise EngineError(
            f"{self.kind} engine: batch of {n_rows} rows does not fit buckets {list(self._buckets)}"
        )

    def input_buffer(self, bucket: int) -> FloatArray:
        """The preallocated float32 ``[bucket, n_features]`` input of ``bucket``."""
        try:
            return self._inputs[bucket]
        except KeyError:
            raise self._no_bucket(bucket) from None

    def output_buffer(self, bucket: int) -> FloatArray:
        """The whole preallocated ``[bucket, n_outputs]`` output of ``bucket``."""
        try:
            return self._outputs[bucket]
        except KeyError:
            raise self._no_bucket(bucket) from None

    def _no_bucket(self, bucket: int) -> EngineError:
        return EngineError(
            f"{self.kind} engine: no bucket {bucket}; buckets are {list(self._buckets)}"
        )

    def infer(self, bucket: int, n_rows: int | None = None) -> FloatArray:
        """Run ``bucket``; return the view ``[n_rows, n_outputs]`` of its output buffer."""
        if self._closed:
            raise EngineError(f"{self.kind} engine is closed")
        views = self._out_views.get(bucket)
        if views is None:
            raise self._no_bucket(bucket)
        n = bucket if n_rows is None else n_rows
        if not 1 <= n <= bucket:
            raise EngineError(
                f"{self.kind} engine: n_rows must be in 1..{bucket} for bucket {bucket}, got {n}"
            )
        t0 = self._clock()
        if n < bucket:
            self._pad_views[bucket][n].fill(0.0)
        reported = self._run(bucket)
        dt = self._clock() - t0 if reported is None else reported
        self._last_ns = dt
        if self._observe and self._profile is not None:
            self._profile.observe(bucket, dt)
        return views[n]

    def warm_up(
        self, iterations: int = DEFAULT_WARMUP_ITERATIONS, *, seed: int = 0
    ) -> LatencyProfile:
        """Time every bucket ``iterations`` times and install the measured profile.

        A few untimed runs per bucket come first (first-run allocations, lazy kernels).
        The input buffers hold random normal rows while timing and are zeroed after.
        """
        if iterations < 1:
            raise EngineError(f"warm_up iterations must be >= 1, got {iterations}")
        rng = np.random.default_rng(seed)
        samples: dict[int, np.ndarray] = {}
        observe, self._observe = self._observe, False
        try:
            for b in self._buckets:
                inp = self._inputs[b]
                inp[...] = rng.standard_normal(inp.shape, dtype=np.float32)
                for _ in range(min(10, iterations)):
                    self.infer(b)
                times = np.empty(iterations, dtype=np.int64)
                for i in range(iterations):
                    self.infer(b)
                    times[i] = self._last_ns
                samples[b] = times
                inp.fill(0.0)
        finally:
            self._observe = observe
        self._profile = LatencyProfile(samples)
        return self._profile

    def describe(self) -> EngineInfo:
        """Kind, precision, device, versions, model version and options."""
        return EngineInfo(
            kind=self.kind,
            precision=self._precision,
            device=self._device,
            model_version=self._model_version,
            n_features=self._n_features,
            n_outputs=self._n_outputs,
            buckets=self._buckets,
            versions=self._versions(),
            options=self._options(),
        )

    def close(self) -> None:
        """Release native resources; idempotent."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
