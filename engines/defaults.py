"""Where the committed default bundle lives (the demo's model)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "default_bundle"


def default_bundle_path() -> Path:
    """The default bundle shipped inside the package (trained on the synthetic feed)."""
    return DEFAULT_BUNDLE_DIR
