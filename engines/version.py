"""A model version: what a server runs as one unit, and how the next one is loaded.

A :class:`ModelVersion` is the engine, the head, the feature implementation and the
version string decisions carry, taken together: a running service replaces all of them in
one reference change between two batches (``service.models``), never one without the
others. The engine's latency profile and buckets come with it.

:func:`load_version` is the slow part, done off the hot path (a worker thread): load the
package (every file's sha256 checked), re-run the parity check of the precision it will
serve when the package holds ``parity_sample.json`` (required with ``require_parity``),
build the engine and warm it up, which measures its latency profile. Every failure is a
:class:`engines.errors.BundleError` (or ``EngineError``) naming the directory and why.

:func:`contract_change` says why a candidate cannot take over from the version serving
now without invalidating what the service holds per key: the feature windows and head
states are built by the feature implementation and head of the version serving, so a
candidate must compute the same features (implementation and settings), have the same
decision kind (and likelihood settings, for ``anomaly``) and the same batch buckets.
Labels, thresholds and the model's weights may change.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from engines.base import Engine
from engines.bundle import Bundle
from engines.descriptor import ANOMALY, FeaturesRef
from engines.errors import BundleError
from engines.features import Features
from engines.head import Head
from engines.package import package_of
from engines.parity import PARITY_FILE, ParitySample, check_parity
from engines.registry import EngineChoice, load_engine

__all__ = ["ModelVersion", "contract_change", "load_version"]

SERVED_PRECISION = "fp32"
"""The precision ``load_engine`` serves by default, whose parity is checked at load."""


class ModelVersion:
    """Engine, head, features and version string of one model, swapped as one."""

    __slots__ = ("engine", "features", "features_ref", "head", "path", "version")

    def __init__(
        self,
        *,
        version: str,
        engine: Engine,
        head: Head,
        features: Features,
        features_ref: FeaturesRef | None = None,
        path: str = "",
    ) -> None:
        self.version = version
        """What every decision this version makes carries (``model_version``)."""
        self.engine = engine
        self.head = head
        self.features = features
        self.features_ref = features_ref
        """The package descriptor's ``features`` (None when built without a package)."""
        self.path = path
        """The package directory it was loaded from ("" when built in code)."""

    def __repr__(self) -> str:
        return f"ModelVersion({self.version!r}, path={self.path!r})"


def _same_features(a: ModelVersion, b: ModelVersion) -> bool:
    if a.features_ref is not None and a.features_ref == b.features_ref:
        return True
    # Built-in features are msgspec Structs: equal settings (defaults spelled out or not)
    # make equal objects.
    fa, fb = a.features, b.features
    return type(fa) is type(fb) and isinstance(fa, msgspec.Struct) and fa == fb


def _describe_features(v: ModelVersion) -> str:
    ref = v.features_ref
    if ref is not None:
        return f"{ref.impl} {msgspec.json.encode(ref.settings).decode()}"
    return repr(v.features)


def contract_change(current: ModelVersion, candidate: ModelVersion) -> str | None:
    """Why ``candidate`` cannot replace ``current`` in place (module docstring), or None."""
    cf, nf = current.engine.n_features, candidate.engine.n_features
    if cf != nf:
        return f"the model input width changes from {cf} to {nf} features"
    if not _same_features(current, candidate):
        return (
            f"the feature implementation changes from {_describe_features(current)} to "
            f"{_describe_features(candidate)}"
        )
    ch, nh = current.head, candidate.head
    if ch.kind != nh.kind:
        return f"the decision kind changes from {ch.kind} to {nh.kind}"
    if ch.kind == ANOMALY and ch.likelihood != nh.likelihood:
        return "the anomaly likelihood settings change (per-key likelihood state)"
    cb, nb = current.engine.buckets, candidate.engine.buckets
    if cb != nb:
        return f"the batch buckets change from {list(cb)} to {list(nb)}"
    return None


def _check_parity(bundle: Bundle, *, require: bool) -> None:
    where = f"package {bundle.path}"
    if PARITY_FILE not in bundle.metadata.files:
        if require:
            raise BundleError(f"{where}: no {PARITY_FILE} and require_parity is set")
        return
    try:
        sample = ParitySample.from_json((bundle.path / PARITY_FILE).read_bytes())
    except msgspec.DecodeError as exc:
        raise BundleError(f"{where}: invalid {PARITY_FILE}: {exc}") from exc
    model = bundle.model_path(SERVED_PRECISION)
    for check in check_parity({SERVED_PRECISION: model}, sample):
        if not check.ok:
            raise BundleError(
                f"{where}: parity check failed for {check.precision} against "
                f"{check.reference}: max|diff| {check.max_abs_diff:.3g}, worst excess "
                f"{check.worst_excess:+.3g}, arg-max agreement {check.argmax_agreement:.4f}"
            )


def load_version(
    path: str | os.PathLike[str], choice: EngineChoice, *, require_parity: bool = False
) -> ModelVersion:
    """Load, verify, check parity, build and warm up the package at ``path`` (blocks for
    as long as that takes: call it from a worker thread)."""
    bundle = Bundle.load(path)
    package = package_of(bundle, threshold=choice.alert_threshold)
    _check_parity(bundle, require=require_parity)
    opts = {"threads": choice.threads} if choice.kind == "onnx" else {}
    engine = load_engine(bundle, choice.kind, max_batch=choice.max_batch, options=opts)
    try:
        engine.warm_up(choice.warmup_iters)
    except BaseException:
        engine.close()
        raise
    return ModelVersion(
        version=package.model_version,
        engine=engine,
        head=package.head,
        features=package.features,
        features_ref=package.descriptor.features,
        path=str(Path(path)),
    )
