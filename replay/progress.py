"""The progress line of a running replay (sent, decided, rate, p99 so far, sender lag)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import IO

from replay.measure import Recorder


class Progress:
    """A progress line on ``stream``: redrawn every ``interval`` s on a terminal, else a
    plain line every ``log_interval`` s (so CI logs show it without flooding)."""

    def __init__(
        self,
        total: int,
        planned_s: float | None,
        *,
        stream: IO[str] | None = None,
        interval: float = 0.25,
        log_interval: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if self.tty else log_interval
        self.total = total
        self.planned_s = planned_s
        self.enabled = enabled
        self._t0 = time.monotonic()
        self._last_t = self._t0
        self._last_decided = 0
        self.lines = 0

    def draw(self, rec: Recorder) -> None:
        """Write one progress line."""
        snap = rec.snapshot()
        now = time.monotonic()
        dt = now - self._last_t
        rate = (snap.decided - self._last_decided) / dt if dt > 0 else 0.0
        self._last_t, self._last_decided = now, snap.decided
        p99 = "-" if snap.p99_ms is None else f"{snap.p99_ms:,.2f} ms"
        planned = f"/{self.planned_s:,.0f}" if self.planned_s else ""
        line = (
            f"sent {snap.sent:,}/{self.total:,}  decided {snap.decided:,}  "
            f"{rate:,.0f}/s  p99 {p99}  sender lag max {snap.max_lag_ms:,.1f} ms  "
            f"{now - self._t0:,.0f}{planned} s"
        )
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.lines += 1

    async def run(self, rec: Recorder) -> None:
        """Draw until cancelled."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(self.interval)
            self.draw(rec)

    def done(self) -> None:
        """End the terminal line."""
        if self.enabled and self.tty and self.lines:
            self.stream.write("\n")
            self.stream.flush()
