"""The Apache Kafka broker's jars: a pinned list with checksums, fetched once into the cache.

``deploy/kafka/jars-<version>.lock`` names every jar the broker runs on, one per line::

    org.apache.kafka:kafka-clients:4.1.1 00247122...821d

(``group:artifact:version``, then the jar's sha256). It is written from Maven's own
resolution of ``deploy/kafka/pom.xml`` by ``weir broker kafka lock-jars`` (needs ``mvn``;
a maintainer's step when the Kafka version changes). Fetching needs no Maven: each pinned
jar is downloaded on its own, with no transitive resolution, through jgo's pure-Python Maven
client and its default repository (the ``broker`` extra), and checked against the lock.
Where jgo is not installed, ``mvn`` fetches them instead, checked the same way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from service.errors import BrokerError

__all__ = [
    "PinnedJar",
    "fetch_with_jgo",
    "fetch_with_mvn",
    "install_jars",
    "lock_file",
    "mvn_resolve",
    "read_lock",
    "sha256_of",
    "write_lock",
]

_LINE = re.compile(r"([\w.\-]+):([\w.\-]+):([\w.\-]+)\s+([0-9a-f]{64})")
_MVN_TIMEOUT_S = 900.0
_FETCH_THREADS = 8


@dataclass(frozen=True, slots=True)
class PinnedJar:
    """One jar of the broker: Maven coordinates and the sha256 it must have."""

    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        """The jar's file name in a Maven repository and in the libs directory."""
        return f"{self.artifact}-{self.version}.jar"

    @property
    def coordinates(self) -> str:
        """``group:artifact:version``."""
        return f"{self.group}:{self.artifact}:{self.version}"


def lock_file(deploy: Path, version: str) -> Path:
    """Where the jar lock of ``version`` lives in ``deploy`` (``deploy/kafka``)."""
    return deploy / f"jars-{version}.lock"


def read_lock(path: Path) -> list[PinnedJar]:
    """The pinned jars in ``path``; a malformed line is a BrokerError naming it."""
    jars: list[PinnedJar] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise BrokerError(
                f"{path}:{number}: expected 'group:artifact:version sha256', got {line!r}"
            )
        jars.append(PinnedJar(*match.groups()))
    if not jars:
        raise BrokerError(f"{path} pins no jars")
    return jars


def write_lock(path: Path, jars: Iterable[PinnedJar], *, header: str) -> None:
    """Write ``jars`` (sorted by coordinates) to ``path`` under a ``#`` header line."""
    lines = [f"# {header}"]
    lines += [f"{j.coordinates} {j.sha256}" for j in sorted(jars, key=lambda j: j.coordinates)]
    path.write_text("\n".join(lines) + "\n")


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


Fetch = Callable[[list[PinnedJar], Path], None]


def install_jars(jars: list[PinnedJar], libs: Path, fetch: Fetch) -> float:
    """Fetch ``jars`` with ``fetch`` into a scratch directory, check them, move it to ``libs``.

    Every jar must be there with its pinned sha256 and nothing else may be: a mismatch is a
    BrokerError naming the jar, and ``libs`` is left as it was. Returns the seconds taken.
    """
    began = time.monotonic()
    libs.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".libs-", suffix=".tmp", dir=libs.parent))
    try:
        fetch(jars, tmp)
        _check(jars, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not (libs / jars[0].filename).is_file():
        shutil.rmtree(libs, ignore_errors=True)  # a partial copy, if any
        with contextlib.suppress(OSError):  # lost the race to another process: see below
            os.replace(tmp, libs)
    # Another process (a parallel test worker, a second `weir broker start`) may have
    # installed the same set meanwhile, checked before its rename: its copy stands, ours goes.
    shutil.rmtree(tmp, ignore_errors=True)
    return time.monotonic() - began


def _check(jars: list[PinnedJar], directory: Path) -> None:
    present = {p.name for p in directory.glob("*.jar")}
    wanted = {j.filename for j in jars}
    if missing := sorted(wanted - present):
        raise BrokerError(f"jars missing after the fetch: {', '.join(missing)}")
    if extra := sorted(present - wanted):
        raise BrokerError(
            f"jars not in the lock after the fetch: {', '.join(extra)} "
            "(re-lock with `weir broker kafka lock-jars` if the pom changed)"
        )
    for jar in jars:
        got = sha256_of(directory / jar.filename)
        if got != jar.sha256:
            raise BrokerError(
                f"checksum mismatch for {jar.coordinates}: sha256 {got}, the lock says "
                f"{jar.sha256}; refusing to run it"
            )


def fetch_with_jgo(maven_cache: Path) -> Fetch:
    """A fetch that downloads each pinned jar through jgo (no ``mvn``), into ``maven_cache``.

    jgo's default remote repository is used as it is; nothing here names a host.
    """
    try:
        from jgo.maven import MavenContext  # optional: the broker extra
    except ImportError as exc:
        raise BrokerError(
            "jgo is not installed: install weir's broker extra (pip install 'weir[broker]')"
        ) from exc

    def fetch(jars: list[PinnedJar], into: Path) -> None:
        context = MavenContext(repo_cache=maven_cache, timeout=60)

        def one(jar: PinnedJar) -> None:
            component = context.project(jar.group, jar.artifact).at_version(jar.version)
            try:
                path = Path(component.artifact().resolve())
            except Exception as exc:
                raise BrokerError(f"could not fetch {jar.coordinates}: {exc}") from exc
            shutil.copyfile(path, into / jar.filename)

        with concurrent.futures.ThreadPoolExecutor(_FETCH_THREADS) as pool:
            for done in [pool.submit(one, jar) for jar in jars]:
                done.result()

    return fetch


def fetch_with_mvn(mvn: str, pom: Path, version: str) -> Fetch:
    """A fetch that runs ``mvn dependency:copy-dependencies`` on ``pom`` (the fallback)."""

    def fetch(_jars: list[PinnedJar], into: Path) -> None:
        _run_mvn(mvn, pom, version, "dependency:copy-dependencies", f"-DoutputDirectory={into}")

    return fetch


def mvn_resolve(mvn: str, pom: Path, version: str, scratch: Path) -> list[PinnedJar]:
    """Maven's own resolution of ``pom`` at Kafka ``version``: every runtime jar, hashed."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    libs, listing = scratch / "libs", scratch / "list.txt"
    _run_mvn(mvn, pom, version, "dependency:copy-dependencies", f"-DoutputDirectory={libs}")
    _run_mvn(mvn, pom, version, "dependency:list", f"-DoutputFile={listing}")
    jars = []
    for line in listing.read_text().splitlines():
        parts = line.strip().split(" ", 1)[0].split(":")
        if len(parts) != 5 or parts[2] != "jar":  # group:artifact:jar:version:scope
            continue
        group, artifact, _, jar_version, _scope = parts
        path = libs / f"{artifact}-{jar_version}.jar"
        if not path.is_file():
            raise BrokerError(f"mvn listed {group}:{artifact}:{jar_version} but copied no {path}")
        jars.append(PinnedJar(group, artifact, jar_version, sha256_of(path)))
    if not jars:
        raise BrokerError(f"mvn listed no jars for {pom}")
    return jars


def _run_mvn(mvn: str, pom: Path, version: str, goal: str, *args: str) -> None:
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        "-DincludeScope=runtime",
        *args,
        goal,
    ]
    try:
        done = subprocess.run(
            argv,
            cwd=pom.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MVN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(
            f"mvn {goal} for Apache Kafka {version} did not finish within {_MVN_TIMEOUT_S:g} s"
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BrokerError(
            f"mvn {goal} for Apache Kafka {version} failed (exit {done.returncode}):\n{tail}"
        )
