"""The ``weir`` command: one entry point, a subcommand group per area.

Each group lives next to the code it drives and exposes ``register(subparsers)``, which adds
its parser with ``set_defaults(func=handler)``; a handler takes the parsed namespace and
returns the exit code. Groups of packages above ``service`` (``replay``) are found through
the ``weir.commands`` entry-point group, so nothing here imports upward.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from schemas.errors import WeirError

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

# Groups owned by this package and the ones below it, imported lazily by module name so
# that ``weir --help`` stays fast and a missing optional dependency breaks one group only.
_BUILTIN_GROUPS: tuple[str, ...] = ("service.commands", "service.broker.cli", "engines.cli")


def _load_groups() -> list[Register]:
    groups: list[Register] = [importlib.import_module(n).register for n in _BUILTIN_GROUPS]
    plugins = sorted(entry_points(group="weir.commands"), key=lambda e: e.name)
    groups.extend(ep.load() for ep in plugins)
    return groups


def build_parser() -> argparse.ArgumentParser:
    """The full ``weir`` parser with every group registered."""
    parser = argparse.ArgumentParser(
        prog="weir",
        description="Kafka-native, low-latency streaming inference with deadline-aware "
        "micro-batching.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _load_groups():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``weir``; returns the process exit code (errors print one line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except WeirError as exc:
        print(f"weir: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
