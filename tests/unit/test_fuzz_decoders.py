"""The event decoders and the serving feature code under fuzzed input: no crash, ever.

A decode either returns an event or raises ``DecodeError`` (whose code becomes the dead
letter's reason); a decoded event always folds into its key's window with finite features.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.fuzz import CATEGORIES, expected_reason, fuzz_decoders, samples
from schemas.codec import event_codec
from schemas.errors import DecodeError, SchemaError
from schemas.events import EVENT_KINDS, Event, Quote
from schemas.features import FeatureSpec, Task

TRADING = FeatureSpec(task=Task.TRADING, window=4)
SENSOR = FeatureSpec(task=Task.SENSOR, window=4)
REASONS = {"malformed", "invalid_value", "unknown_kind"}
#: The same 200 examples every default run (twice the profile's 100); the ``thorough``
#: profile (``--hypothesis-profile=thorough``, tests/conftest.py) runs 2,000.
FUZZ = settings(
    max_examples=2 * settings.default.max_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def _decode(data: bytes, encoding: str = "json") -> Event | None:
    """The event, or None after checking the DecodeError is one the DLQ knows."""
    try:
        return event_codec(encoding).decode(data, topic="t", partition=1, offset=2)
    except DecodeError as exc:
        assert exc.code in REASONS, exc
        assert str(exc).startswith("decode failed: ") and str(exc).endswith(
            " - topic=t partition=1 offset=2"
        )
        return None


def _fold(events: list[Event]) -> None:
    """Fold events into per-key windows of their task; every row must stay finite."""
    states: dict[str, Any] = {}
    row = np.zeros(TRADING.n_features, dtype=np.float32)
    srow = np.zeros(SENSOR.n_features, dtype=np.float32)
    for i, ev in enumerate(events):
        spec = SENSOR if ev.__struct_config__.tag == "sensor" else TRADING
        state = states.setdefault(f"{spec.task}/{ev.key}", spec.new_state())
        try:
            state.update(ev, i * 1_000_000)
        except SchemaError:
            continue
        out = srow if spec is SENSOR else row
        state.write_window(out)
        assert np.isfinite(out).all(), (ev, out)


def test_one_hundred_thousand_generated_records_never_crash() -> None:
    """100k seeded records of every bad kind: no crash, each bad one gets its category's reason."""
    report = fuzz_decoders(100_000, seed=3)
    assert report.records == 100_000
    assert report.crashes == [] and report.crash_count == 0
    assert report.wrong_reason == []
    assert report.non_finite_rows == 0
    assert set(report.by_category) == set(CATEGORIES)
    assert min(report.by_category.values()) > 3000


@pytest.mark.parametrize("category", [c for c in CATEGORIES if c != "bitflip"])
def test_each_category_has_its_outcome(category: str) -> None:
    """Every generated record of a category decodes, or fails with that category's reason."""
    want = expected_reason(category)
    seen = 0
    for s in samples(4000, seed=5, max_event_bytes=65_536):
        if s.category != category:
            continue
        seen += 1
        if s.value is None or len(s.value) > 65_536:
            assert want in ("empty", "oversized")
            continue
        try:
            ev = event_codec().decode(s.value)
        except DecodeError as exc:
            assert exc.code == want, (s.value[:200], exc)
            continue
        if want == "wrong_task":
            assert ev.__struct_config__.tag == "sensor"
        else:
            assert want is None, (s.value[:200], ev)
    assert seen > 50


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_fail_cleanly(data: bytes) -> None:
    """Any bytes at all: an event or a DecodeError, in JSON and in MessagePack."""
    for encoding in ("json", "msgpack"):
        ev = _decode(data, encoding)
        if ev is not None:
            _fold([ev])


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_fields = st.sampled_from(
    [
        "symbol",
        "sensor_id",
        "bid_px",
        "bid_qty",
        "ask_px",
        "ask_qty",
        "price",
        "qty",
        "value",
        "trade_id",
        "update_id",
        "first_update_id",
        "last_update_id",
        "bids",
        "asks",
        "buyer_is_maker",
        "source_ts_ns",
        "unit",
        "schema_version",
    ]
)


@FUZZ
@given(
    kind=st.sampled_from([*EVENT_KINDS, "", "QUOTE", "order"]) | st.text(max_size=6),
    fields=st.dictionaries(_fields, _json_values, max_size=8),
)
def test_json_objects_of_any_shape_decode_or_fail_cleanly(
    kind: str, fields: dict[str, Any]
) -> None:
    """JSON objects with any kind and any field values (NaN, inf, huge ints, nesting) never crash."""
    obj = {"kind": kind, **fields}
    encoded = [("json", json.dumps(obj, allow_nan=True).encode())]
    # MessagePack has no integers past 64 bits: such an object cannot be sent that way.
    with contextlib.suppress(OverflowError):
        encoded.append(("msgpack", msgspec.msgpack.encode(obj)))
    for encoding, raw in encoded:
        ev = _decode(raw, encoding)
        if ev is not None:
            _fold([ev])


_prices = st.floats(min_value=5e-324, max_value=1e12, exclude_max=True)
_qtys = st.floats(min_value=0.0, max_value=1e15, exclude_max=True)


@FUZZ
@given(
    st.lists(
        st.builds(
            Quote, symbol=st.just("K"), bid_px=_prices, bid_qty=_qtys, ask_px=_prices, ask_qty=_qtys
        ),
        min_size=1,
        max_size=12,
    )
)
def test_valid_extreme_quotes_keep_features_finite(quotes: list[Quote]) -> None:
    """Quotes anywhere in the valid ranges (subnormal to 1e12) fold into finite features."""
    events = [event_codec().decode(event_codec().encode(q)) for q in quotes]
    _fold(events)


def test_invalid_utf8_is_a_malformed_record() -> None:
    """Invalid UTF-8 inside a JSON string is a DecodeError naming it, not a UnicodeDecodeError."""
    data = b'{"kind":"quote","symbol":"\xff\xfe","bid_px":1,"bid_qty":1,"ask_px":1,"ask_qty":1}'
    with pytest.raises(DecodeError) as err:
        event_codec().decode(data, topic="q", partition=0, offset=9)
    assert err.value.code == "malformed"
    assert (
        str(err.value) == "decode failed: invalid UTF-8 at byte 26 - topic=q partition=0 offset=9"
    )


def test_invalid_utf8_in_msgpack_is_a_malformed_record() -> None:
    """Invalid UTF-8 in a MessagePack string reads the same whatever msgspec release says it."""
    good = msgspec.msgpack.encode(
        {"kind": "quote", "symbol": "AB", "bid_px": 1, "bid_qty": 1, "ask_px": 1, "ask_qty": 1}
    )
    with pytest.raises(DecodeError) as err:
        event_codec("msgpack").decode(
            good.replace(b"AB", b"\xff\xfe"), topic="q", partition=1, offset=3
        )
    assert err.value.code == "malformed"
    assert (
        str(err.value) == "decode failed: invalid UTF-8 in a string - topic=q partition=1 offset=3"
    )


def test_deep_nesting_is_a_malformed_record() -> None:
    """An unknown field nested 20,000 deep is a DecodeError, not a RecursionError."""
    data = b'{"kind":"quote","symbol":"A","x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(DecodeError) as err:
        event_codec().decode(data)
    assert err.value.code == "malformed"
    assert str(err.value) == "decode failed: nested too deeply"


def test_subnormal_mid_after_a_large_one_clips_the_return() -> None:
    """A mid that underflows the ratio to the previous one gives the clipped return, not a crash."""
    state = TRADING.new_state()
    big = Quote(symbol="A", bid_px=9e11, bid_qty=1.0, ask_px=9e11, ask_qty=1.0)
    tiny = Quote(symbol="A", bid_px=5e-324, bid_qty=1.0, ask_px=5e-324, ask_qty=1.0)
    state.update(big, 1)
    state.update(tiny, 2)
    last = state.window_view()[-1]
    assert last[0] == -TRADING.clip_bps
    assert all(math.isfinite(float(v)) for v in last)
