"""``weir serve --workers N``: one process per core, one consumer group, supervised.

The parent starts N ``weir serve --worker-index i`` children (same settings file and
environment), restarts a child that dies with a non-zero status (after a back-off that
doubles up to 30 s, reset after a minute of uptime), forwards SIGTERM/SIGINT to every
child, waits for them to drain, and exits 0 when all exited cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

from service.logs import get_logger

log = get_logger("weir.workers")


class Supervisor:
    """Starts, watches and restarts worker processes."""

    def __init__(
        self, workers: int, config: str | None, *, poll_s: float = 0.2, max_backoff_s: float = 30.0
    ) -> None:
        self.workers = workers
        self.config = config
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.backoff: dict[int, float] = dict.fromkeys(range(workers), 0.5)
        self.restarts = 0
        self._stopping = False
        self._signals = 0

    def _argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "service.cli", "serve", "--worker-index", str(index)]
        if self.config:
            argv += ["--config", self.config]
        return argv

    def _spawn(self, index: int) -> None:
        self.procs[index] = subprocess.Popen(self._argv(index))
        self.started_at[index] = time.monotonic()
        log.info("worker_started", worker=index, pid=self.procs[index].pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self._stopping = True
        sig = signal.SIGKILL if self._signals > 1 else signal.SIGTERM
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(sig)

    def run(self) -> int:
        """Supervise until a signal stops everything; returns the exit status."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for i in range(self.workers):
            self._spawn(i)
        status = 0
        while self.procs:
            time.sleep(self.poll_s)
            for i, p in list(self.procs.items()):
                rc = p.poll()
                if rc is None:
                    continue
                if self._stopping:
                    del self.procs[i]
                    status = status or (rc if rc > 0 else 0)
                    continue
                up = time.monotonic() - self.started_at[i]
                if up > 60:
                    self.backoff[i] = 0.5
                delay = self.backoff[i]
                self.backoff[i] = min(delay * 2, self.max_backoff_s)
                log.warning("worker_died", worker=i, status=rc, restart_in_s=delay)
                time.sleep(delay)
                self.restarts += 1
                self._spawn(i)
        log.info("supervisor_stopped", status=status, restarts=self.restarts)
        return status
