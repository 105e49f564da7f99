"""The model package descriptor (``package.json``) and how an old bundle implies one.

See ``engines.package`` for the contract; this module holds the descriptor's types, read
strictly (``forbid_unknown_fields``: it is a file people write by hand, and a
misspelt key must not be ignored), and ``read_descriptor``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from engines.bundle import Bundle
from engines.errors import BundleError
from engines.likelihood import LikelihoodSpec

DESCRIPTOR_FILE = "package.json"
BUILTIN_FEATURES = "schemas.features:FeatureSpec"
"""weir's own trading and sensor features."""
CLASSES: Final = "classes"
ANOMALY: Final = "anomaly"
ANOMALY_LABELS = ("OK", "ALERT")
DEFAULT_THRESHOLD = 0.5
"""log-likelihood 0.5 is likelihood 1 - 1e-5 (where NAB's optimised thresholds sat)."""


class DecisionSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A package's ``[decision]`` section: how its output rows become decisions."""

    kind: Literal["classes", "anomaly"]
    labels: list[str] = []
    """``classes``: one label per output column. ``anomaly``: ignored (``OK``/``ALERT``)."""
    threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = DEFAULT_THRESHOLD
    """``anomaly``: the log-likelihood at or above which an event is an ``ALERT``."""
    likelihood: LikelihoodSpec = msgspec.field(default_factory=LikelihoodSpec)
    """``anomaly``: the per-key likelihood's settings."""


class FeaturesRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A descriptor's ``features``: which implementation, with which settings."""

    impl: str
    """``module:Class`` or a ``weir.features`` entry-point name."""
    settings: dict[str, Any] = {}
    """Keyword arguments of ``impl`` (window length, smoothing, ...)."""


class PackageDescriptor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``package.json``: what the model is called and how its inputs and outputs are made."""

    name: str
    version: str
    features: FeaturesRef
    decision: DecisionSpec

    def to_json(self) -> bytes:
        """The descriptor as indented JSON (the package's ``package.json``)."""
        return msgspec.json.format(msgspec.json.encode(self), indent=2) + b"\n"


_DESCRIPTOR_DECODER = msgspec.json.Decoder(PackageDescriptor)


def read_descriptor(bundle: Bundle) -> PackageDescriptor:
    """The bundle's ``package.json``, or the descriptor an old bundle's metadata implies."""
    meta = bundle.metadata
    if DESCRIPTOR_FILE in meta.files:
        try:
            return _DESCRIPTOR_DECODER.decode((bundle.path / DESCRIPTOR_FILE).read_bytes())
        except (msgspec.DecodeError, ValueError) as exc:
            raise BundleError(f"package {bundle.path}: invalid {DESCRIPTOR_FILE}: {exc}") from exc
    if meta.task not in ("trading", "sensor"):
        raise BundleError(
            f"package {bundle.path}: no {DESCRIPTOR_FILE} and task {meta.task!r} is not a "
            "built-in one (trading, sensor): add a package.json (see docs/model-packages.md)"
        )
    return builtin_descriptor(meta.task, meta.model_version, bundle.feature_spec, meta.labels)


def builtin_descriptor(
    task: str, version: str, settings: dict[str, Any], labels: list[str]
) -> PackageDescriptor:
    """The descriptor of one of weir's own models: ``FeatureSpec`` features with
    ``settings``; trading: ``classes`` over ``labels``; sensor: ``anomaly`` (defaults)."""
    decision = (
        DecisionSpec(kind=ANOMALY)
        if task == "sensor"
        else DecisionSpec(kind=CLASSES, labels=list(labels))
    )
    return PackageDescriptor(
        name=task,
        version=version,
        features=FeaturesRef(impl=BUILTIN_FEATURES, settings=dict(settings)),
        decision=decision,
    )
