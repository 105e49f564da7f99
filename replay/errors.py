"""Errors of the replay package (see ``schemas.errors`` for the whole tree)."""

from __future__ import annotations

from schemas.errors import WeirError


class ReplayError(WeirError):
    """Recording, replaying, measuring or reporting failed."""
