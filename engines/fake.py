"""A fake engine with a configurable latency, and tiny ONNX models for tests and benches.

:class:`FakeEngine` honours the whole :class:`engines.base.Engine` contract (buffers,
padding, views, profile) without a runtime. Its outputs are a deterministic function of
its inputs, ``softmax(x @ W + b)`` with ``W``, ``b`` drawn from ``seed``, so a test can
check that every row got its own answer (:meth:`FakeEngine.expected`). Each call draws a
latency from a :class:`LatencyModel` with its own seeded generator, then either

- ``wait="none"``: returns at once and REPORTS the drawn time (recorded in the profile
  and ``last_latency_ns`` and passed to ``on_latency``, e.g. a virtual clock's advance);
- ``wait="sleep"``: sleeps until the drawn time has passed since the call began
  (``time.sleep``; coarse, yields the CPU and the GIL);
- ``wait="spin"``: busy-waits until then (precise, holds the CPU and the GIL).

In the two real modes the profile records the measured wall time, as a real engine does.
Failures are injected with ``fail_every=N`` (every N-th call raises) or a callable
``fail(call_index, bucket) -> bool``; call indices start at 1 and count failed calls.

``tiny_mlp_onnx`` builds a small softmax MLP with ``onnx.helper`` (onnx is a dev/train
dependency, imported on use) and ``write_tiny_bundle`` writes it as a bundle.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import msgspec
import numpy as np

from engines.base import DEFAULT_MAX_BATCH, FloatArray
from engines.bucket import _BucketEngine
from engines.bundle import Bundle, TensorSpec
from engines.errors import EngineError

if TYPE_CHECKING:
    from engines.profile import LatencyProfile

WaitMode = Literal["none", "sleep", "spin"]


class LatencyModel(msgspec.Struct, frozen=True, kw_only=True):
    """Latency of one fake call, in ns.

    The median of bucket ``b`` is ``per_bucket_ns[b]`` if given, else
    ``base_ns + per_row_ns * b``. Each draw multiplies it by ``exp(sigma * N(0, 1))``
    (lognormal; ``sigma=0`` gives a constant) and, with probability ``spike_prob``, by
    ``spike_factor`` (a GC pause, a preempted core, a cold cache).
    """

    base_ns: int = 50_000
    per_row_ns: int = 1_000
    per_bucket_ns: dict[int, int] = {}
    sigma: float = 0.0
    spike_prob: float = 0.0
    spike_factor: float = 10.0

    def median_ns(self, bucket: int) -> int:
        """The median latency of ``bucket`` before spikes."""
        return self.per_bucket_ns.get(bucket, self.base_ns + self.per_row_ns * bucket)

    def draw(self, bucket: int, rng: np.random.Generator) -> int:
        """One latency sample for ``bucket``; consumes the same draws whatever the model."""
        z = float(rng.standard_normal())
        u = float(rng.random())
        t = self.median_ns(bucket) * math.exp(self.sigma * z)
        if u < self.spike_prob:
            t *= self.spike_factor
        return max(0, round(t))


class FakeEngine(_BucketEngine):
    """An engine whose latency is drawn, not spent on a model (see the module docstring)."""

    kind: ClassVar[str] = "fake"

    def __init__(
        self,
        *,
        n_features: int,
        n_outputs: int = 3,
        max_batch: int = DEFAULT_MAX_BATCH,
        precision: str = "fp32",
        latency: LatencyModel | None = None,
        seed: int = 0,
        wait: WaitMode = "none",
        fail_every: int = 0,
        fail: Callable[[int, int], bool] | None = None,
        on_latency: Callable[[int], None] | None = None,
        model_version: str = "fake",
        profile: LatencyProfile | None = None,
        observe: bool = True,
    ) -> None:
        if wait not in ("none", "sleep", "spin"):
            raise EngineError(f"fake engine: wait must be none, sleep or spin, got {wait!r}")
        if fail_every < 0:
            raise EngineError(f"fake engine: fail_every must be >= 0, got {fail_every}")
        self._latency = latency or LatencyModel()
        self._seed = seed
        self._wait = wait
        self._fail_every = fail_every
        self._fail = fail
        self._on_latency = on_latency
        self._calls = 0
        self._lat_rng = np.random.default_rng([seed, 1])
        wrng = np.random.default_rng([seed, 0])
        self._w = (wrng.standard_normal((n_features, n_outputs)) / math.sqrt(n_features)).astype(
            np.float32
        )
        self._b = wrng.standard_normal(n_outputs).astype(np.float32)
        self._rowmax: dict[int, FloatArray] = {}
        self._rowsum: dict[int, FloatArray] = {}
        super().__init__(
            n_features=n_features,
            n_outputs=n_outputs,
            max_batch=max_batch,
            precision=precision,
            device="none",
            model_version=model_version,
            profile=profile,
            observe=observe,
        )

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        *,
        precision: str = "fp32",
        max_batch: int = DEFAULT_MAX_BATCH,
        **options: Any,
    ) -> FakeEngine:
        """A fake with the bundle's input/output widths and model version.

        It runs no model: ``precision`` only labels it (in ``describe()``) as the engine
        it stands in for.
        """
        meta = bundle.metadata
        return cls(
            n_features=meta.n_features,
            n_outputs=meta.n_outputs,
            max_batch=max_batch,
            precision=precision,
            model_version=meta.model_version,
            **options,
        )

    @property
    def latency(self) -> LatencyModel:
        """The latency model drawn from; assignable (e.g. to simulate a slowdown)."""
        return self._latency

    @latency.setter
    def latency(self, model: LatencyModel) -> None:
        self._latency = model

    @property
    def calls(self) -> int:
        """How many times ``infer`` ran (warm-up included)."""
        return self._calls

    def _bind(self, bucket: int) -> None:
        self._rowmax[bucket] = np.zeros((bucket, 1), dtype=np.float32)
        self._rowsum[bucket] = np.zeros((bucket, 1), dtype=np.float32)

    def _run(self, bucket: int) -> int | None:
        start = time.perf_counter_ns()
        self._calls += 1
        drawn = self._latency.draw(bucket, self._lat_rng)
        call = self._calls
        if (self._fail_every and call % self._fail_every == 0) or (
            self._fail is not None and self._fail(call, bucket)
        ):
            raise EngineError(f"fake engine: injected failure on call {call} (bucket {bucket})")
        out = self._outputs[bucket]
        rowmax = self._rowmax[bucket]
        rowsum = self._rowsum[bucket]
        np.matmul(self._inputs[bucket], self._w, out=out)
        np.add(out, self._b, out=out)
        np.max(out, axis=1, keepdims=True, out=rowmax)
        np.subtract(out, rowmax, out=out)
        np.exp(out, out=out)
        np.sum(out, axis=1, keepdims=True, out=rowsum)
        np.divide(out, rowsum, out=out)
        if self._on_latency is not None:
            self._on_latency(drawn)
        if self._wait == "none":
            return drawn
        # Real waiting counts the work above, so a call takes ~drawn in all (or the work
        # alone, if that is longer).
        end = start + drawn
        if self._wait == "sleep":
            remaining = end - time.perf_counter_ns()
            if remaining > 0:
                time.sleep(remaining / 1e9)
        else:
            while time.perf_counter_ns() < end:
                pass
        return None

    def expected(self, rows: np.ndarray) -> FloatArray:
        """What ``infer`` returns for ``rows`` (allocates; for tests)."""
        logits = np.asarray(rows, dtype=np.float32) @ self._w + self._b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        result: FloatArray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return result

    def _options(self) -> dict[str, str]:
        return {"wait": self._wait, "seed": str(self._seed), "fail_every": str(self._fail_every)}


def tiny_mlp_onnx(
    n_features: int = 64,
    hidden: Sequence[int] = (128, 64),
    n_outputs: int = 3,
    *,
    seed: int = 0,
    input_name: str = "input",
    output_name: str = "output",
    opset: int = 17,
) -> bytes:
    """A softmax MLP ``n_features -> hidden... -> n_outputs`` as ONNX bytes.

    Dense layers are ``MatMul`` + ``Add`` with ``Relu`` between them; the batch axis is
    dynamic (``batch``); weights are seeded normal / sqrt(fan_in). Needs the ``onnx``
    package (a dev/train dependency).
    """
    import onnx  # optional dependency, imported on use
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    widths = [n_features, *hidden, n_outputs]
    nodes: list[Any] = []
    inits: list[Any] = []
    x = input_name
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        w = (rng.standard_normal((fan_in, fan_out)) / math.sqrt(fan_in)).astype(np.float32)
        b = (0.1 * rng.standard_normal(fan_out)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"]))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"z{i}"]))
        x = f"z{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"h{i}"]))
            x = f"h{i}"
    nodes.append(helper.make_node("Softmax", [x], [output_name], axis=-1))
    graph = helper.make_graph(
        nodes,
        "weir_tiny_mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_outputs])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="weir"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    raw: bytes = model.SerializeToString()
    return raw


def write_tiny_bundle(
    path: str | os.PathLike[str],
    *,
    n_features: int = 8,
    hidden: Sequence[int] = (16,),
    n_outputs: int = 3,
    seed: int = 0,
    model_version: str = "tiny-1",
    extra_models: dict[str, bytes] | None = None,
) -> Bundle:
    """Write a bundle holding ``tiny_mlp_onnx(...)`` as its fp32 model; returns it loaded."""
    labels = [f"class_{i}" for i in range(n_outputs)]
    return Bundle.write(
        path,
        models={
            "fp32": tiny_mlp_onnx(n_features, hidden, n_outputs, seed=seed),
            **(extra_models or {}),
        },
        feature_spec={"kind": "opaque", "n_features": n_features},
        model_version=model_version,
        task="classification",
        n_features=n_features,
        n_outputs=n_outputs,
        inputs=[TensorSpec(name="input", shape=["batch", n_features])],
        outputs=[TensorSpec(name="output", shape=["batch", n_outputs])],
        labels=labels,
    )


def write_tiny_trading_bundle(
    path: str | os.PathLike[str], *, window: int, model_version: str
) -> Bundle:
    """Write a trading bundle (SELL/HOLD/BUY) over ``FeatureSpec(window=window)`` features
    holding ``tiny_mlp_onnx`` as its fp32 model, for tests and scenarios; returns it loaded."""
    from schemas.features import FeatureSpec, Task

    spec = FeatureSpec(task=Task.TRADING, window=window)
    return Bundle.write(
        path,
        models={"fp32": tiny_mlp_onnx(spec.n_features, (16,), 3)},
        feature_spec=msgspec.to_builtins(spec),
        model_version=model_version,
        task="trading",
        n_features=spec.n_features,
        n_outputs=3,
        labels=["SELL", "HOLD", "BUY"],
    )
