"""Child process body: ``python -m bench.peers.worker NAME`` runs one contender.

Reads a ``PeerConfig`` as JSON on stdin, runs the contender's ``serve`` until SIGTERM and
exits with its status. Logs go to stderr (the harness sends them to a file). Readiness is
not announced here: the harness warms every contender up through Kafka and waits until
its decisions come back, which proves the same thing for all of them.
"""

from __future__ import annotations

import sys

import msgspec

from bench.peers.base import CONTENDERS
from bench.peers.config import PeerConfig


def main(argv: list[str] | None = None) -> int:
    """Run the contender named by ``argv[0]`` with the config on stdin."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in CONTENDERS:
        print(f"usage: python -m bench.peers.worker {{{','.join(CONTENDERS)}}}", file=sys.stderr)
        return 2
    cfg = msgspec.json.decode(sys.stdin.buffer.read(), type=PeerConfig)
    return CONTENDERS[args[0]].serve()(cfg)


if __name__ == "__main__":
    sys.exit(main())
