"""A dedicated Apache Kafka for chaos runs: extra listeners for a proxy and for SASL/TLS.

Kafka tells clients the addresses of its listeners (``advertised.listeners``), so a proxy in
front of it must be advertised in its place. :class:`ChaosKafka` is
``service.broker.ApacheKafka`` with the project's ``server.properties`` template and up to
two extra listeners beside the plain one (which the readiness probe and admin calls use):

- ``PROXIED``: plaintext, bound to ``inner_port`` and advertised at ``proxy_port``; a
  :class:`chaos.proxy.ChaosProxy` forwards ``proxy_port`` to ``inner_port``;
- ``SASL_SSL``: SCRAM-SHA-512 over TLS on ``sasl_port``, the certificate from
  :func:`chaos.tls.make_pki`, its users added at storage format time
  (``kafka-storage format --add-scram``).

Ports are picked once, at construction, so a stop and a start (same state directory) bring
the broker back at the same addresses.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from chaos.tls import Pki
from service.broker import ApacheKafka
from service.broker._process import free_port
from service.broker.base import Progress
from service.broker.kafka import deploy_dir
from service.errors import BrokerError
from service.settings import Secret

__all__ = ["ChaosKafka", "ScramUser"]

_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ScramUser:
    """A SCRAM-SHA-512 user the broker knows from its first start."""

    name: str
    password: Secret


def _replace_line(text: str, key: str, value: str) -> str:
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
    if len(hits) != 1:
        raise BrokerError(f"server.properties template: expected one {key}= line, got {len(hits)}")
    lines[hits[0]] = f"{key}={value}"
    return "\n".join(lines) + "\n"


class ChaosKafka(ApacheKafka):
    """``ApacheKafka`` with a proxied listener and/or a SASL_SSL listener (module docstring)."""

    def __init__(
        self,
        *,
        state_dir: Path,
        proxied: bool = False,
        pki: Pki | None = None,
        users: tuple[ScramUser, ...] = (),
        progress: Progress | None = None,
    ) -> None:
        state_dir = state_dir.absolute()
        state_dir.mkdir(parents=True, exist_ok=True)
        self.inner_port = free_port() if proxied else None
        self.proxy_port = free_port() if proxied else None
        self.sasl_port = free_port() if pki is not None else None
        self.pki = pki
        self.users = users
        deploy = state_dir / "deploy"
        deploy.mkdir(exist_ok=True)
        source = deploy_dir()
        for name in ("pom.xml", "log4j2.properties"):
            shutil.copyfile(source / name, deploy / name)
        (deploy / "server.properties").write_text(
            self._template((source / "server.properties").read_text())
        )
        super().__init__(
            port=free_port(), state_dir=state_dir / "broker", deploy=deploy, progress=progress
        )

    @property
    def proxied_bootstrap(self) -> str:
        """Where a client reaches the broker through the proxy (``proxy_port``)."""
        if self.proxy_port is None:
            raise BrokerError("this ChaosKafka has no proxied listener")
        return f"{_HOST}:{self.proxy_port}"

    @property
    def inner_address(self) -> tuple[str, int]:
        """The proxied listener itself: what the proxy forwards to."""
        if self.inner_port is None:
            raise BrokerError("this ChaosKafka has no proxied listener")
        return _HOST, self.inner_port

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_SSL listener."""
        if self.sasl_port is None:
            raise BrokerError("this ChaosKafka has no SASL_SSL listener")
        return f"{_HOST}:{self.sasl_port}"

    def _template(self, text: str) -> str:
        listeners = ["PLAINTEXT://127.0.0.1:${port}", "CONTROLLER://127.0.0.1:${controller_port}"]
        advertised = ["PLAINTEXT://127.0.0.1:${port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        extra: list[str] = []
        if self.inner_port is not None:
            listeners.append(f"PROXIED://{_HOST}:{self.inner_port}")
            advertised.append(f"PROXIED://{_HOST}:{self.proxy_port}")
            protocols.append("PROXIED:PLAINTEXT")
        if self.pki is not None:
            for value in (str(self.pki.keystore), self.pki.keystore_password):
                if "$" in value or "\\" in value or "\n" in value:
                    raise BrokerError(f"unusable character in keystore setting {value!r}")
            listeners.append(f"SASL_SSL://{_HOST}:{self.sasl_port}")
            advertised.append(f"SASL_SSL://{_HOST}:{self.sasl_port}")
            protocols.append("SASL_SSL:SASL_SSL")
            extra += [
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.location={self.pki.keystore}",
                f"ssl.keystore.password={self.pki.keystore_password}",
                f"ssl.key.password={self.pki.keystore_password}",
                "ssl.client.auth=none",
            ]
        text = _replace_line(text, "listeners", ",".join(listeners))
        text = _replace_line(text, "advertised.listeners", ",".join(advertised))
        text = _replace_line(text, "listener.security.protocol.map", ",".join(protocols))
        return text + "\n# chaos listeners\n" + "\n".join(extra) + "\n"

    def _format_options(self) -> list[str]:
        """The SCRAM users, added at storage format time (``--add-scram``)."""
        options: list[str] = []
        for user in self.users:
            secret = user.password.reveal()
            if any(c in secret for c in ",]=[\"'") or any(c in user.name for c in ",]=["):
                raise BrokerError(
                    f"SCRAM user {user.name!r}: name or password has , = [ ] or quotes"
                )
            options += ["--add-scram", f"SCRAM-SHA-512=[name={user.name},password={secret}]"]
        return options

    def _format_secrets(self) -> tuple[str, ...]:
        return tuple(user.password.reveal() for user in self.users)
