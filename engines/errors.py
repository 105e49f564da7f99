"""Errors of the engines package (see ``schemas.errors`` for the whole tree)."""

from __future__ import annotations

from schemas.errors import WeirError


class EngineError(WeirError):
    """An engine failed to load, warm up or infer, or a bundle is unusable."""


class BundleError(EngineError):
    """A model bundle is missing a file, fails its hash check, or does not fit this host."""


class ProfileError(EngineError):
    """A latency profile is malformed or lacks a bucket."""
