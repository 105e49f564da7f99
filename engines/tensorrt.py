"""TensorRT 10 engine: a plan per host, one profile, context and CUDA graph per bucket.

Building. ``build_plan`` parses the bundle's ONNX with ``trt.OnnxParser`` into an
explicit-batch network (the only kind TensorRT 10 has; created with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` when ``strongly_typed=True``, which takes
every tensor type from the ONNX, e.g. a Q/DQ INT8 model, and forbids precision flags;
otherwise ``fp16``/``int8`` set ``BuilderFlag.FP16``/``INT8``). It adds ONE OPTIMIZATION
PROFILE PER BUCKET with min = opt = max = ``[bucket, n_features]``, so every bucket gets
kernels tuned for its exact shape, and reuses/persists a timing cache next to the plans.

Keying. A plan only runs where it was built: it is stored as
``plans/<model>.<precision>.<gpu>.sm<cc>.trt<version>.b<max>.plan`` with a JSON sidecar
(:class:`PlanSidecar`) holding the :class:`PlanKey` (GPU model name, compute capability,
TensorRT version), the ONNX file's sha256, the buckets and the plan's own sha256. Before
deserialising, :func:`check_plan` compares the sidecar with this host and refuses a
mismatch with a :class:`BundleError` naming both keys. The key logic is pure functions,
tested without TensorRT.

Running. CUDA calls go through cuda-python's runtime bindings (``cuda.bindings.runtime``,
or ``cuda.cudart`` on cuda-python < 12.6); CuPy and torch are not used. The engine owns a
non-blocking CUDA stream, pinned host buffers (``cudaMallocHost``) that back the
``input_buffer``/output arrays, and device buffers per bucket. Bucket ``i`` has its own
execution context on optimization profile ``i`` with ``set_input_shape`` and
``set_tensor_address`` done once, and one CUDA graph captured (thread-local capture
mode, after one un-captured ``execute_async_v3`` as TensorRT requires) around: copy
host->device, ``execute_async_v3``, copy device->host. ``infer`` replays the bucket's
graph and synchronises the stream: it blocks the calling thread until the result is in
the pinned output buffer. Buffers are freed by ``close``; arrays obtained before are then
invalid.

``tensorrt`` and ``cuda`` are imported lazily (only when an engine is built or loaded).
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
import numpy as np

from engines.base import DEFAULT_MAX_BATCH, FloatArray
from engines.bucket import _BucketEngine
from engines.errors import BundleError, EngineError
from engines.profile import bucket_sizes

if TYPE_CHECKING:
    from engines.bundle import Bundle
    from engines.profile import LatencyProfile

DEFAULT_WORKSPACE_BYTES = 1 << 30


class PlanKey(msgspec.Struct, frozen=True, kw_only=True):
    """What a TensorRT plan is tied to: GPU model, compute capability, TensorRT version."""

    gpu_name: str
    compute_capability: str
    tensorrt_version: str

    def describe(self) -> str:
        """E.g. ``NVIDIA H200 (sm_90), TensorRT 10.3.0``."""
        sm = self.compute_capability.replace(".", "")
        return f"{self.gpu_name} (sm_{sm}), TensorRT {self.tensorrt_version}"


class PlanSidecar(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON written next to a plan: its key, what it was built from, its hash."""

    key: PlanKey
    onnx_file: str
    onnx_sha256: str
    precision: str
    strongly_typed: bool
    buckets: list[int]
    plan_sha256: str
    built_wall_ns: int = 0
    versions: dict[str, str] = {}


_SIDECAR_DECODER = msgspec.json.Decoder(PlanSidecar)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def plan_stem(model_file: str, precision: str, key: PlanKey, max_batch: int) -> str:
    """File stem of a plan, e.g. ``student.fp16.nvidia-h200.sm90.trt10.3.0.b64``."""
    sm = key.compute_capability.replace(".", "")
    return (
        f"{Path(model_file).stem}.{precision}.{_slug(key.gpu_name)}.sm{sm}"
        f".trt{key.tensorrt_version}.b{max_batch}"
    )


def plan_files(plans_dir: Path, stem: str) -> tuple[Path, Path]:
    """(plan path, sidecar path) for ``stem``."""
    return plans_dir / f"{stem}.plan", plans_dir / f"{stem}.json"


def timing_cache_file(plans_dir: Path, key: PlanKey) -> Path:
    """Where the timing cache of ``key``'s GPU and TensorRT version is kept."""
    sm = key.compute_capability.replace(".", "")
    return plans_dir / f"timing.{_slug(key.gpu_name)}.sm{sm}.trt{key.tensorrt_version}.cache"


def read_sidecar(path: Path) -> PlanSidecar:
    """Decode a plan sidecar; BundleError if missing or malformed."""
    try:
        return _SIDECAR_DECODER.decode(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"plan sidecar {path} is missing") from None
    except msgspec.DecodeError as exc:
        raise BundleError(f"plan sidecar {path} is invalid: {exc}") from exc


def check_plan(
    sidecar: PlanSidecar,
    *,
    plan: Path,
    host: PlanKey,
    onnx_sha256: str,
    precision: str,
    buckets: Sequence[int],
) -> None:
    """Refuse a plan built elsewhere, from another model, precision or bucket set."""
    if sidecar.key != host:
        raise BundleError(
            f"plan {plan}: built for {sidecar.key.describe()}, this host is "
            f"{host.describe()}; rebuild the plan on this host"
        )
    if sidecar.onnx_sha256 != onnx_sha256:
        raise BundleError(
            f"plan {plan}: built from {sidecar.onnx_file} sha256 {sidecar.onnx_sha256}, "
            f"the bundle's model is sha256 {onnx_sha256}; rebuild the plan"
        )
    if sidecar.precision != precision:
        raise BundleError(
            f"plan {plan}: built for precision {sidecar.precision}, asked for {precision}"
        )
    if list(buckets) != sidecar.buckets:
        raise BundleError(
            f"plan {plan}: built for buckets {sidecar.buckets}, asked for {list(buckets)}"
        )


def verify_plan_bytes(plan: Path, sidecar: PlanSidecar) -> bytes:
    """Read a plan and check it against its sidecar's sha256."""
    raw = plan.read_bytes()
    got = hashlib.sha256(raw).hexdigest()
    if got != sidecar.plan_sha256:
        raise BundleError(
            f"plan {plan}: hash mismatch: expected sha256 {sidecar.plan_sha256}, got {got}"
        )
    return raw


def write_plan(plans_dir: Path, stem: str, raw: bytes, sidecar: PlanSidecar) -> Path:
    """Write a plan and its sidecar (sidecar last, so a half-written plan is never used)."""
    plans_dir.mkdir(parents=True, exist_ok=True)
    plan, side = plan_files(plans_dir, stem)
    plan.write_bytes(raw)
    side.write_bytes(msgspec.json.format(msgspec.json.encode(sidecar), indent=2) + b"\n")
    return plan


# -- lazy imports and CUDA helpers --------------------------------------------------------


def _import_trt() -> Any:
    try:
        import tensorrt as trt  # optional GPU dependency
    except ImportError as exc:
        raise EngineError(
            "tensorrt engine needs the tensorrt package (pip install 'weir[gpu]')"
        ) from exc
    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise EngineError(
                "tensorrt engine needs cuda-python (pip install 'weir[gpu]')"
            ) from exc
    return cudart


def _check(cudart: Any, result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; raise EngineError on error."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1]
        raise EngineError(f"tensorrt engine: {what} failed: {name!r}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _gpu(cudart: Any, device: int) -> tuple[str, str]:
    """(model name, compute capability ``major.minor``) of GPU ``device``."""
    prop = _check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode()
    return str(name).strip(), f"{prop.major}.{prop.minor}"


def host_plan_key(device: int = 0) -> PlanKey:
    """This host's plan key: GPU ``device``'s name and compute capability, TensorRT version."""
    trt = _import_trt()
    name, cc = _gpu(_import_cudart(), device)
    return PlanKey(gpu_name=name, compute_capability=cc, tensorrt_version=str(trt.__version__))


def build_plan(
    onnx_path: Path,
    *,
    buckets: Sequence[int],
    precision: str = "fp32",
    strongly_typed: bool = False,
    timing_cache: Path | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    input_name: str | None = None,
) -> bytes:
    """Build a serialised plan from ``onnx_path`` with one optimization profile per bucket."""
    trt = _import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"tensorrt engine: cannot parse {onnx_path}: {errors}")
    inp = network.get_input(0) if input_name is None else None
    if inp is None:
        for i in range(network.num_inputs):
            if network.get_input(i).name == input_name:
                inp = network.get_input(i)
    if inp is None or len(inp.shape) != 2 or inp.shape[1] < 1:
        raise EngineError(
            f"tensorrt engine: {onnx_path} needs an input [batch, n_features] named {input_name!r}"
        )
    n_features = int(inp.shape[1])
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not strongly_typed:
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ in the ONNX
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision != "fp32":
            raise EngineError(f"tensorrt engine: unknown precision {precision!r}")
    for b in buckets:
        profile = builder.create_optimization_profile()
        shape = (b, n_features)
        profile.set_shape(inp.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"tensorrt engine: building a plan from {onnx_path} failed")
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()).tobytes())
    return memoryview(serialized).tobytes()


class TensorRTEngine(_BucketEngine):
    """TensorRT plan run through one CUDA graph per bucket (see the module docstring)."""

    kind: ClassVar[str] = "tensorrt"

    def __init__(
        self,
        plan: bytes,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        device: int = 0,
        precision: str = "fp32",
        model_version: str = "unknown",
        input_name: str | None = None,
        output_name: str | None = None,
        cuda_graphs: bool = True,
        profile: LatencyProfile | None = None,
        observe: bool = True,
        clock: Callable[[], int] | None = None,
    ) -> None:
        trt = _import_trt()
        cudart = _import_cudart()
        self._trt = trt
        self._cudart = cudart
        self._gpu = device
        self._cuda_graphs = cuda_graphs
        self._host_ptrs: list[int] = []
        self._dev_ptrs: list[int] = []
        self._contexts: dict[int, Any] = {}
        self._graphs: dict[int, Any] = {}
        self._graph_execs: dict[int, Any] = {}
        self._dev_in: dict[int, int] = {}
        self._dev_out: dict[int, int] = {}
        self._host_in: dict[int, int] = {}
        self._host_out: dict[int, int] = {}
        _check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
        self._stream = _check(
            cudart,
            cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
            "cudaStreamCreateWithFlags",
        )
        self._stream_handle = int(self._stream)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineError("tensorrt engine: the plan does not deserialise on this host")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        ins = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._in_name = input_name or ins[0]
        self._out_name = output_name or outs[0]
        if len(ins) != 1 or self._in_name not in ins or self._out_name not in outs:
            raise EngineError(
                f"tensorrt engine: plan has inputs {ins} and outputs {outs}; "
                f"asked for {self._in_name!r} -> {self._out_name!r}"
            )
        for n in (self._in_name, self._out_name):
            if self._engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise EngineError(f"tensorrt engine: tensor {n!r} must be float32")
        buckets = bucket_sizes(max_batch)
        if self._engine.num_optimization_profiles != len(buckets):
            raise EngineError(
                f"tensorrt engine: plan has {self._engine.num_optimization_profiles} "
                f"optimization profiles, buckets {list(buckets)} need one each"
            )
        n_features = int(self._engine.get_tensor_shape(self._in_name)[1])
        probe = self._engine.create_execution_context()
        probe.set_optimization_profile_async(0, self._stream_handle)
        probe.set_input_shape(self._in_name, (1, n_features))
        n_outputs = int(probe.get_tensor_shape(self._out_name)[-1])
        del probe
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        gpu_name, _ = _gpu(cudart, device)
        super().__init__(
            n_features=n_features,
            n_outputs=n_outputs,
            max_batch=max_batch,
            precision=precision,
            device=f"cuda:{device} {gpu_name}",
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
        device: int = 0,
        build: bool = True,
        strongly_typed: bool = False,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
        **options: Any,
    ) -> TensorRTEngine:
        """Load this host's plan for the bundle's model, building it first if allowed."""
        key = host_plan_key(device)
        buckets = bucket_sizes(max_batch)
        onnx_path = bundle.model_path(precision)
        onnx_sha = bundle.model_sha256(precision)
        stem = plan_stem(onnx_path.name, precision, key, max_batch)
        plan_path, side_path = plan_files(bundle.plans_dir, stem)
        if plan_path.is_file():
            sidecar = read_sidecar(side_path)
            check_plan(
                sidecar,
                plan=plan_path,
                host=key,
                onnx_sha256=onnx_sha,
                precision=precision,
                buckets=buckets,
            )
            raw = verify_plan_bytes(plan_path, sidecar)
        elif build:
            meta_in = bundle.metadata.inputs[0].name if bundle.metadata.inputs else None
            raw = build_plan(
                onnx_path,
                buckets=buckets,
                precision=precision,
                strongly_typed=strongly_typed,
                timing_cache=timing_cache_file(bundle.plans_dir, key),
                workspace_bytes=workspace_bytes,
                input_name=meta_in,
            )
            sidecar = PlanSidecar(
                key=key,
                onnx_file=onnx_path.name,
                onnx_sha256=onnx_sha,
                precision=precision,
                strongly_typed=strongly_typed,
                buckets=list(buckets),
                plan_sha256=hashlib.sha256(raw).hexdigest(),
                built_wall_ns=time.time_ns(),
            )
            write_plan(bundle.plans_dir, stem, raw, sidecar)
        else:
            others = sorted(p.name for p in bundle.plans_dir.glob("*.plan"))
            raise BundleError(
                f"bundle {bundle.path}: no TensorRT plan {plan_path.name} for "
                f"{key.describe()}; plans present: {others or 'none'}"
            )
        meta = bundle.metadata
        stored = bundle.stored_profile(cls.kind, precision, f"cuda:{device} {key.gpu_name}")
        if stored is not None and stored.max_batch == max_batch:
            options.setdefault("profile", stored)
        return cls(
            raw,
            max_batch=max_batch,
            device=device,
            precision=precision,
            model_version=meta.model_version,
            input_name=meta.inputs[0].name if meta.inputs else None,
            output_name=meta.outputs[0].name if meta.outputs else None,
            **options,
        )

    # -- buffers, binding, graphs ------------------------------------------------------

    def _alloc(self, shape: tuple[int, int]) -> FloatArray:
        count = shape[0] * shape[1]
        ptr = _check(self._cudart, self._cudart.cudaMallocHost(count * 4), "cudaMallocHost")
        self._host_ptrs.append(int(ptr))
        buf = (ctypes.c_float * count).from_address(int(ptr))
        arr: FloatArray = np.frombuffer(memoryview(buf), dtype=np.float32).reshape(shape)
        return arr

    def _device_alloc(self, nbytes: int) -> int:
        ptr = int(_check(self._cudart, self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
        self._dev_ptrs.append(ptr)
        return ptr

    def _enqueue(self, bucket: int) -> None:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        inp, out = self._inputs[bucket], self._outputs[bucket]
        _check(
            cudart,
            cudart.cudaMemcpyAsync(
                self._dev_in[bucket], self._host_in[bucket], inp.nbytes, h2d, self._stream
            ),
            "cudaMemcpyAsync",
        )
        if not self._contexts[bucket].execute_async_v3(self._stream_handle):
            raise EngineError(f"tensorrt engine: execute_async_v3 failed for bucket {bucket}")
        _check(
            cudart,
            cudart.cudaMemcpyAsync(
                self._host_out[bucket], self._dev_out[bucket], out.nbytes, d2h, self._stream
            ),
            "cudaMemcpyAsync",
        )

    def _bind(self, bucket: int) -> None:
        cudart = self._cudart
        index = self._buckets.index(bucket)
        ctx = self._engine.create_execution_context()
        if ctx is None:
            raise EngineError(f"tensorrt engine: no execution context for bucket {bucket}")
        ctx.set_optimization_profile_async(index, self._stream_handle)
        if not ctx.set_input_shape(self._in_name, (bucket, self._n_features)):
            raise EngineError(f"tensorrt engine: profile {index} rejects bucket {bucket}")
        self._dev_in[bucket] = self._device_alloc(self._inputs[bucket].nbytes)
        self._dev_out[bucket] = self._device_alloc(self._outputs[bucket].nbytes)
        self._host_in[bucket] = int(self._inputs[bucket].ctypes.data)
        self._host_out[bucket] = int(self._outputs[bucket].ctypes.data)
        ctx.set_tensor_address(self._in_name, self._dev_in[bucket])
        ctx.set_tensor_address(self._out_name, self._dev_out[bucket])
        self._contexts[bucket] = ctx
        # One un-captured run flushes TensorRT's deferred shape work before capture.
        self._enqueue(bucket)
        _check(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        if not self._cuda_graphs:
            return
        _check(
            cudart,
            cudart.cudaStreamBeginCapture(
                self._stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            ),
            "cudaStreamBeginCapture",
        )
        try:
            self._enqueue(bucket)
        finally:
            graph = _check(cudart, cudart.cudaStreamEndCapture(self._stream), "EndCapture")
        self._graphs[bucket] = graph
        self._graph_execs[bucket] = _check(
            cudart, cudart.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate"
        )

    def _run(self, bucket: int) -> None:
        cudart = self._cudart
        if self._cuda_graphs:
            err = cudart.cudaGraphLaunch(self._graph_execs[bucket], self._stream)
            if err[0] != cudart.cudaError_t.cudaSuccess:
                _check(cudart, err, f"cudaGraphLaunch (bucket {bucket})")
        else:
            self._enqueue(bucket)
        err = cudart.cudaStreamSynchronize(self._stream)
        if err[0] != cudart.cudaError_t.cudaSuccess:
            _check(cudart, err, f"cudaStreamSynchronize (bucket {bucket})")

    def _versions(self) -> dict[str, str]:
        cudart = self._cudart
        rt = _check(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
        drv = _check(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion")
        return {
            "numpy": np.__version__,
            "tensorrt": str(self._trt.__version__),
            "cuda_runtime": f"{rt // 1000}.{rt % 1000 // 10}",
            "cuda_driver": f"{drv // 1000}.{drv % 1000 // 10}",
        }

    def _options(self) -> dict[str, str]:
        return {
            "cuda_graphs": str(self._cuda_graphs).lower(),
            "profiles": "one per bucket",
            "input": self._in_name,
            "output": self._out_name,
        }

    def _release(self) -> None:
        cudart = self._cudart
        cudart.cudaStreamSynchronize(self._stream)
        for ex in self._graph_execs.values():
            cudart.cudaGraphExecDestroy(ex)
        for g in self._graphs.values():
            cudart.cudaGraphDestroy(g)
        self._graph_execs.clear()
        self._graphs.clear()
        self._contexts.clear()
        for p in self._dev_ptrs:
            cudart.cudaFree(p)
        for p in self._host_ptrs:
            cudart.cudaFreeHost(p)
        self._dev_ptrs.clear()
        self._host_ptrs.clear()
        cudart.cudaStreamDestroy(self._stream)
