"""Poison and fuzzed input: seeded generators of bad records, and the in-process decoder fuzz.

:func:`samples` yields records of named categories, each with what must become of it:

==================  ===============================================  ======================
category            what it is                                       outcome
==================  ===============================================  ======================
``good``            a valid event                                    decided
``extreme``         valid by the schema at its edges: subnormal and  decided
                    near-bound prices, 128-character unicode keys,
                    empty books, ``source_ts_ns`` 0 and 2**63-1
``truncated``       a valid payload cut short                        ``malformed``
``wrong_type``      a field of the wrong JSON type                   ``invalid_value``
``huge_number``     a number out of its range (or of float range)    ``invalid_value``
``nan_inf``         ``NaN`` / ``Infinity`` literals                  ``malformed``
``unknown_kind``    a ``kind`` no event has, or none                 ``unknown_kind``
``wrong_encoding``  MessagePack, UTF-16, invalid UTF-8, deep nesting ``malformed``
``oversized``       bigger than ``max_event_bytes``                  ``oversized``
``too_many``        a key too long, a book with too many levels      ``invalid_value``
``empty``           no value at all (a tombstone)                    ``empty``
``wrong_task``      a sensor reading for a trading model             ``wrong_task``
``bitflip``         a valid payload with random bytes changed        decided or dead letter
==================  ===============================================  ======================

:func:`fuzz_decoders` runs ``n`` of them through ``schemas.codec.event_codec().decode`` and,
for what decodes, through the serving feature code (``KeyState.update``) with a few keys
carried across records (so that sequences of extreme values meet); every exception other
than ``DecodeError``/``SchemaError`` is a crash, counted with its category and input.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas.codec import event_codec
from schemas.errors import DecodeError, SchemaError
from schemas.events import MAX_KEY_LEN, MAX_LEVELS
from schemas.features import FeatureSpec, KeyState, Task

__all__ = ["CATEGORIES", "FuzzReport", "Sample", "expected_reason", "fuzz_decoders", "samples"]

CATEGORIES: tuple[str, ...] = (
    "good",
    "extreme",
    "truncated",
    "wrong_type",
    "huge_number",
    "nan_inf",
    "unknown_kind",
    "wrong_encoding",
    "oversized",
    "too_many",
    "empty",
    "wrong_task",
    "bitflip",
)

_REASON: dict[str, str | None] = {
    "good": None,
    "extreme": None,
    "truncated": "malformed",
    "wrong_type": "invalid_value",
    "huge_number": "invalid_value",
    "nan_inf": "malformed",
    "unknown_kind": "unknown_kind",
    "wrong_encoding": "malformed",
    "oversized": "oversized",
    "too_many": "invalid_value",
    "empty": "empty",
    "wrong_task": "wrong_task",
}


def expected_reason(category: str) -> str | None:
    """The dead-letter reason a record of ``category`` must get; None: decided (or, for
    ``bitflip``, anything but a crash)."""
    return _REASON.get(category)


@dataclass(frozen=True)
class Sample:
    """One generated record."""

    category: str
    key: bytes
    value: bytes | None


_KEYS = ("SYMA", "SYMB", "SYMC", "SYMD")
_SUBNORMAL = 5e-324
_json = msgspec.json.Encoder()


def _trading_event(rng: random.Random, key: str) -> dict[str, Any]:
    px = round(100 + rng.random(), 4)
    match rng.randrange(4):
        case 0:
            return {
                "kind": "quote",
                "symbol": key,
                "bid_px": px,
                "bid_qty": rng.random() * 5,
                "ask_px": px + 0.01,
                "ask_qty": rng.random() * 5,
                "update_id": rng.randrange(1 << 40),
            }
        case 1:
            return {
                "kind": "trade",
                "symbol": key,
                "trade_id": rng.randrange(1 << 40),
                "price": px,
                "qty": rng.random(),
                "buyer_is_maker": rng.random() < 0.5,
            }
        case 2:
            return {
                "kind": "book_diff",
                "symbol": key,
                "first_update_id": 1,
                "last_update_id": 2,
                "bids": [[px - i * 0.01, rng.random()] for i in range(rng.randrange(4))],
                "asks": [[px + i * 0.01, rng.random()] for i in range(rng.randrange(4))],
            }
        case _:
            return {
                "kind": "book_snapshot",
                "symbol": key,
                "last_update_id": 3,
                "bids": [[px - i * 0.01, 1.0] for i in range(3)],
                "asks": [[px + 0.01 + i * 0.01, 1.0] for i in range(3)],
            }


def _extreme(rng: random.Random, key: str) -> dict[str, Any]:
    tiny = rng.choice([_SUBNORMAL, 1e-300, 1e-12, 2.2250738585072014e-308])
    big = rng.choice([999_999_999_999.9, 1e11, 5e11])
    px_pair = rng.choice([(tiny, tiny), (big, big), (tiny, big), (big, tiny)])
    match rng.randrange(5):
        case 0:
            return {
                "kind": "quote",
                "symbol": key,
                "bid_px": px_pair[0],
                "bid_qty": rng.choice([0.0, 9.99e14, _SUBNORMAL]),
                "ask_px": px_pair[1],
                "ask_qty": rng.choice([0.0, 9.99e14]),
                "update_id": rng.choice([0, 2**63 - 1]),
                "source_ts_ns": rng.choice([0, 2**63 - 1, None]),
            }
        case 1:
            return {
                "kind": "trade",
                "symbol": key,
                "trade_id": 2**63 - 1,
                "price": rng.choice(px_pair),
                "qty": rng.choice([0.0, 9.99e14]),
                "buyer_is_maker": True,
            }
        case 2:
            return {
                "kind": "book_snapshot",
                "symbol": key,
                "last_update_id": 0,
                "bids": [] if rng.random() < 0.5 else [[px_pair[0], 9.99e14]],
                "asks": [[px_pair[1], 0.0]],
            }
        case 3:
            return {
                "kind": "book_diff",
                "symbol": key,
                "first_update_id": 2**63 - 1,
                "last_update_id": 0,
                "bids": [[px_pair[0], 1.0]] * rng.randrange(0, 50),
                "asks": [[px_pair[1], 1.0]],
            }
        case _:
            uni = "".join(
                chr(rng.choice([0x41, 0xE9, 0x4E2D, 0x1F600])) for _ in range(MAX_KEY_LEN)
            )
            return {
                "kind": "quote",
                "symbol": uni,
                "bid_px": 1.0,
                "bid_qty": 1.0,
                "ask_px": 1.0,
                "ask_qty": 1.0,
            }


def _wrong_type(rng: random.Random, ev: dict[str, Any]) -> dict[str, Any]:
    field_name = rng.choice([k for k in ev if k != "kind"])
    if field_name == "symbol":
        text = rng.choice(["12", "true", '["a"]', '{"a":1}', "null", "1.5"])
    else:
        text = rng.choice(['"12.5"', '"x"', "[1]", '{"a":1}', "null"])
    ev[field_name] = _Raw(text)
    return ev


class _Raw(str):
    """Text spliced into JSON as is."""


def _render(ev: dict[str, Any]) -> bytes:
    parts = []
    for k, v in ev.items():
        text = str(v) if isinstance(v, _Raw) else _json.encode(v).decode()
        parts.append(f'"{k}":{text}')
    return ("{" + ",".join(parts) + "}").encode()


def _huge(rng: random.Random, ev: dict[str, Any]) -> dict[str, Any]:
    numeric = [k for k, v in ev.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    k = rng.choice(numeric)
    ev[k] = _Raw(
        rng.choice(
            [
                "1e400",
                "-1e400",
                "1e12",
                "1e15",
                "-1",
                "-0.0001",
                "0",
                "99999999999999999999999999",
                "9223372036854775808",
            ]
        )
    )
    if k.endswith("qty") and str(ev[k]) in ("0", "1e12"):
        ev[k] = _Raw("1e400")
    if k.endswith("_id") and str(ev[k]) in ("0", "1e12", "1e15"):
        ev[k] = _Raw("-1")
    return ev


def samples(n: int, seed: int = 0, *, max_event_bytes: int = 1_048_576) -> Iterator[Sample]:
    """``n`` records, a seeded mix of every category (about half of them bad)."""
    rng = random.Random(seed)  # noqa: S311 - seeded test data, not secrets
    bad = [c for c in CATEGORIES if c not in ("good",)]
    for _ in range(n):
        key = rng.choice(_KEYS)
        cat = "good" if rng.random() < 0.4 else rng.choice(bad)
        yield Sample(cat, key.encode(), _make(rng, cat, key, max_event_bytes))


def _make(rng: random.Random, cat: str, key: str, max_event_bytes: int) -> bytes | None:
    ev = _trading_event(rng, key)
    match cat:
        case "good":
            return _render(ev)
        case "extreme":
            return _render(_extreme(rng, key))
        case "truncated":
            raw = _render(ev)
            return raw[: rng.randrange(0, len(raw) - 1)]
        case "wrong_type":
            return _render(_wrong_type(rng, ev))
        case "huge_number":
            return _render(_huge(rng, ev))
        case "nan_inf":
            k = rng.choice([k for k, v in ev.items() if isinstance(v, float)] or ["bid_px"])
            ev[k] = _Raw(rng.choice(["NaN", "Infinity", "-Infinity", "nan", "inf"]))
            return _render(ev)
        case "unknown_kind":
            if rng.random() < 0.3:
                del ev["kind"]
            else:
                ev["kind"] = rng.choice(["", "QUOTE", "order", "quote ", "\u00e9", "x" * 300])
            return _render(ev)
        case "wrong_encoding":
            choice = rng.randrange(4)
            if choice == 0:
                return msgspec.msgpack.encode(ev)
            if choice == 1:
                return _render(ev).decode().encode("utf-16")
            if choice == 2:
                bad_utf8 = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82"])
                return _render(ev).replace(key.encode(), bad_utf8, 1)
            depth = rng.choice([5_000, 20_000])
            return _render(ev)[:-1] + b',"x":' + b"[" * depth + b"]" * depth + b"}"
        case "oversized":
            pad = max_event_bytes + 1 + rng.randrange(1024)
            return _render(ev)[:-1] + b',"pad":"' + b"x" * pad + b'"}'
        case "too_many":
            if rng.random() < 0.5:
                ev["symbol"] = "K" * (MAX_KEY_LEN + 1 + rng.randrange(100))
            else:
                ev = {
                    "kind": "book_snapshot",
                    "symbol": key,
                    "last_update_id": 1,
                    "bids": [[1.0, 1.0]] * (MAX_LEVELS + 1),
                    "asks": [],
                }
            return _render(ev)
        case "empty":
            return None
        case "wrong_task":
            return _render({"kind": "sensor", "sensor_id": key, "value": rng.random()})
        case _:  # bitflip
            flipped = bytearray(_render(ev))
            for _ in range(rng.randrange(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            return bytes(flipped)


@dataclass
class FuzzReport:
    """What :func:`fuzz_decoders` saw."""

    records: int = 0
    decoded: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    """Decode failures by reason code."""
    by_category: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, str, str]] = field(default_factory=list)
    """``(category, input head, exception)`` of every crash (first 20 kept)."""
    crash_count: int = 0
    wrong_reason: list[tuple[str, str]] = field(default_factory=list)
    """``(category, reason)`` where a record got a reason other than its category's."""
    non_finite_rows: int = 0
    """Decoded events whose feature row was not finite."""


def fuzz_decoders(n: int, seed: int = 0, *, max_event_bytes: int = 65_536) -> FuzzReport:
    """Decode ``n`` generated records and fold the decodable ones into feature windows."""
    import numpy as np

    codec = event_codec("json")
    trading = FeatureSpec(task=Task.TRADING, window=4)
    states: dict[str, KeyState] = {}
    report = FuzzReport()
    row = np.zeros(trading.n_features, dtype=np.float32)
    for i, s in enumerate(samples(n, seed, max_event_bytes=max_event_bytes)):
        report.records += 1
        report.by_category[s.category] += 1
        want = expected_reason(s.category)
        value = s.value
        try:
            if value is None:
                reason = "empty"
            elif len(value) > max_event_bytes:
                reason = "oversized"
            else:
                event = codec.decode(value, topic="fuzz", partition=0, offset=i)
                key = event.key if len(states) < 64 or event.key in states else _KEYS[0]
                state = states.get(key)
                if state is None:
                    state = states[key] = trading.new_state()
                state.update(event, i * 1_000_000)
                state.write_window(row)
                if not np.isfinite(row).all():
                    report.non_finite_rows += 1
                report.decoded += 1
                reason = ""
        except DecodeError as exc:
            reason = exc.code
            if not str(exc).startswith("decode failed: "):
                report.wrong_reason.append((s.category, f"message {exc}"))
        except SchemaError:
            reason = "wrong_task"
        except Exception as exc:  # noqa: BLE001 - counting every crash is the point
            report.crash_count += 1
            if len(report.crashes) < 20:
                head = repr(value[:120]) if value is not None else "None"
                report.crashes.append((s.category, head, f"{type(exc).__name__}: {exc}"))
            continue
        if reason:
            report.dead[reason] += 1
        if s.category != "bitflip" and (want or "") != reason and len(report.wrong_reason) < 20:
            report.wrong_reason.append((s.category, reason or "decided"))
    return report
