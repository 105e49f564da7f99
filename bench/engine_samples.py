"""Latency samples (ns per bucket) of the engines ``bench.scheduler`` plans with.

A small MLP (``n_in``-64-32-3, random weights) built as ONNX and timed on ONNX Runtime on
one thread (``MlpEngine``, ``measure_ort``), an
assumed GPU-like profile (``gpu_like``), or samples saved as JSON (``load_profile``).
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

import numpy as np

from engines.profile import bucket_sizes

N_FEATURES = 64
Samples = dict[int, np.ndarray]
"""Bucket -> latency samples in ns."""


def build_mlp(n_in: int = N_FEATURES) -> bytes:
    """An ``n_in``-64-32-3 MLP with a dynamic batch axis, random weights, as ONNX bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [n_in, 64, 32, 3]
    inits, nodes, prev = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"),
        ]
        out = "y" if i == len(dims) - 2 else f"h{i}"
        gemm = f"g{i}" if out != "y" else "y"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [gemm]))
        if out != "y":
            nodes.append(helper.make_node("Relu", [gemm], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


class MlpEngine:
    """ONNX Runtime on one thread, fed rows of a fixed feature matrix by index."""

    def __init__(self, n_rows: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(build_mlp(), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(1)
        self.x = rng.standard_normal((max(n_rows, 256), N_FEATURES)).astype(np.float32)

    def infer(self, rows: list[int]) -> np.ndarray:
        """Gather the rows and run the model (what one dispatch costs)."""
        out: np.ndarray = self.sess.run(None, {"x": self.x[rows]})[0]
        return out


def measure_ort(engine: MlpEngine, max_batch: int, reps: int) -> tuple[Samples, Samples]:
    """Time gather + run per bucket (ns) after a warm-up: wall time and thread CPU time.

    With one intra-op thread ORT runs on the calling thread, so its CPU time is what the
    call takes on a dedicated core; wall time adds whatever else this host is running.
    """
    wall: Samples = {}
    cpu: Samples = {}
    rng = random.Random(2)
    n = engine.x.shape[0]
    mono, thread = time.monotonic_ns, time.thread_time_ns
    for b in bucket_sizes(max_batch):
        rows = [rng.randrange(n) for _ in range(b)]
        for _ in range(100):
            engine.infer(rows)
        w = np.empty(reps, dtype=np.int64)
        c = np.empty(reps, dtype=np.int64)
        for r in range(reps):
            t0, c0 = mono(), thread()
            engine.infer(rows)
            c[r], w[r] = thread() - c0, mono() - t0
        wall[b], cpu[b] = w, c
    return wall, cpu


GPU_NOTE = "GPU-like (assumed): 80 us + 0.15 us/row, lognormal sigma 0.05, 0.5% x1.5-3 tail"


def gpu_like(max_batch: int, reps: int = 5000) -> Samples:
    """The assumed GPU-like profile (see ``GPU_NOTE``)."""
    rng = np.random.default_rng(3)
    out: Samples = {}
    for b in bucket_sizes(max_batch):
        base = 80_000 + 150 * b
        s = base * rng.lognormal(0.0, 0.05, reps)
        tail = rng.random(reps) < 0.005
        s[tail] *= rng.uniform(1.5, 3.0, int(tail.sum()))
        out[b] = s.astype(np.int64)
    return out


def load_profile(path: Path) -> Samples:
    """Samples from JSON: ``{"samples_ns": {"1": [...]}}`` or a list of bucket quantiles
    (``[{"bucket", "p50_ns", "p99_ns", "p999_ns"}, ...]``, turned into 1000 samples each)."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "samples_ns" in data:
        return {int(b): np.asarray(v, dtype=np.int64) for b, v in data["samples_ns"].items()}
    out: Samples = {}
    for s in data:
        arr = np.empty(1000, dtype=np.int64)
        arr[:990], arr[990:999], arr[999:] = s["p50_ns"], s["p99_ns"], s["p999_ns"]
        out[int(s["bucket"])] = arr
    return out


def describe(samples: Samples) -> str:
    """p50/p99/p99.9 in us for a few buckets."""
    parts = []
    for b in sorted(samples):
        q = np.percentile(samples[b], [50, 99, 99.9]) / 1e3
        parts.append(f"{b}:{q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}")
    return "p50/p99/p99.9 us per bucket  " + "  ".join(parts)
