"""The base of the brokers weir runs itself: start, stop and status around one spawned process.

Private to ``service.broker``. A subclass says how to launch its process (:meth:`_spawn`) and
where it logs; this class does the rest of the :class:`service.broker.base.Broker` contract:
finds a running one through the state file, records a new one there, waits until it answers
metadata, stops it and reports it, naming it ``display_name`` in every progress line.
"""

from __future__ import annotations

import abc
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from service import processes
from service.broker import _process
from service.broker.base import BrokerKind, BrokerStatus, Progress


@dataclass(frozen=True, kw_only=True)
class Spawned:
    """What :meth:`ManagedBroker._spawn` started: the process and what the state file records."""

    proc: subprocess.Popen[bytes]
    port: int
    version: str
    #: A string the process's command line contains (guards against a reused pid).
    marker: str
    #: The logs to quote when it dies or never becomes ready.
    logs: Sequence[Path]
    controller_port: int | None = None


class ManagedBroker(abc.ABC):
    """A broker process on loopback that weir spawns, records in ``state.json`` and stops.

    ``state_dir`` defaults to ``<cache>/run/<kind>``; ``port=0`` reuses the previous run's
    port when free, else picks a free one.
    """

    #: Which implementation this is (``Broker.kind``).
    KIND: ClassVar[BrokerKind]
    #: How progress lines and status name it, e.g. ``"Apache Kafka"``.
    display_name: ClassVar[str]

    def __init__(
        self,
        *,
        port: int,
        state_dir: Path | None,
        start_timeout: float,
        stop_timeout: float,
        progress: Progress | None,
    ) -> None:
        self.port = _process.check_port(port)
        default = _process.cache_root() / "run" / self.KIND
        self.state_dir = (state_dir or default).expanduser().absolute()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._progress = progress or _process.no_progress
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def kind(self) -> BrokerKind:
        return self.KIND

    @property
    def state_file(self) -> Path:
        return self.state_dir / _process.STATE_FILE

    @property
    @abc.abstractmethod
    def log_file(self) -> Path:
        """The broker's own log, recorded in the state file and named by status."""

    @abc.abstractmethod
    def _spawn(self, previous: _process.BrokerState | None) -> Spawned:
        """Launch the process (not yet ready); ``previous`` is the last run's state, if any."""

    # ------------------------------------------------------------------------- contract

    def start(self) -> str:
        began = time.monotonic()
        previous = _process.read_state(self.state_file)
        if previous is not None and processes.pid_alive(previous.pid, previous.marker):
            self._progress(
                f"{self.display_name} {previous.version} already running at {previous.bootstrap} "
                f"(pid {previous.pid}, state dir {self.state_dir})"
            )
            return previous.bootstrap
        spawned = self._spawn(previous)
        proc = self._proc = spawned.proc
        bootstrap = f"{_process.HOST}:{spawned.port}"
        _process.write_state(
            self.state_file,
            _process.BrokerState(
                kind=self.kind,
                pid=proc.pid,
                bootstrap=bootstrap,
                port=spawned.port,
                controller_port=spawned.controller_port,
                version=spawned.version,
                marker=spawned.marker,
                log_file=str(self.log_file),
                started_wall_ns=time.time_ns(),
            ),
        )
        what = f"{self.display_name} {spawned.version}"
        self._progress(f"started {what} (pid {proc.pid}), log {self.log_file}")
        _process.wait_ready(
            bootstrap,
            what=what,
            timeout=self.start_timeout,
            progress=self._progress,
            proc=proc,
            logs=spawned.logs,
        )
        self._progress(f"ready in {time.monotonic() - began:.1f} s at {bootstrap}")
        return bootstrap

    def stop(self) -> None:
        state = _process.read_state(self.state_file)
        if state is None or not processes.pid_alive(state.pid, state.marker):
            self._progress(f"{self.display_name} not running (state dir {self.state_dir})")
            return
        began = time.monotonic()
        self._progress(f"stopping {self.display_name} {state.version} (pid {state.pid})")
        clean = _process.terminate(
            state.pid, state.marker, timeout=self.stop_timeout, proc=self._proc
        )
        if clean:
            self._progress(f"stopped in {time.monotonic() - began:.1f} s")
        else:
            self._progress(f"killed (SIGKILL) after {self.stop_timeout:g} s without a clean exit")

    def status(self) -> BrokerStatus:
        state = _process.read_state(self.state_file)
        if state is None:
            return BrokerStatus(kind=self.kind, running=False, state_dir=str(self.state_dir))
        return BrokerStatus(
            kind=self.kind,
            running=processes.pid_alive(state.pid, state.marker),
            bootstrap=state.bootstrap,
            pid=state.pid,
            version=f"{self.display_name} {state.version}",
            state_dir=str(self.state_dir),
            log_file=state.log_file,
        )
