"""``weir model profile`` and ``weir model describe``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from engines import Bundle, BundleError, write_tiny_bundle
from engines.cli import register


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="weir")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    return write_tiny_bundle(tmp_path / "b")


def test_profile_prints_one_row_per_bucket(
    bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    """profile prints the engine line, a header and p50/p99/p99.9 for every bucket."""
    assert _run("model", "profile", str(bundle.path), "--max-batch", "4", "--iterations", "5") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("onnx fp32 on cpu (")
    assert "spinning=false" in lines[0]
    assert "threads=1" in lines[0]
    assert lines[1].split() == ["bucket", "p50_us", "p99_us", "p99.9_us", "samples"]
    assert [row.split()[0] for row in lines[2:]] == ["1", "2", "4"]
    assert all(row.split()[-1] == "5" for row in lines[2:])


def test_profile_save_stores_it_in_the_bundle(bundle: Bundle) -> None:
    """--save records the measured profile in metadata.json, keeping the bundle valid."""
    _run("model", "profile", str(bundle.path), "--max-batch", "2", "--iterations", "3", "--save")
    profiles = Bundle.load(bundle.path).metadata.profiles
    assert [(p.engine, p.precision, p.device) for p in profiles] == [("onnx", "fp32", "cpu")]
    assert [s.bucket for s in profiles[0].buckets] == [1, 2]


def test_describe_prints_bundle_and_engine_as_json(
    bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    """describe prints JSON with the bundle's version and the engine's description."""
    assert _run("model", "describe", str(bundle.path), "--threads", "2") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bundle"]["model_version"] == "tiny-1"
    assert out["engine"]["kind"] == "onnx"
    assert out["engine"]["options"]["threads"] == "2"
    assert out["engine"]["buckets"] == [1, 2, 4, 8, 16, 32, 64]


def test_a_bad_bundle_raises_bundle_error(tmp_path: Path) -> None:
    """A directory that is not a bundle raises BundleError (the weir CLI prints it)."""
    with pytest.raises(BundleError, match=r"missing metadata\.json"):
        _run("model", "describe", str(tmp_path))
