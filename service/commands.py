"""``weir serve``, ``weir swap`` and ``weir config``: the service's own command groups."""

from __future__ import annotations

import argparse
import asyncio
import sys
import urllib.error
import urllib.request
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


def _swap(args: argparse.Namespace) -> int:
    """POST the package path to every worker's /admin/model; 0 when all swapped."""
    settings = load_settings(args.config)
    h = settings.http
    host = f"[{h.host}]" if ":" in h.host else h.host
    workers = args.workers if args.workers is not None else settings.workers
    body = msgspec.json.encode({"path": args.path})
    failed = 0
    for i in range(workers):
        url = f"http://{host}:{h.port + i}/admin/model"
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=args.timeout) as response:  # noqa: S310
                status, answer = int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read()
        except OSError as exc:
            status, answer = 0, f"unreachable: {exc}".encode()
        print(f"worker {i} ({url}): {status or '-'} {answer.decode('utf-8', 'replace')}")
        failed += status != 200
    return 1 if failed else 0


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

    w = sub.add_parser(
        "swap",
        help="swap a running service's model for the package at PATH",
        description="POST PATH to /admin/model of every worker of a running `weir serve` "
        "(its [http] host and port + i; needs [model] admin = true there): each loads, "
        "verifies and warms the package, then swaps it in between batches. Exit 1 unless "
        "every worker swapped.",
    )
    w.add_argument("path", metavar="PATH", help="model package directory, as the service sees it")
    w.add_argument("--config", "-c", metavar="FILE", help="the service's settings file (TOML)")
    w.add_argument("--workers", type=int, metavar="N", help="worker processes (default: settings)")
    w.add_argument(
        "--timeout", type=float, default=300.0, metavar="S", help="per worker (default 300)"
    )
    w.set_defaults(func=_swap)

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
