"""weir itself: ``service.runtime.Runtime`` with default settings, as ``weir serve`` runs it.

Default settings (deadline scheduler, ``max_hold_ms = 0``, budget = the SLO budget, one
worker, at-least-once with the offset tracker, uvloop) with only the broker, topics, group
and bundle set. The ops endpoint is off, except for a single worker, which serves it on a
free port the harness picked and reads before and after each trial
(``bench.peers.opsprobe``); several workers would need a port each.
"""

from __future__ import annotations

from bench.peers.base import run_async
from bench.peers.config import PeerConfig, weir_settings


def serve(cfg: PeerConfig) -> int:
    """Run one weir worker until SIGTERM (drain, commit, exit 0)."""
    from service.logs import configure_logging
    from service.runtime import Runtime

    settings = weir_settings(cfg)
    configure_logging(settings.log.level, settings.log.format)
    runtime = Runtime(settings)
    return run_async(runtime.run(install_signals=True), cfg.loop)
