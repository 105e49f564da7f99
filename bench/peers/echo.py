"""The echo floor: ``replay.echo.Echo``, consume -> produce an ``ok`` decision, no model.

No decode, no features, no inference: what any contender on this broker, client and host
pays before doing anything. Same aiokafka settings as weir (``service.kafka``).
"""

from __future__ import annotations

from bench.peers.base import run_async
from bench.peers.config import PeerConfig, weir_settings


def serve(cfg: PeerConfig) -> int:
    """Run the echo until SIGTERM."""
    from replay.echo import Echo

    return run_async(Echo(weir_settings(cfg)).run(install_signals=True), cfg.loop)
