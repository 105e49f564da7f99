"""A throwaway certificate authority and broker certificate, made with the ``openssl`` CLI.

For tests and chaos runs only: keys are unencrypted on disk (the PKCS#12 keystore the
broker reads has a random password), valid for two days, for loopback names only
(``127.0.0.1``, ``localhost``). No ``cryptography`` package needed; ``openssl`` 1.1.1+ is.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from service.errors import ServiceError

__all__ = ["Pki", "make_pki"]

_DAYS = "2"


@dataclass(frozen=True)
class Pki:
    """Paths of one throwaway CA and the broker certificate it signed."""

    ca_cert: Path
    """PEM certificate of the CA: a client's ``ssl_cafile``."""
    broker_cert: Path
    broker_key: Path
    keystore: Path
    """PKCS#12 holding the broker key, its certificate and the CA: Kafka's keystore."""
    keystore_password: str


def _openssl(*args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise ServiceError("openssl not found on PATH: chaos.tls makes certificates with it")
    full_env = {**os.environ, **env} if env else None
    done = subprocess.run(
        [exe, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise ServiceError(
            f"openssl {args[0]} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )


def make_pki(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    """Make a CA and a broker certificate for ``hosts`` in ``directory`` (created)."""
    d = directory.absolute()
    d.mkdir(parents=True, exist_ok=True)
    san = ",".join(
        f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts
    )
    (d / "broker.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={san}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        _DAYS,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=weir-chaos-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-keyout",
        "broker.key",
        "-out",
        "broker.csr",
        "-subj",
        f"/CN={hosts[0]}",
        cwd=d,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "broker.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-sha256",
        "-days",
        _DAYS,
        "-extfile",
        "broker.ext",
        "-out",
        "broker.pem",
        cwd=d,
    )
    password = secrets.token_hex(16)
    _openssl(
        "pkcs12",
        "-export",
        "-in",
        "broker.pem",
        "-inkey",
        "broker.key",
        "-certfile",
        "ca.pem",
        "-name",
        "broker",
        "-out",
        "broker.p12",
        "-passout",
        "env:WEIR_CHAOS_P12",
        cwd=d,
        env={"WEIR_CHAOS_P12": password},
    )
    for name in ("ca.key", "broker.key", "broker.p12"):
        (d / name).chmod(0o600)
    return Pki(
        ca_cert=d / "ca.pem",
        broker_cert=d / "broker.pem",
        broker_key=d / "broker.key",
        keystore=d / "broker.p12",
        keystore_password=password,
    )
