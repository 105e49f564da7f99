"""Model bundles: a directory of ONNX and JSON files whose hashes are checked on load.

Layout::

    bundle/
      metadata.json        BundleMetadata: version, task, labels, I/O, files + sha256, ...
      feature_spec.json    the feature spec (opaque JSON object here; schemas defines it)
      student.onnx         fp32 model (dynamic batch axis); more precisions as listed
      plans/               optional, written on GPU hosts: TensorRT plans (.plan), their
                           JSON sidecars and timing caches (.cache), checked by
                           engines.tensorrt against this host before use

No pickles, ever: ``Bundle.load`` refuses ``.pkl``/``.pickle``/``.pt``/``.pth``/... files
anywhere in the directory, a listed ONNX file whose bytes look like a pickle or a torch
zip, any file of another extension, any top-level ONNX/JSON file metadata does not list,
a listed file that is missing, and a listed file whose sha256 differs. Every refusal is a
:class:`BundleError` whose message starts with ``bundle <path>:`` and names the file.

Metadata is read tolerantly (unknown fields are ignored, so newer writers stay readable)
but a ``schema_version`` above :data:`SCHEMA_VERSION` is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from engines.errors import BundleError
from engines.profile import BucketStats, LatencyProfile

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
FEATURE_SPEC_FILE = "feature_spec.json"
PLANS_DIR = "plans"

_MODEL_EXTENSIONS = frozenset({".onnx", ".json"})
_PLAN_EXTENSIONS = frozenset({".plan", ".json", ".cache"})
_PICKLE_EXTENSIONS = frozenset(
    {".pkl", ".pickle", ".pt", ".pth", ".joblib", ".ckpt", ".npy", ".npz", ".bin"}
)
_CHUNK = 1 << 20


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One model input or output: name, shape (``"batch"`` for the dynamic axis), dtype."""

    name: str
    shape: list[int | str]
    dtype: str = "float32"


class FileDigest(msgspec.Struct, frozen=True, kw_only=True):
    """The sha256 (hex) and size of one bundle file."""

    sha256: str
    size_bytes: int


class ParityResult(msgspec.Struct, frozen=True, kw_only=True):
    """Agreement of one compiled engine/precision with the reference on held-out rows."""

    engine: str
    precision: str
    reference: str
    n_rows: int
    max_abs_diff: float
    argmax_agreement: float


class EngineProfile(msgspec.Struct, frozen=True, kw_only=True):
    """A latency profile measured for one engine, precision and device."""

    engine: str
    precision: str
    device: str
    buckets: list[BucketStats]
    options: dict[str, str] = {}
    measured_wall_ns: int = 0


class BundleMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """``metadata.json``: what the model is, which files make it and their hashes.

    ``models`` maps a precision (``fp32``, ``int8``...) to an ONNX file; ``files`` maps
    every listed file (models and feature spec included) to its digest.
    """

    model_version: str
    task: str
    n_features: int
    n_outputs: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    models: dict[str, str]
    files: dict[str, FileDigest]
    schema_version: int = SCHEMA_VERSION
    labels: list[str] = []
    feature_spec: str = FEATURE_SPEC_FILE
    metrics: dict[str, float] = {}
    parity: list[ParityResult] = []
    versions: dict[str, str] = {}
    profiles: list[EngineProfile] = []
    data: dict[str, Any] = {}
    created_wall_ns: int = 0


_META_DECODER = msgspec.json.Decoder(BundleMetadata)
_SPEC_DECODER = msgspec.json.Decoder(dict[str, Any])


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _looks_pickled(head: bytes) -> str | None:
    """Name the format if ``head`` starts like a pickle or a torch zip archive."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]})"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save)"
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Bundle:
    """A verified model bundle: its directory, metadata and feature spec."""

    __slots__ = ("feature_spec", "metadata", "path")

    def __init__(self, path: Path, metadata: BundleMetadata, feature_spec: dict[str, Any]):
        self.path = path
        self.metadata = metadata
        self.feature_spec = feature_spec

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, model_version={self.metadata.model_version!r})"

    # -- reading ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Bundle:
        """Read and verify a bundle directory; raise BundleError on any problem."""
        root = Path(path)
        where = f"bundle {root}"
        meta_path = root / METADATA_FILE
        if not root.is_dir():
            raise BundleError(f"{where}: not a directory")
        if not meta_path.is_file():
            raise BundleError(f"{where}: missing {METADATA_FILE}")
        try:
            meta = _META_DECODER.decode(meta_path.read_bytes())
        except msgspec.DecodeError as exc:
            raise BundleError(f"{where}: invalid {METADATA_FILE}: {exc}") from exc
        if meta.schema_version > SCHEMA_VERSION:
            raise BundleError(
                f"{where}: {METADATA_FILE} schema_version {meta.schema_version} is newer "
                f"than this weir reads ({SCHEMA_VERSION})"
            )
        cls._check_tree(root, meta)
        for name, digest in sorted(meta.files.items()):
            file = root / name
            if not file.is_file():
                raise BundleError(f"{where}: missing file {name} listed in {METADATA_FILE}")
            got = sha256_file(file)
            if got != digest.sha256:
                raise BundleError(
                    f"{where}: hash mismatch for {name}: expected sha256 {digest.sha256}, got {got}"
                )
        for precision, name in sorted(meta.models.items()):
            if name not in meta.files:
                raise BundleError(f"{where}: model {name} ({precision}) is not listed in files")
        if meta.feature_spec not in meta.files:
            raise BundleError(f"{where}: feature spec {meta.feature_spec} is not listed in files")
        try:
            spec = _SPEC_DECODER.decode((root / meta.feature_spec).read_bytes())
        except msgspec.DecodeError as exc:
            raise BundleError(f"{where}: invalid {meta.feature_spec}: {exc}") from exc
        return cls(root, meta, spec)

    @staticmethod
    def _check_tree(root: Path, meta: BundleMetadata) -> None:
        where = f"bundle {root}"
        for name in meta.files:
            rel = Path(name)
            if rel.is_absolute() or ".." in rel.parts or len(rel.parts) != 1:
                raise BundleError(f"{where}: listed file {name} must be a plain file name")
            if rel.suffix.lower() in _PICKLE_EXTENSIONS:
                raise BundleError(
                    f"{where}: refusing {name}: pickle files are never loaded "
                    "(weir loads ONNX and JSON only)"
                )
            if rel.suffix.lower() not in _MODEL_EXTENSIONS:
                raise BundleError(
                    f"{where}: refusing {name}: extension {rel.suffix or '(none)'} is not "
                    "allowed (allowed: .json, .onnx)"
                )
        for file in sorted(root.rglob("*")):
            if file.is_dir():
                continue
            rel = file.relative_to(root)
            name = rel.as_posix()
            suffix = rel.suffix.lower()
            if suffix in _PICKLE_EXTENSIONS:
                raise BundleError(
                    f"{where}: refusing {name}: pickle files are never loaded "
                    "(weir loads ONNX and JSON only)"
                )
            in_plans = len(rel.parts) == 2 and rel.parts[0] == PLANS_DIR
            allowed = _PLAN_EXTENSIONS if in_plans else _MODEL_EXTENSIONS
            if len(rel.parts) > 1 and not in_plans:
                raise BundleError(f"{where}: unexpected file {name} (only {PLANS_DIR}/ may nest)")
            if suffix not in allowed:
                raise BundleError(
                    f"{where}: refusing {name}: extension {rel.suffix or '(none)'} is not "
                    f"allowed (allowed: {', '.join(sorted(allowed))})"
                )
            if in_plans:
                continue
            if name != METADATA_FILE and name not in meta.files:
                raise BundleError(f"{where}: {name} is not listed in {METADATA_FILE}")
            if suffix == ".onnx":
                with file.open("rb") as f:
                    head = f.read(4)
                kind = _looks_pickled(head)
                if kind is not None:
                    raise BundleError(
                        f"{where}: refusing {name}: it is {kind}, not ONNX "
                        "(weir loads ONNX and JSON only)"
                    )

    def model_path(self, precision: str = "fp32") -> Path:
        """Path of the ONNX model of ``precision``."""
        try:
            return self.path / self.metadata.models[precision]
        except KeyError:
            raise BundleError(
                f"bundle {self.path}: no {precision} model; "
                f"precisions are {sorted(self.metadata.models)}"
            ) from None

    def model_sha256(self, precision: str = "fp32") -> str:
        """Recorded sha256 of the ONNX model of ``precision``."""
        return self.metadata.files[self.model_path(precision).name].sha256

    @property
    def plans_dir(self) -> Path:
        """Where TensorRT plans and their sidecars live (may not exist)."""
        return self.path / PLANS_DIR

    def stored_profile(self, engine: str, precision: str, device: str) -> LatencyProfile | None:
        """The latest stored profile of ``engine``/``precision``/``device``, if any."""
        found = [
            p
            for p in self.metadata.profiles
            if (p.engine, p.precision, p.device) == (engine, precision, device)
        ]
        if not found:
            return None
        latest = max(found, key=lambda p: p.measured_wall_ns)
        return LatencyProfile.from_quantiles(latest.buckets)

    # -- writing ---------------------------------------------------------------------

    @classmethod
    def write(
        cls,
        path: str | os.PathLike[str],
        *,
        models: Mapping[str, bytes | os.PathLike[str]],
        feature_spec: Mapping[str, Any],
        model_version: str,
        task: str,
        n_features: int,
        n_outputs: int,
        inputs: Iterable[TensorSpec] | None = None,
        outputs: Iterable[TensorSpec] | None = None,
        labels: Iterable[str] = (),
        metrics: Mapping[str, float] | None = None,
        parity: Iterable[ParityResult] = (),
        versions: Mapping[str, str] | None = None,
        data: Mapping[str, Any] | None = None,
        extra_files: Mapping[str, bytes] | None = None,
    ) -> Bundle:
        """Write a bundle directory (created if absent) and return it, verified.

        ``models`` maps a precision to ONNX bytes or an ONNX file to copy; they are
        written as ``student.onnx`` (fp32) and ``student.<precision>.onnx``. ``inputs`` and
        ``outputs`` default to one ``input`` ``[batch, n_features]`` and one ``output``
        ``[batch, n_outputs]``. ``extra_files`` (JSON or ONNX only) are listed too.
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        if "fp32" not in models:
            raise BundleError(f"bundle {root}: an fp32 model is required")
        names: dict[str, str] = {}
        payloads: dict[str, bytes] = {}
        for precision, src in models.items():
            name = "student.onnx" if precision == "fp32" else f"student.{precision}.onnx"
            raw = src if isinstance(src, bytes) else Path(src).read_bytes()
            names[precision] = name
            payloads[name] = raw
        payloads[FEATURE_SPEC_FILE] = msgspec.json.format(
            msgspec.json.encode(dict(feature_spec)), indent=2
        )
        payloads.update(extra_files or {})
        for name, raw in payloads.items():
            _write_atomic(root / name, raw)
        files = {
            name: FileDigest(sha256=hashlib.sha256(raw).hexdigest(), size_bytes=len(raw))
            for name, raw in sorted(payloads.items())
        }
        meta = BundleMetadata(
            model_version=model_version,
            task=task,
            n_features=n_features,
            n_outputs=n_outputs,
            inputs=list(inputs)
            if inputs is not None
            else [TensorSpec(name="input", shape=["batch", n_features])],
            outputs=list(outputs)
            if outputs is not None
            else [TensorSpec(name="output", shape=["batch", n_outputs])],
            models=names,
            files=files,
            labels=list(labels),
            metrics=dict(metrics or {}),
            parity=list(parity),
            versions=dict(versions or {}),
            data=dict(data or {}),
            created_wall_ns=time.time_ns(),
        )
        cls._write_metadata(root, meta)
        return cls.load(root)

    @staticmethod
    def _write_metadata(root: Path, meta: BundleMetadata) -> None:
        raw = msgspec.json.format(msgspec.json.encode(meta), indent=2) + b"\n"
        _write_atomic(root / METADATA_FILE, raw)

    def record_profile(
        self,
        engine: str,
        precision: str,
        device: str,
        profile: LatencyProfile,
        options: Mapping[str, str] | None = None,
    ) -> Bundle:
        """Store ``profile`` in metadata.json (replacing the same engine/precision/device).

        metadata.json is not itself hashed, so this keeps the bundle valid; returns the
        bundle re-read from disk.
        """
        entry = EngineProfile(
            engine=engine,
            precision=precision,
            device=device,
            buckets=profile.stats(),
            options=dict(options or {}),
            measured_wall_ns=time.time_ns(),
        )
        kept = [
            p
            for p in self.metadata.profiles
            if (p.engine, p.precision, p.device) != (engine, precision, device)
        ]
        meta = msgspec.structs.replace(self.metadata, profiles=[*kept, entry])
        self._write_metadata(self.path, meta)
        return Bundle.load(self.path)
