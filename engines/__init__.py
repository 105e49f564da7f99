"""weir engines: compiled models behind one seam, their bundles and latency profiles.

Start from a bundle::

    bundle = Bundle.load("models/quotes-v3")          # hashes checked, no pickles
    engine = load_engine(bundle, "onnx", options={"threads": 1})
    engine.warm_up()                                  # measures p50/p99/p99.9 per bucket
    b = engine.bucket_for(n)
    engine.input_buffer(b)[:n] = features             # fill in place
    probs = engine.infer(b, n)                        # view of the preallocated output
    engine.profile.p99_ns(b)                          # refreshed from real calls

See ``engines.base`` for the call contract and ``engines.registry`` for the kinds. A model
package (``engines.package``: ``load_package``/``write_package``) is a bundle plus a
descriptor naming its feature implementation (``engines.features``) and its ``Head``.
``OnnxEngine``, ``TorchEngine`` and ``TensorRTEngine`` are imported on first use, so
importing this package pulls in neither onnxruntime, torch nor tensorrt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from engines.base import Engine, EngineInfo
from engines.bundle import (
    Bundle,
    BundleMetadata,
    EngineProfile,
    FileDigest,
    ParityResult,
    TensorSpec,
)
from engines.descriptor import DecisionSpec, FeaturesRef, PackageDescriptor
from engines.errors import BundleError, EngineError, ProfileError
from engines.fake import FakeEngine, LatencyModel, tiny_mlp_onnx, write_tiny_bundle
from engines.features import Features, FeatureState
from engines.head import Head
from engines.likelihood import AnomalyLikelihood, LikelihoodSpec
from engines.package import ModelPackage, load_package, package_of, write_package
from engines.profile import BucketStats, LatencyProfile, bucket_sizes
from engines.registry import ENGINE_CLASSES, ENGINE_KINDS, load_engine, load_model
from engines.version import ModelVersion, contract_change, load_version

if TYPE_CHECKING:
    from engines.onnx import OnnxEngine
    from engines.tensorrt import PlanKey, PlanSidecar, TensorRTEngine
    from engines.torch import TorchEngine

_LAZY = {name: module for module, name in ENGINE_CLASSES.values()} | {
    "PlanKey": "engines.tensorrt",
    "PlanSidecar": "engines.tensorrt",
    "TorchEngine": "engines.torch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engines' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ENGINE_CLASSES",
    "ENGINE_KINDS",
    "AnomalyLikelihood",
    "BucketStats",
    "Bundle",
    "BundleError",
    "BundleMetadata",
    "DecisionSpec",
    "Engine",
    "EngineError",
    "EngineInfo",
    "EngineProfile",
    "FakeEngine",
    "FeatureState",
    "Features",
    "FeaturesRef",
    "FileDigest",
    "Head",
    "LatencyModel",
    "LatencyProfile",
    "LikelihoodSpec",
    "ModelPackage",
    "ModelVersion",
    "OnnxEngine",
    "PackageDescriptor",
    "ParityResult",
    "PlanKey",
    "PlanSidecar",
    "ProfileError",
    "TensorRTEngine",
    "TensorSpec",
    "TorchEngine",
    "bucket_sizes",
    "contract_change",
    "load_engine",
    "load_model",
    "load_package",
    "load_version",
    "package_of",
    "tiny_mlp_onnx",
    "write_package",
    "write_tiny_bundle",
]
