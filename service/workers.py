"""``weir serve --workers N``: one process per core, one consumer group, supervised.

The parent starts N ``weir serve --worker-index i`` children (same settings file and
environment), restarts a child that dies with a non-zero status (after a back-off that
doubles up to 30 s, reset after a minute of uptime), forwards SIGTERM/SIGINT to every
child (a second signal: SIGKILL), waits for them to drain, and exits 0 when all exited
cleanly, else with the first non-zero status. A worker that stops on its own (a dead
background task, a publish failure) exits non-zero and is restarted from the last commit;
one whose back-off is running when a signal arrives is not restarted.

Process start, clock and sleep are injected (``spawn``, ``clock``, ``sleep``), so tests
drive the loop with fake processes and a fake clock.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from service.logs import get_logger

log = get_logger("weir.workers")

RESET_AFTER_S = 60.0
"""A worker up this long gets its back-off reset to the first step."""
FIRST_BACKOFF_S = 0.5


class Proc(Protocol):
    """A started worker process (``subprocess.Popen`` satisfies it)."""

    @property
    def pid(self) -> int: ...
    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...


Spawn = Callable[[list[str]], Proc]


class Supervisor:
    """Starts, watches and restarts worker processes."""

    def __init__(
        self,
        workers: int,
        config: str | None,
        *,
        poll_s: float = 0.2,
        max_backoff_s: float = 30.0,
        spawn: Spawn = subprocess.Popen,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.workers = workers
        self.config = config
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self._popen = spawn
        self._clock = clock
        self._sleep = sleep
        self.procs: dict[int, Proc] = {}
        self.started_at: dict[int, float] = {}
        self.backoff: dict[int, float] = dict.fromkeys(range(workers), FIRST_BACKOFF_S)
        self.restarts = 0
        self._stopping = False
        self._signals = 0

    def _argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "service.cli", "serve", "--worker-index", str(index)]
        if self.config:
            argv += ["--config", self.config]
        return argv

    def _spawn(self, index: int) -> None:
        self.procs[index] = self._popen(self._argv(index))
        self.started_at[index] = self._clock()
        log.info("worker_started", worker=index, pid=self.procs[index].pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self._stopping = True
        sig = signal.SIGKILL if self._signals > 1 else signal.SIGTERM
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(sig)

    def run(self, *, install_signals: bool = True) -> int:
        """Supervise until a signal stops everything; returns the exit status."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        for i in range(self.workers):
            self._spawn(i)
        status = 0
        while self.procs:
            self._sleep(self.poll_s)
            for i, p in list(self.procs.items()):
                rc = p.poll()
                if rc is None:
                    continue
                if self._stopping:
                    del self.procs[i]
                    status = status or (rc if rc > 0 else 0)
                    continue
                up = self._clock() - self.started_at[i]
                if up > RESET_AFTER_S:
                    self.backoff[i] = FIRST_BACKOFF_S
                delay = self.backoff[i]
                self.backoff[i] = min(delay * 2, self.max_backoff_s)
                log.warning("worker_died", worker=i, status=rc, restart_in_s=delay)
                self._sleep(delay)
                if self._stopping:  # a signal came during the back-off
                    del self.procs[i]
                    status = status or (rc if rc > 0 else 0)
                    continue
                self.restarts += 1
                self._spawn(i)
        log.info("supervisor_stopped", status=status, restarts=self.restarts)
        return status
