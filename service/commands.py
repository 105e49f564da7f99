"""``weir serve`` and ``weir config``: the service's own command groups."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from service.settings import defaults_toml, load_settings

_Sub = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _serve(args: argparse.Namespace) -> int:
    from service.logs import configure_logging
    from service.runtime import Runtime
    from service.workers import Supervisor

    settings = load_settings(args.config)
    configure_logging(settings.log.level, settings.log.format)
    workers = args.workers if args.workers is not None else settings.workers
    if workers > 1 and args.worker_index is None:
        return Supervisor(workers, args.config).run()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency
        runner = asyncio.run
    runtime = Runtime(settings, worker_index=args.worker_index or 0)
    return int(runner(runtime.run()))


def _config_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(f"settings OK: {args.config or 'defaults'} (+ WEIR_* environment)")
    if args.show:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(settings.redacted())).decode())
        print()
    return 0


def _config_show(args: argparse.Namespace) -> int:
    if args.defaults:
        sys.stdout.write(defaults_toml())
        return 0
    settings = load_settings(args.config)
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(settings.redacted())).decode())
    print()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``config`` to the ``weir`` parser."""
    p = sub.add_parser(
        "serve",
        help="run the inference service on Kafka",
        description="Consume events, decide each under its deadline, publish decisions. "
        "Settings come from --config (TOML) and WEIR_<SECTION>__<KEY> variables; "
        "`weir config show --defaults` lists every knob.",
    )
    p.add_argument("--config", "-c", metavar="FILE", help="settings file (TOML)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: settings)")
    p.add_argument("--worker-index", type=int, metavar="I", help=argparse.SUPPRESS)
    p.set_defaults(func=_serve)

    c = sub.add_parser("config", help="check or show settings", description="Settings tools.")
    csub = c.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    chk = csub.add_parser(
        "check", help="validate a settings file", description="Validate settings; exit 2 if bad."
    )
    chk.add_argument("config", nargs="?", metavar="FILE", help="settings file (TOML)")
    chk.add_argument("--show", action="store_true", help="print the result (secrets as ***)")
    chk.set_defaults(func=_config_check)
    show = csub.add_parser(
        "show",
        help="print effective settings (secrets as ***)",
        description="Print the effective settings as JSON, or every default as TOML.",
    )
    show.add_argument("config", nargs="?", metavar="FILE", help="settings file (TOML)")
    show.add_argument(
        "--defaults", action="store_true", help="every knob, its default and its variable"
    )
    show.set_defaults(func=_config_show)
