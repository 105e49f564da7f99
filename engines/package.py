"""Model packages: a bundle directory plus a descriptor naming its feature code and head.

A model package is a bundle (``engines.bundle``: ONNX files, ``metadata.json`` with the
tensors and every file's sha256, checked at load, no pickles) holding ``package.json``::

    {
      "name": "machine-temp",
      "version": "2026.12.06",
      "features": {"impl": "my_features:Rolling", "settings": {"window": 16}},
      "decision": {"kind": "anomaly", "threshold": 0.5, "likelihood": {"learning_period": 50}}
    }

- ``version`` is the model version every decision carries.
- ``features.impl`` names the feature implementation (``engines.features.Features``):
  ``module:Class`` (imported; the module must be importable, e.g. on ``PYTHONPATH``) or a
  name registered under the ``weir.features`` entry-point group. It is called with
  ``features.settings`` as keywords (a ``msgspec.Struct`` class: ``msgspec.convert``), and
  its ``n_features`` must equal the model's input width.
- ``decision`` is ``engines.head.DecisionSpec``: ``classes`` (``labels``, arg-max) or
  ``anomaly`` (forecast error -> per-key likelihood -> ``ALERT`` at ``threshold``).

weir's own trading and sensor models are packages like any other (their features are
``schemas.features:FeatureSpec``). A bundle written before packages existed has no
``package.json``; it is read as the package its ``metadata.json`` task describes (trading:
``classes`` over its labels; sensor: ``anomaly`` with the default threshold and likelihood).

Loading happens once, off the hot path; every failure is a :class:`BundleError` naming the
package directory and what is wrong.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import msgspec

from engines.bundle import Bundle, ParityResult, TensorSpec
from engines.descriptor import (
    ANOMALY,
    CLASSES,
    DESCRIPTOR_FILE,
    FeaturesRef,
    PackageDescriptor,
    read_descriptor,
)
from engines.errors import BundleError
from engines.features import Features
from engines.head import Head

ENTRY_POINT_GROUP = "weir.features"


def resolve_impl(impl: str, *, where: str = "package") -> Callable[..., Any]:
    """The callable ``impl`` names: ``module:Attr`` (dotted attributes allowed) or an
    entry point of the ``weir.features`` group."""
    if ":" in impl:
        module_name, _, attr = impl.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise BundleError(
                f"{where}: feature implementation {impl!r}: cannot import {module_name!r} "
                f"({exc}); is it on PYTHONPATH?"
            ) from exc
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError as exc:
                raise BundleError(
                    f"{where}: feature implementation {impl!r}: {module_name!r} has no {attr!r}"
                ) from exc
    else:
        found = entry_points(group=ENTRY_POINT_GROUP, name=impl)
        if not found:
            raise BundleError(
                f"{where}: feature implementation {impl!r} is neither module:Class nor "
                f"registered under the {ENTRY_POINT_GROUP!r} entry-point group"
            )
        obj = next(iter(found)).load()
    if not callable(obj):
        raise BundleError(f"{where}: feature implementation {impl!r} is not callable")
    return obj  # type: ignore[no-any-return]


def make_features(ref: FeaturesRef, *, where: str = "package") -> Features:
    """Instantiate ``ref.impl`` with ``ref.settings`` and check it is a ``Features``."""
    impl = resolve_impl(ref.impl, where=where)
    made: Any
    try:
        if isinstance(impl, type) and issubclass(impl, msgspec.Struct):
            made = msgspec.convert(ref.settings, impl)
        else:
            made = impl(**ref.settings)
    except (TypeError, ValueError, msgspec.ValidationError) as exc:
        raise BundleError(
            f"{where}: feature implementation {ref.impl!r} refused its settings: {exc}"
        ) from exc
    n = getattr(made, "n_features", None)
    if not isinstance(n, int) or not callable(getattr(made, "new_state", None)):
        raise BundleError(
            f"{where}: feature implementation {ref.impl!r} made {type(made).__name__}, which "
            "lacks an int n_features and a new_state() (engines.features.Features)"
        )
    return made  # type: ignore[no-any-return]


class ModelPackage:
    """A loaded, verified package: bundle, descriptor, feature implementation and head."""

    __slots__ = ("bundle", "descriptor", "features", "head")

    def __init__(
        self, bundle: Bundle, descriptor: PackageDescriptor, features: Features, head: Head
    ) -> None:
        self.bundle = bundle
        self.descriptor = descriptor
        self.features = features
        self.head = head

    def __repr__(self) -> str:
        d = self.descriptor
        return f"ModelPackage({str(self.bundle.path)!r}, name={d.name!r}, version={d.version!r})"

    @property
    def model_version(self) -> str:
        """The version decisions carry (the bundle's ``model_version``)."""
        return self.bundle.metadata.model_version


def package_of(bundle: Bundle, *, threshold: float | None = None) -> ModelPackage:
    """The package a loaded bundle holds (``threshold`` overrides the anomaly threshold)."""
    where = f"package {bundle.path}"
    descriptor = read_descriptor(bundle)
    features = make_features(descriptor.features, where=where)
    if features.n_features != bundle.metadata.n_features:
        raise BundleError(
            f"{where}: feature implementation {descriptor.features.impl!r} gives "
            f"{features.n_features} features per input but the model takes "
            f"{bundle.metadata.n_features}"
        )
    head = Head.from_spec(descriptor.decision, threshold=threshold)
    if head.kind == CLASSES and len(head.labels) != bundle.metadata.n_outputs:
        raise BundleError(
            f"{where}: {len(head.labels)} labels for {bundle.metadata.n_outputs} model outputs"
        )
    return ModelPackage(bundle, descriptor, features, head)


def load_package(path: str | os.PathLike[str], *, threshold: float | None = None) -> ModelPackage:
    """Load and verify a package directory (hashes, no pickles, descriptor, features)."""
    return package_of(Bundle.load(path), threshold=threshold)


def write_package(
    path: str | os.PathLike[str],
    descriptor: PackageDescriptor,
    *,
    models: Mapping[str, bytes | os.PathLike[str]],
    n_outputs: int,
    task: str | None = None,
    inputs: Iterable[TensorSpec] | None = None,
    outputs: Iterable[TensorSpec] | None = None,
    metrics: Mapping[str, float] | None = None,
    parity: Iterable[ParityResult] = (),
    versions: Mapping[str, str] | None = None,
    data: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> ModelPackage:
    """Write a package directory (``Bundle.write`` plus ``package.json``) and load it back.

    ``models`` maps a precision (``fp32`` required) to ONNX bytes or a file; the model
    version is ``descriptor.version``; ``task`` (metadata's) defaults to its name.
    """
    where = f"package {Path(path)}"
    features = make_features(descriptor.features, where=where)
    Bundle.write(
        path,
        models=models,
        feature_spec=descriptor.features.settings,
        model_version=descriptor.version,
        task=task or descriptor.name,
        n_features=features.n_features,
        n_outputs=n_outputs,
        inputs=inputs,
        outputs=outputs,
        labels=descriptor.decision.labels
        if descriptor.decision.kind == CLASSES
        else list(Head(ANOMALY).labels),
        metrics=metrics,
        parity=parity,
        versions=versions,
        data=data,
        extra_files={**(extra_files or {}), DESCRIPTOR_FILE: descriptor.to_json()},
    )
    return load_package(path)
