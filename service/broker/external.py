"""The fake of the broker seam: a broker someone else runs, reached at a given address.

Used when ``WEIR_KAFKA_BOOTSTRAP`` names a broker (CI, a developer's own cluster): ``start``
only checks that it answers metadata requests, ``stop`` leaves it alone.
"""

from __future__ import annotations

import re

from service.broker import _process
from service.broker.base import BrokerKind, BrokerStatus, Progress
from service.errors import BrokerError

__all__ = ["ExternalBroker", "check_bootstrap"]

_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


def check_bootstrap(bootstrap: str, *, source: str = "bootstrap") -> str:
    """``bootstrap`` stripped when it is ``host:port[,host:port...]``; else a BrokerError."""
    value = bootstrap.strip()
    parts = value.split(",")
    for part in parts:
        match = _HOST_PORT.fullmatch(part.strip())
        if match is None or not 1 <= int(match.group("port")) <= 65535:
            raise BrokerError(
                f"bad {source} {bootstrap!r}: expected host:port[,host:port...], "
                "e.g. 127.0.0.1:9092"
            )
    return value


class ExternalBroker:
    """A broker at ``bootstrap`` that weir neither starts nor stops."""

    def __init__(
        self,
        bootstrap: str,
        *,
        source: str = "bootstrap",
        timeout: float = 30.0,
        progress: Progress | None = None,
    ) -> None:
        self.bootstrap = check_bootstrap(bootstrap, source=source)
        self._what = "broker" if source == "bootstrap" else f"broker ({source})"
        self.timeout = timeout
        self._progress = progress or _process.no_progress

    @property
    def kind(self) -> BrokerKind:
        return "external"

    def start(self) -> str:
        """Wait until the broker answers metadata requests; returns its address."""
        _process.wait_ready(
            self.bootstrap.split(",")[0],
            what=self._what,
            timeout=self.timeout,
            progress=self._progress,
        )
        return self.bootstrap

    def stop(self) -> None:
        """Leave it running: weir did not start it."""

    def status(self) -> BrokerStatus:
        try:
            _process.wait_ready(
                self.bootstrap.split(",")[0],
                what=self._what,
                timeout=2.0,
                progress=_process.no_progress,
            )
        except BrokerError:
            return BrokerStatus(kind="external", running=False, bootstrap=self.bootstrap)
        return BrokerStatus(kind="external", running=True, bootstrap=self.bootstrap)
