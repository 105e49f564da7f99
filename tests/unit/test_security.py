"""Security at the service's edges: loopback endpoints, no secrets shown, verified bundles only,
no pickle loading anywhere, input bounds enforced before any state is touched."""

from __future__ import annotations

import ast
import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.context import make_bundle
from schemas.codec import event_codec
from schemas.events import MAX_KEY_LEN, MAX_LEVELS, Quote, SensorReading
from service.cli import main as weir_main
from service.memory import MemoryRecord
from service.settings import HttpSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "engines", "service", "replay", "chaos", "bench")
SECRET = "s3cr3t-Sasl-pw-7d1e"
TOPIC = "weir.events"


def _weir(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO,
        env={**base, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- endpoints and secrets ------------------------------------------------------------------


def test_http_binds_loopback_by_default() -> None:
    """The metrics/health endpoints listen on 127.0.0.1 unless [http] host says otherwise."""
    assert HttpSettings().host == "127.0.0.1"
    assert load_settings(env={}).http.host == "127.0.0.1"


def test_config_show_never_prints_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`weir config show` prints the SASL and TLS key passwords as *** only."""
    monkeypatch.setenv("WEIR_KAFKA__SASL_PASSWORD", SECRET)
    monkeypatch.setenv("WEIR_KAFKA__SSL_PASSWORD", SECRET + "-tls")
    assert weir_main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    assert '"sasl_password": "***"' in out


def test_serve_logs_never_show_the_sasl_password(tmp_path: Path) -> None:
    """`weir serve` failing to reach a SASL broker logs and exits without the password in any line."""
    bundle = make_bundle(tmp_path / "bundle")
    done = _weir(
        "serve",
        WEIR_ENGINE__BUNDLE=str(bundle),
        WEIR_ENGINE__WARMUP_ITERS="5",
        WEIR_HTTP__ENABLED="false",
        WEIR_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",
        WEIR_KAFKA__SECURITY_PROTOCOL="SASL_PLAINTEXT",
        WEIR_KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
        WEIR_KAFKA__SASL_USERNAME="weir",
        WEIR_KAFKA__SASL_PASSWORD=SECRET,
        WEIR_DELIVERY__STARTUP_TIMEOUT_MS="1500",
    )
    assert done.returncode == 2
    assert "weir: error: cannot reach Kafka at 127.0.0.1:1 within 1500 ms" in done.stderr
    assert SECRET not in done.stderr + done.stdout


# -- model bundles ----------------------------------------------------------------------------


def test_serve_refuses_a_tampered_bundle(tmp_path: Path) -> None:
    """`weir serve` with a bundle whose model bytes changed exits 2 naming the file and both hashes."""
    bundle = make_bundle(tmp_path / "bundle")
    model = bundle / "student.onnx"
    expected = hashlib.sha256(model.read_bytes()).hexdigest()
    model.write_bytes(model.read_bytes() + b"\0")
    got = hashlib.sha256(model.read_bytes()).hexdigest()
    done = _weir("serve", WEIR_ENGINE__BUNDLE=str(bundle), WEIR_HTTP__ENABLED="false")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"weir: error: bundle {bundle}: hash mismatch for student.onnx: "
        f"expected sha256 {expected}, got {got}"
    )


def test_serve_refuses_a_bundle_holding_a_pickle(tmp_path: Path) -> None:
    """`weir serve` with a .pkl file dropped into the bundle exits 2 without loading anything."""
    bundle = make_bundle(tmp_path / "bundle")
    (bundle / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    done = _weir("serve", WEIR_ENGINE__BUNDLE=str(bundle), WEIR_HTTP__ENABLED="false")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"weir: error: bundle {bundle}: refusing evil.pkl: pickle files are never loaded "
        "(weir loads ONNX and JSON only)"
    )


# -- no pickle loading ------------------------------------------------------------------------

_UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _sources() -> Iterator[Path]:
    for pkg in PACKAGES:
        root = REPO / pkg
        if root.is_dir():
            yield from sorted(root.rglob("*.py"))


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
        for k in call.keywords
    )


def _pickle_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name in _UNPICKLERS]
        elif isinstance(node, ast.ImportFrom) and (node.module or "") in _UNPICKLERS:
            found.append(f"{where} from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name in ("torch.load", "torch.serialization.load") and not _keyword_is(
                node, "weights_only", True
            ):
                found.append(f"{where} {name}(...) without weights_only=True")
            if name in ("np.load", "numpy.load") and _keyword_is(node, "allow_pickle", True):
                found.append(f"{where} {name}(..., allow_pickle=True)")
            if name.endswith("read_pickle") or name.split(".")[0] in _UNPICKLERS:
                found.append(f"{where} {name}(...)")
    return found


def test_no_pickle_loading_in_any_package() -> None:
    """No package imports an unpickler, calls torch.load without weights_only=True, or np.load with allow_pickle=True."""
    sources = list(_sources())
    assert len(sources) > 50
    found = [use for path in sources for use in _pickle_uses(path)]
    assert found == []
    text_hits = [
        f"{p.relative_to(REPO)}"
        for p in sources
        if re.search(r"pickle\.loads?\(|allow_pickle\s*=\s*True", p.read_text(encoding="utf-8"))
    ]
    assert text_hits == []


def test_the_pickle_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scan itself flags each forbidden form (so an empty result means something)."""
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import pickle\nimport numpy as np\nimport torch\n"
        "pickle.load(f)\ntorch.load(p)\ntorch.load(p, weights_only=True)\n"
        "np.load(p, allow_pickle=True)\nnp.load(p)\n"
    )
    found = _pickle_uses(bad)
    kinds = sorted(f.split(" ", 1)[1] for f in found)
    assert kinds == [
        "import pickle",
        "np.load(..., allow_pickle=True)",
        "pickle.load(...)",
        "torch.load(...) without weights_only=True",
    ]


# -- input bounds before state -----------------------------------------------------------------


def _quote_json(symbol: str, **raw: str) -> bytes:
    """A quote as JSON text; each keyword replaces (or adds) a field with raw JSON text."""
    fields = {
        "kind": '"quote"',
        "symbol": f'"{symbol}"',
        "bid_px": "100.0",
        "bid_qty": "1.0",
        "ask_px": "100.5",
        "ask_qty": "1.0",
    }
    fields.update(raw)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


BAD_RECORDS: dict[str, tuple[bytes | None, str]] = {
    "oversized": (_quote_json("BIG", pad='"' + "x" * 70_000 + '"'), "oversized"),
    "price too large": (_quote_json("PX_HI", bid_px="1e12"), "invalid_value"),
    "price zero": (_quote_json("PX_ZERO", bid_px="0.0"), "invalid_value"),
    "negative quantity": (_quote_json("QTY_NEG", ask_qty="-1.0"), "invalid_value"),
    "quantity too large": (_quote_json("QTY_HI", bid_qty="1e15"), "invalid_value"),
    "NaN": (_quote_json("NAN", bid_px="NaN"), "malformed"),
    "float overflow": (_quote_json("INF", bid_px="1e999"), "invalid_value"),
    "string for a number": (_quote_json("STR", bid_px='"100"'), "invalid_value"),
    "negative timestamp": (_quote_json("TS_NEG", source_ts_ns="-1"), "invalid_value"),
    "timestamp past int64": (_quote_json("TS_HI", source_ts_ns=str(2**63)), "invalid_value"),
    "unknown kind": (b'{"kind":"order","symbol":"KIND"}', "unknown_kind"),
    "truncated": (_quote_json("TRUNC")[:-5], "malformed"),
    "key too long": (_quote_json("K" * (MAX_KEY_LEN + 1)), "invalid_value"),
    "too many levels": (
        b'{"kind":"book_snapshot","symbol":"LEVELS","last_update_id":1,"asks":[],"bids":'
        + b"["
        + b",".join([b"[1.0,1.0]"] * (MAX_LEVELS + 1))
        + b"]}",
        "invalid_value",
    ),
    "empty": (None, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
async def test_out_of_bounds_records_never_touch_state(case: str, make_pipeline: Any) -> None:
    """An oversized or out-of-range record is dead-lettered with its reason and creates no key."""
    value, reason = BAD_RECORDS[case]
    settings = load_settings(env={"WEIR_KAFKA__MAX_EVENT_BYTES": "65536"})
    pipe, sink, _ = make_pipeline(settings=settings, model_version="sec-1")
    pipe.start()
    try:
        good = event_codec().encode(
            Quote(symbol="GOOD", bid_px=100.0, bid_qty=1.0, ask_px=100.5, ask_qty=1.0)
        )
        await pipe.ingest(
            [MemoryRecord(TOPIC, 0, 0, value, key=b"k"), MemoryRecord(TOPIC, 0, 1, good)]
        )
        assert await pipe.drain(5)
    finally:
        await pipe.close()
    dead = sink.on("weir.dlq")
    assert [m.header("weir-reason") for m in dead] == [reason.encode()]
    assert len(sink.on("weir.decisions")) == 1
    assert len(pipe.state) == 1 and pipe.state.get("GOOD") is not None


async def test_wrong_task_records_never_create_a_key(make_pipeline: Any) -> None:
    """A sensor reading sent to a trading model is dead-lettered and creates no key."""
    pipe, sink, _ = make_pipeline(settings=load_settings(env={}), model_version="sec-1")
    pipe.start()
    try:
        value = event_codec().encode(SensorReading(sensor_id="INTRUDER", value=1.0))
        await pipe.ingest([MemoryRecord(TOPIC, 0, 0, value)])
        assert await pipe.drain(5)
    finally:
        await pipe.close()
    assert [m.header("weir-reason") for m in sink.on("weir.dlq")] == [b"wrong_task"]
    assert pipe.state.get("INTRUDER") is None
