"""Which engine runs a bundle: the one table of kinds, ``load_engine`` and ``load_model``.

A kind names the implementation that builds an engine from a verified bundle with its
``from_bundle(bundle, *, precision, max_batch, **options)``. Each is imported on first
use, so naming a kind pulls in only its runtime (onnxruntime, tensorrt). ``TorchEngine``
is not a kind: it is built from an ``nn.Module``, and a bundle holds no pickles.

``load_model`` is what a server or a replay run does at start: load and verify the
bundle, build and warm the engine, and read the package's head and feature implementation
(``engines.package``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

from engines.base import DEFAULT_MAX_BATCH, Engine
from engines.bundle import Bundle
from engines.defaults import default_bundle_path
from engines.errors import EngineError
from engines.features import Features
from engines.head import Head
from engines.package import package_of

ENGINE_CLASSES: Mapping[str, tuple[str, str]] = {
    "fake": ("engines.fake", "FakeEngine"),
    "onnx": ("engines.onnx", "OnnxEngine"),
    "tensorrt": ("engines.tensorrt", "TensorRTEngine"),
}
"""kind -> (module, class) of each engine a bundle can be loaded into."""

ENGINE_KINDS: tuple[str, ...] = tuple(ENGINE_CLASSES)


class _FromBundle(Protocol):
    def from_bundle(
        self, bundle: Bundle, *, precision: str, max_batch: int, **options: Any
    ) -> Engine: ...


def engine_class(kind: str) -> _FromBundle:
    """The implementation of ``kind``, imported now; EngineError for an unknown kind."""
    try:
        module, name = ENGINE_CLASSES[kind]
    except KeyError:
        raise EngineError(f"unknown engine kind {kind!r}; kinds are {list(ENGINE_KINDS)}") from None
    cls: _FromBundle = getattr(importlib.import_module(module), name)
    return cls


def load_engine(
    bundle: Bundle,
    kind: str = "onnx",
    *,
    precision: str = "fp32",
    max_batch: int = DEFAULT_MAX_BATCH,
    options: Mapping[str, Any] | None = None,
) -> Engine:
    """Construct an engine of ``kind`` from a verified bundle.

    ``options`` are the implementation's keyword arguments (``threads``, ``spinning`` for
    ``onnx``; ``latency``, ``seed`` for ``fake``; ``device`` ...). The bundle's stored
    profile for the same engine, precision and device seeds ``profile`` until ``warm_up``.
    """
    cls = engine_class(kind)
    return cls.from_bundle(bundle, precision=precision, max_batch=max_batch, **dict(options or {}))


class EngineChoice(Protocol):
    """The engine section of a settings file (``service.settings.EngineSettings``)."""

    @property
    def bundle(self) -> str:
        """Bundle directory; empty: the committed default bundle."""
        ...

    @property
    def kind(self) -> str:
        """One of ``ENGINE_KINDS``."""
        ...

    @property
    def threads(self) -> int:
        """Intra-op threads of an ``onnx`` engine."""
        ...

    @property
    def max_batch(self) -> int:
        """The largest bucket."""
        ...

    @property
    def warmup_iters(self) -> int:
        """Warm-up runs per bucket before serving."""
        ...

    @property
    def alert_threshold(self) -> float | None:
        """Overrides the package's anomaly threshold; ``None``: the package's."""
        ...


class ModelSettings(Protocol):
    """Settings that say which model to serve (``service.settings.Settings`` is one)."""

    @property
    def engine(self) -> EngineChoice:
        """The engine section."""
        ...


def load_model(settings: ModelSettings) -> tuple[Bundle, Engine, Head, Features]:
    """Load and verify the model package, build and warm the engine; return them with the
    package's head and feature implementation (``engines.package``)."""
    choice = settings.engine
    bundle = Bundle.load(choice.bundle or str(default_bundle_path()))
    package = package_of(bundle, threshold=choice.alert_threshold)
    opts: dict[str, Any] = {"threads": choice.threads} if choice.kind == "onnx" else {}
    engine = load_engine(bundle, choice.kind, max_batch=choice.max_batch, options=opts)
    engine.warm_up(choice.warmup_iters)
    return bundle, engine, package.head, package.features
