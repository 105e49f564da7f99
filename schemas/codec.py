"""JSON and MessagePack codecs for the wire types, built once and reused.

A ``Codec`` wraps one msgspec encoder/decoder pair for one type and one encoding. Build it
at start-up (``event_codec("json")``) and keep it: msgspec decoders are fastest reused.
Decode failures become ``schemas.errors.DecodeError`` naming the field, what was expected,
what came, and the record's coordinates when given, e.g.::

    decode failed: Expected `float`, got `str` - at `$.bid_qty` - topic=quotes partition=3 offset=1200
"""

from __future__ import annotations

import enum
from typing import Any, Generic, TypeVar

import msgspec

from schemas.decision import DeadLetter, Decision
from schemas.errors import DecodeError, SchemaError
from schemas.events import Event

T = TypeVar("T")


class Encoding(enum.StrEnum):
    """Payload encodings weir reads and writes."""

    JSON = "json"
    MSGPACK = "msgpack"


def _parse_encoding(encoding: Encoding | str) -> Encoding:
    try:
        return Encoding(encoding)
    except ValueError:
        raise SchemaError(
            f"unknown encoding {encoding!r}; expected one of {', '.join(e.value for e in Encoding)}"
        ) from None


def _code_for(exc: msgspec.DecodeError | UnicodeDecodeError) -> str:
    if not isinstance(exc, msgspec.ValidationError):
        return "malformed"
    msg = str(exc)
    if msg.endswith("- at `$.kind`") or "Object missing required field `kind`" in msg:
        return "unknown_kind"
    return "invalid_value"


class Codec(Generic[T]):
    """Encoder and decoder of one type in one encoding.

    Call contract: ``decode`` and ``encode`` are pure and thread-safe; they allocate only
    the result. Not for use with types other than the one it was built for.
    """

    __slots__ = ("_decoder", "_encoder", "encoding", "type")

    def __init__(self, type_: type[T], encoding: Encoding | str = Encoding.JSON) -> None:
        self.type = type_
        self.encoding = _parse_encoding(encoding)
        self._decoder: msgspec.json.Decoder[T] | msgspec.msgpack.Decoder[T]
        self._encoder: msgspec.json.Encoder | msgspec.msgpack.Encoder
        if self.encoding is Encoding.JSON:
            self._decoder = msgspec.json.Decoder(type_)
            self._encoder = msgspec.json.Encoder()
        else:
            self._decoder = msgspec.msgpack.Decoder(type_)
            self._encoder = msgspec.msgpack.Encoder()

    def decode(
        self,
        data: bytes | memoryview,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> T:
        """Decode ``data``; raise ``DecodeError`` naming the field and coordinates."""
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            bad_utf8 = self._invalid_utf8(data, exc)
            if bad_utf8 is None:
                message, code = str(exc), _code_for(exc)
            else:
                message, code = bad_utf8, "malformed"
            raise DecodeError(
                message, code=code, topic=topic, partition=partition, offset=offset
            ) from exc
        except RecursionError as exc:  # msgspec lets nesting past the C stack through
            raise DecodeError(
                "nested too deeply",
                code="malformed",
                topic=topic,
                partition=partition,
                offset=offset,
            ) from exc

    def _invalid_utf8(self, data: bytes | memoryview, exc: Exception) -> str | None:
        """weir's own text for invalid UTF-8 in ``data``, else None (only on a failed decode).

        msgspec reports it in its own words, and those changed between releases (0.22 let a
        ``UnicodeDecodeError`` through; 0.23 raises "Invalid UTF-8 encoded string"), so the
        product's message is made here. JSON is UTF-8 as a whole: the first bad byte is named.
        """
        if isinstance(exc, msgspec.ValidationError):
            return None
        if self.encoding is Encoding.JSON:
            try:
                bytes(data).decode("utf-8")
            except UnicodeDecodeError as bad:
                return f"invalid UTF-8 at byte {bad.start}"
            return None
        # MessagePack strings sit between binary fields: no whole-buffer check is possible.
        if isinstance(exc, UnicodeDecodeError) or "UTF-8" in str(exc):
            return "invalid UTF-8 in a string"
        return None

    def encode(self, obj: T) -> bytes:
        """Encode ``obj`` to bytes."""
        return self._encoder.encode(obj)

    @property
    def encoder(self) -> msgspec.json.Encoder | msgspec.msgpack.Encoder:
        """The msgspec encoder itself: a hot loop binds ``encoder.encode`` once and saves
        a Python call per message (``encode`` is that call)."""
        return self._encoder


_SHARED: dict[tuple[type[object], Encoding], Codec[Any]] = {}


def shared_codec(type_: type[T], encoding: Encoding | str = Encoding.JSON) -> Codec[T]:
    """The process-wide codec of ``type_`` in ``encoding``, built on first use."""
    key = (type_, _parse_encoding(encoding))
    codec = _SHARED.get(key)
    if codec is None:
        codec = _SHARED[key] = Codec(type_, key[1])
    return codec


def event_codec(encoding: Encoding | str = Encoding.JSON) -> Codec[Event]:
    """The shared codec for inbound events in ``encoding``."""
    return shared_codec(Event, encoding)  # type: ignore[arg-type]


def decision_codec(encoding: Encoding | str = Encoding.JSON) -> Codec[Decision]:
    """The shared codec for decisions in ``encoding``."""
    return shared_codec(Decision, encoding)


def dead_letter_codec(encoding: Encoding | str = Encoding.JSON) -> Codec[DeadLetter]:
    """The shared codec for dead-letter records in ``encoding``."""
    return shared_codec(DeadLetter, encoding)
