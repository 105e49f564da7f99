"""structlog, configured once, the fast way.

Filtering bound logger at the configured level, cached loggers, contextvars merged in,
orjson rendering straight to bytes on stderr. Events are short snake_case names with values
as keywords. Nothing in the hot path logs per event.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class RepeatFilter(logging.Filter):
    """Lets a stdlib log message template through at most once per ``interval_s``.

    aiokafka logs every metadata retry while a broker is down (hundreds of thousands of
    lines in ten seconds); the first of each kind per interval is enough, with a count of
    what was dropped.
    """

    def __init__(self, interval_s: float = 5.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} like this dropped in {self.interval_s:g} s]"
        return True


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog for the process (idempotent; later calls reconfigure)."""
    try:
        lvl = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}"
        ) from None
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if fmt == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=orjson.dumps))
        factory: Any = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory = structlog.PrintLoggerFactory(sys.stderr)
    # Third-party libraries log through the stdlib: keep them, rate-limited, on stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.WARNING))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A bound logger named ``name``."""
    return structlog.get_logger(name)
