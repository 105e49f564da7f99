"""The prepared feed: the events of a feed file (or its prefix), ready to send.

Source times: the feed's ``source_ts_ns`` are from the day it was recorded. With
``source_ts="shift"`` (default) each payload's ``source_ts_ns`` is rewritten to
``intended_i - (d_i - min d)`` where ``d_i = recv_i - source_ts_i`` is the recorded transit
(including the capture host's clock offset): the event keeps its recorded excess transit
and the clock offset drops out. ``keep`` sends payloads unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from replay.errors import ReplayError
from schemas.codec import Encoding, event_codec
from schemas.events import Event
from schemas.feed import FeedReader

I64 = npt.NDArray[np.int64]

SOURCE_TS_MODES: Final = ("shift", "keep")


class Plan:
    """The events of a feed (or its prefix), ready to send: keys, payloads, pace offsets."""

    def __init__(
        self,
        *,
        path: Path,
        feed_rows: int,
        keys: list[bytes],
        events: list[Event],
        recv_rel: I64,
        excess: I64,
        encoding: Encoding,
        source_ts: str,
    ) -> None:
        self.path = path
        self.feed_rows = feed_rows
        self.keys = keys
        self.events = events
        self.recv_rel = recv_rel
        self.excess = excess
        """Recorded transit above the feed's minimum, ns; -1 where there is no source time."""
        self.encoding = encoding
        self.source_ts = source_ts
        self._encode = event_codec(encoding).encode
        self._fixed: list[bytes] | None = None
        if source_ts == "keep" or not bool(np.any(excess >= 0)):
            self._fixed = [self._encode(e) for e in events]

    @property
    def n(self) -> int:
        """Events to send."""
        return len(self.keys)

    @property
    def span_s(self) -> float:
        """Recorded span of the events to send, s."""
        return float(self.recv_rel[-1]) / 1e9 if self.n else 0.0

    def payload(self, i: int, intended_ns: int) -> bytes:
        """Event ``i`` encoded for the input topic, its source time shifted if asked."""
        if self._fixed is not None:
            return self._fixed[i]
        ex = int(self.excess[i])
        event = self.events[i]
        if ex < 0:
            return self._encode(event)
        return self._encode(msgspec.structs.replace(event, source_ts_ns=intended_ns - ex))


def load_plan(
    path: str | Path,
    *,
    encoding: Encoding | str = Encoding.JSON,
    limit: int | None = None,
    seconds: float | None = None,
    source_ts: str = "shift",
) -> Plan:
    """Read a feed into memory for replay: the first ``limit`` rows / ``seconds`` of it."""
    if source_ts not in SOURCE_TS_MODES:
        raise ReplayError(
            f"source_ts must be one of {', '.join(SOURCE_TS_MODES)}, got {source_ts!r}"
        )
    if limit is not None and limit < 1:
        raise ReplayError(f"--limit must be >= 1, got {limit}")
    if seconds is not None and not seconds > 0:
        raise ReplayError(f"--seconds must be > 0, got {seconds}")
    reader = FeedReader(path)
    decode = reader.codec.decode
    keys: list[bytes] = []
    events: list[Event] = []
    recv: list[int] = []
    src: list[int] = []
    first: int | None = None
    cutoff = None if seconds is None else int(seconds * 1e9)
    done = False
    for batch in reader.batches(columns=["recv_ns", "source_ts_ns", "payload"]):
        cols = batch.to_pydict()
        for r, s, payload in zip(
            cols["recv_ns"], cols["source_ts_ns"], cols["payload"], strict=True
        ):
            if first is None:
                first = r
            if cutoff is not None and r - first >= cutoff:
                done = True
                break
            event = decode(payload)
            keys.append(event.key.encode())
            events.append(event)
            recv.append(r)
            src.append(-1 if s is None else s)
            if limit is not None and len(keys) >= limit:
                done = True
                break
        if done:
            break
    if not keys:
        raise ReplayError(f"feed {path} has no events to replay")
    recv_arr = np.asarray(recv, dtype=np.int64)
    # Replays pace on receive order; a backward step in the capture is sent at once.
    recv_rel = np.maximum.accumulate(recv_arr - recv_arr[0])
    src_arr = np.asarray(src, dtype=np.int64)
    has = src_arr >= 0
    excess = np.full(src_arr.size, -1, np.int64)
    if has.any():
        transit = recv_arr[has] - src_arr[has]
        excess[has] = transit - transit.min()
    return Plan(
        path=Path(path),
        feed_rows=reader.num_rows,
        keys=keys,
        events=events,
        recv_rel=recv_rel,
        excess=excess,
        encoding=Encoding(encoding),
        source_ts=source_ts,
    )
