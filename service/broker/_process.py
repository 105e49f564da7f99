"""What the broker implementations share: ports, the state file, the process, readiness.

Private to ``service.broker``: a detached child process on loopback, recorded in a JSON
state file so that another ``weir`` process can find, report and stop it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from service import processes
from service.broker.base import BrokerKind, Progress
from service.errors import BrokerError, ProcessError

T = TypeVar("T")

HOST = "127.0.0.1"
STATE_FILE = "state.json"
_LOG_TAIL_LINES = 25


def cache_root() -> Path:
    """``$WEIR_CACHE``, else ``$XDG_CACHE_HOME/weir``, else ``~/.cache/weir``."""
    env = os.environ.get("WEIR_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "weir"


def deploy_dir(name: str) -> Path:
    """Where ``deploy/<name>``'s files live: ``$WEIR_<NAME>_DEPLOY`` when set, else the source tree's."""
    env = os.environ.get(f"WEIR_{name.upper()}_DEPLOY")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "deploy" / name


def missing_deploy_file(file: str, deploy: Path, name: str) -> BrokerError:
    """The error for ``file`` missing from ``deploy``, a copy of ``deploy/<name>``."""
    return BrokerError(
        f"{file} not found in {deploy}: run from a weir source tree or set "
        f"WEIR_{name.upper()}_DEPLOY to a directory holding deploy/{name}'s files"
    )


def no_progress(_line: str) -> None:
    """The default progress callback: say nothing."""


# ---------------------------------------------------------------------------------- ports


def check_port(port: int, *, what: str = "port") -> int:
    """``port`` itself when 0 (pick a free one) or 1-65535, else a BrokerError naming it."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise BrokerError(f"bad {what} {port!r}: expected 0 (pick a free one) or 1-65535")
    return port


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    """Whether ``127.0.0.1:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def choose_port(requested: int, previous: int | None, *, what: str = "port") -> int:
    """The requested port (checked free), else the previous run's if free, else a free one."""
    if requested:
        if not port_free(requested):
            raise BrokerError(
                f"{what} {requested} on {HOST} is in use: choose another, or 0 for a free one"
            )
        return requested
    if previous and port_free(previous):
        return previous
    return free_port()


# ----------------------------------------------------------------------------- state file


class BrokerState(msgspec.Struct, frozen=True, kw_only=True):
    """The state file: which process serves which address, written after a start."""

    kind: BrokerKind
    pid: int
    bootstrap: str
    port: int
    version: str
    #: A string the process's command line contains (guards against a reused pid).
    marker: str
    log_file: str
    started_wall_ns: int
    controller_port: int | None = None


_decoder = msgspec.json.Decoder(BrokerState)
_encoder = msgspec.json.Encoder()


def read_state(path: Path) -> BrokerState | None:
    """The state recorded at ``path``, or None when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BrokerError(f"cannot read broker state file {path}: {exc}") from exc
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BrokerError(
            f"broker state file {path} is corrupt ({exc}); stop the broker by pid if it "
            "still runs, then delete the file"
        ) from exc


def write_state(path: Path, state: BrokerState) -> None:
    """Write ``state`` to ``path`` atomically (a temporary sibling, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(_encoder.encode(state) + b"\n")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------- process


def spawn(
    argv: Sequence[str], *, log_file: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached (own session, stdin closed, output appended to ``log_file``)."""
    try:
        child = processes.spawn(argv, log_file=log_file, cwd=cwd, env=env, detach=True)
    except ProcessError as exc:
        raise BrokerError(str(exc)) from exc
    return child.proc


def terminate(
    pid: int, marker: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; True when it exited on SIGTERM."""
    try:
        return processes.terminate(pid, marker, timeout=timeout, proc=proc)
    except ProcessError as exc:
        raise BrokerError(f"broker {exc}") from exc


def log_tail(paths: Sequence[Path], lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of each non-empty file in ``paths``, each under its name."""
    return processes.log_tail(paths, lines)


# ------------------------------------------------------------------------------ readiness


class _Died(Exception):
    pass


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's connection-refused errors while the broker is still starting."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _probe_once(bootstrap: str, per_try_s: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    host, _, port = bootstrap.rpartition(":")
    # A bare TCP connect first: cheap, and aiokafka need not log a refused connection.
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), per_try_s)
    writer.close()
    await writer.wait_closed()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="weir-broker-probe",
        request_timeout_ms=max(1000, int(per_try_s * 1000)),
    )
    try:
        await asyncio.wait_for(admin.start(), per_try_s)
        await asyncio.wait_for(admin.list_topics(), per_try_s)
    finally:
        await admin.close()


async def _wait_ready(bootstrap: str, budget_s: float, alive: Callable[[], bool]) -> str | None:
    """None once metadata works, else the last error seen when ``budget_s`` ran out."""
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + budget_s
    last: str | None = "no attempt"
    while True:
        if not alive():
            raise _Died
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return last
        try:
            await _probe_once(bootstrap, min(3.0, remaining))
        except (KafkaError, OSError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            return None
        await asyncio.sleep(0.1)


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, on a helper thread inside a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="weir-broker") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def wait_ready(
    bootstrap: str,
    *,
    what: str,
    timeout: float,
    progress: Progress,
    proc: subprocess.Popen[bytes] | None = None,
    logs: Sequence[Path] = (),
) -> None:
    """Block until ``bootstrap`` answers metadata; on death or timeout stop ``proc`` and raise."""
    progress(f"waiting for {what} at {bootstrap}")

    def alive() -> bool:
        return proc is None or proc.poll() is None

    try:
        with _quiet_aiokafka():
            last = run_blocking(lambda: _wait_ready(bootstrap, timeout, alive))
    except _Died:
        code = proc.returncode if proc is not None else None
        raise BrokerError(
            f"{what} exited with code {code} before it was ready at {bootstrap}\n" + log_tail(logs)
        ) from None
    if last is None:
        return
    stopped = ""
    if proc is not None:
        terminate(proc.pid, "", timeout=5.0, proc=proc)
        stopped = "; it was stopped"
    tail = "\n" + log_tail(logs) if logs else ""
    raise BrokerError(
        f"{what} did not answer metadata requests at {bootstrap} within {timeout:g} s "
        f"(last error: {last}){stopped}{tail}"
    )
