"""SASL/SCRAM-SHA-512 over TLS: served with the right credentials, refused with wrong ones.

The chaos broker's ``SASL_SSL`` listener has a certificate from a throwaway CA
(``chaos.tls``) and one SCRAM user made at storage format time. ``weir serve`` gets the
password from ``WEIR_KAFKA__SASL_PASSWORD`` only (never in a file), and its log and its
``/status`` document must never show it; its HTTP endpoints must be on loopback.
"""

from __future__ import annotations

import secrets
import time

from chaos.context import Context, Row, drive, http_port
from chaos.procs import ServiceProc
from service.http import http_get

__all__ = ["sasl_tls"]


def _sasl(ctx: Context, *, cafile: bool = True) -> dict[str, object]:
    assert ctx.pki is not None
    out: dict[str, object] = {
        "bootstrap_servers": ctx.broker.sasl_bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": ctx.user.name,
    }
    if cafile:
        out["ssl_cafile"] = str(ctx.pki.ca_cert)
    return out


def _final_error(svc: ServiceProc) -> str:
    lines = [line for _, line in svc.lines if line.startswith("weir: error:")]
    return lines[-1][:300] if lines else ""


async def _refused(ctx: Context, name: str, password: str, *, cafile: bool = True) -> ServiceProc:
    topics = await ctx.topics(name)
    cfg = ctx.config(
        name, topics, kafka=_sasl(ctx, cafile=cafile), delivery={"startup_timeout_ms": 4000}
    )
    svc = ctx.service(name, ["serve", "--config", str(cfg)], WEIR_KAFKA__SASL_PASSWORD=password)
    await svc.start()
    if await svc.wait(40) is None:
        await svc.kill()
    else:
        await svc.terminate(1)
    return svc


async def sasl_tls(ctx: Context) -> Row:
    """Right credentials: every input decided; wrong password or unknown CA: refused with a
    clear error; no secret in any log or in ``/status``."""
    name = "sasl_tls"
    row = Row(scenario=name)
    began = time.monotonic()
    secret = ctx.user.password.reveal()
    topics = await ctx.topics(name)
    port = http_port()
    cfg = ctx.config(name, topics, kafka=_sasl(ctx), http={"enabled": True, "port": port})
    svc = ctx.service(name, ["serve", "--config", str(cfg)], WEIR_KAFKA__SASL_PASSWORD=secret)
    await svc.start()
    try:
        await svc.wait_event("partitions_assigned", timeout_s=90)
        run = await drive(ctx, topics, rate=200.0, seconds=ctx.scale(2.0, 10.0))
        code, status_doc = await http_get(port, "/status")
    finally:
        status = await svc.terminate(30)
    row.apply(run.ledger.tally())
    row.peak_rss_mb = round(svc.peak_rss_kb / 1024, 1) if svc.peak_rss_kb else None
    listening = [rec.get("url", "") for _, rec in svc.events("http_listening")]
    wrong_pw = secrets.token_hex(12)
    bad = await _refused(ctx, f"{name}-wrong-password", wrong_pw)
    untrusted = await _refused(ctx, f"{name}-unknown-ca", secret, cafile=False)
    logs = svc.text() + bad.text() + untrusted.text()
    row.figures.update(
        status_http=code,
        http_listening=listening,
        wrong_password_exit=bad.returncode,
        wrong_password_error=_final_error(bad),
        wrong_password_auth_lines=sum("Authentication failed" in line for _, line in bad.lines),
        unknown_ca_exit=untrusted.returncode,
        unknown_ca_error=_final_error(untrusted),
        exit_status=status,
    )
    row.checks = {
        "right credentials: lost == 0": row.lost == 0 and run.complete and row.events > 0,
        "wrong password refused": bad.returncode not in (None, 0),
        "refusal says authentication failed": "Authentication failed" in bad.text(),
        "final error names the refusal": "refused the connection" in _final_error(bad)
        and "SaslAuthenticationFailed" in _final_error(bad)
        and "CERTIFICATE_VERIFY_FAILED" in _final_error(untrusted),
        "unknown CA refused": untrusted.returncode not in (None, 0)
        and "CERTIFICATE_VERIFY_FAILED" in untrusted.text(),
        "no secret in logs": secret not in logs and wrong_pw not in logs,
        "no secret in /status": code == 200 and secret.encode() not in status_doc,
        "endpoints on loopback": bool(listening)
        and all(u.startswith("http://127.0.0.1:") for u in listening),
        "clean exit": status == 0,
    }
    row.duration_s = round(time.monotonic() - began, 1)
    return row.judge()
