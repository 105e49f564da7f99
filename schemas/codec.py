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


def _code_for(exc: msgspec.DecodeError) -> str:
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
        except msgspec.DecodeError as exc:
            raise DecodeError(
                str(exc), code=_code_for(exc), topic=topic, partition=partition, offset=offset
            ) from exc
        except (UnicodeDecodeError, RecursionError) as exc:
            # msgspec lets these through: invalid UTF-8 in a string, nesting past the C stack.
            what = "invalid UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply"
            raise DecodeError(
                f"{what}: {exc}", code="malformed", topic=topic, partition=partition, offset=offset
            ) from exc

    def encode(self, obj: T) -> bytes:
        """Encode ``obj`` to bytes."""
        return self._encoder.encode(obj)


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
