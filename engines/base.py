"""The engine seam: a compiled model that runs fixed-size batch buckets.

Call contract of every :class:`Engine`
--------------------------------------
Construction
    From a verified :class:`engines.bundle.Bundle` with ``engines.registry.load_engine``
    (or the implementation's ``from_bundle``), or directly from a model (ONNX path, an
    ``nn.Module``). Construction allocates every buffer the engine will ever use: one
    float32 input ``[bucket, n_features]`` and one float32 output ``[bucket, n_outputs]``
    per bucket, buckets being ``bucket_sizes(max_batch)`` = 1, 2, 4, ... ``max_batch``.
    It may take seconds (sessions, TensorRT plans, CUDA graphs): do it before serving.

``warm_up(iterations=...)``
    Runs every bucket ``iterations`` times on random input and installs a fresh
    :class:`LatencyProfile` (p50/p99/p99.9 per bucket) measured from those runs. Blocks.
    Until then ``profile`` is the one passed at construction (e.g. the bundle's stored
    profile for this engine) or raises :class:`EngineError`.

``input_buffer(bucket) -> ndarray``
    The preallocated, C-contiguous float32 ``[bucket, n_features]`` input of ``bucket``;
    the same object on every call. The caller writes rows ``0..n-1`` into it in place.

``infer(bucket, n_rows=None) -> ndarray``
    Runs ``bucket`` on its input buffer and returns a read-only view ``[n_rows, n_outputs]``
    of the bucket's preallocated output (``n_rows`` defaults to ``bucket``). Rows
    ``n_rows..bucket-1`` are padding: ``infer`` ZEROES them before running, so stale rows
    of an earlier batch never reach the model and the real rows' outputs equal an
    unpadded run's (every model here is row-independent). No array is allocated per call:
    the view for a given ``(bucket, n_rows)`` is built once and returned again, and it is
    overwritten by the next ``infer`` of the same bucket, so copy what must outlive it.
    ``infer`` then records the call's wall time with ``profile.observe(bucket, ns)`` (and
    in ``last_latency_ns``), so the profile follows the real load.

    Threads: ``infer`` BLOCKS the calling thread for the whole run (CPU-bound on ORT and
    torch-CPU; a stream synchronize on GPU engines). It is not re-entrant: one caller at a
    time per engine (the buffers are shared). Call it from the thread that owns the
    engine; an event loop that must stay responsive runs it in one dedicated worker
    thread. The profile is updated on the calling thread; each quantile read is a single
    list lookup, so a reader on another thread sees either the old or the new figure.

``profile``
    The current :class:`LatencyProfile`.

``describe() -> EngineInfo``
    What runs: kind, precision, device, runtime library versions, model version, options.

``close()``
    Releases native resources (device memory, CUDA graphs, sessions). Idempotent.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
import numpy as np

from engines.profile import LatencyProfile

DEFAULT_MAX_BATCH = 64
DEFAULT_WARMUP_ITERATIONS = 200

FloatArray = np.ndarray[Any, np.dtype[np.float32]]


class EngineInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine runs and on what: printed by ``weir model describe``, kept in logs."""

    kind: str
    precision: str
    device: str
    model_version: str
    n_features: int
    n_outputs: int
    buckets: tuple[int, ...]
    versions: dict[str, str]
    options: dict[str, str] = {}


class Engine(Protocol):
    """A compiled model run on preallocated per-bucket buffers (see the module docstring)."""

    @property
    def n_features(self) -> int:
        """Width of one input row."""
        ...

    @property
    def n_outputs(self) -> int:
        """Width of one output row."""
        ...

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch buckets, ascending: 1, 2, 4, ... max_batch."""
        ...

    @property
    def max_batch(self) -> int:
        """The largest bucket."""
        ...

    @property
    def precision(self) -> str:
        """Numeric precision of the compiled model (``fp32``, ``fp16``, ``int8``)."""
        ...

    @property
    def profile(self) -> LatencyProfile:
        """Current latency profile; raises EngineError before warm-up if none was given."""
        ...

    @property
    def last_latency_ns(self) -> int:
        """Wall time of the latest ``infer`` in ns (0 before the first)."""
        ...

    @property
    def observe(self) -> bool:
        """Whether ``infer`` records its own latency in ``profile``."""
        ...

    @observe.setter
    def observe(self, value: bool) -> None: ...

    def bucket_for(self, n_rows: int) -> int:
        """Smallest bucket holding ``n_rows`` rows."""
        ...

    def input_buffer(self, bucket: int) -> FloatArray:
        """The preallocated float32 ``[bucket, n_features]`` input of ``bucket``."""
        ...

    def output_buffer(self, bucket: int) -> FloatArray:
        """The whole preallocated float32 ``[bucket, n_outputs]`` output of ``bucket``."""
        ...

    def infer(self, bucket: int, n_rows: int | None = None) -> FloatArray:
        """Run ``bucket``; return the view ``[n_rows, n_outputs]`` of its output buffer."""
        ...

    def warm_up(self, iterations: int = DEFAULT_WARMUP_ITERATIONS) -> LatencyProfile:
        """Time every bucket and install the measured profile."""
        ...

    def describe(self) -> EngineInfo:
        """Kind, precision, device, versions, model version and options."""
        ...

    def close(self) -> None:
        """Release native resources; idempotent."""
        ...
