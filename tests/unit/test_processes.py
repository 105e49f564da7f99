"""service.processes: child processes with a log, a readiness line, and a clean or forced stop."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import ProcessError
from service.processes import ChildProcess, log_tail, pid_alive, spawn, terminate

MARKER = "weir-test-child-marker"


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", f"{code}  # {MARKER}"]


@pytest.fixture
def children() -> Iterator[list[ChildProcess]]:
    """Every child a test starts, stopped at its end whatever happened."""
    started: list[ChildProcess] = []
    yield started
    for child in started:
        child.stop(5)


def test_input_goes_to_stdin_and_output_to_the_log(tmp_path: Path) -> None:
    """The stdin bytes reach the child once; its stdout and stderr are appended to the log."""
    log = tmp_path / "logs" / "child.log"
    log.parent.mkdir()
    log.write_text("earlier run\n")
    code = "import sys; data = sys.stdin.read(); print('got', data); print('oops', file=sys.stderr)"
    child = spawn(_python(code), log_file=log, stdin=b"settings")
    assert child.proc.wait(30) == 0
    assert child.returncode == 0 and not child.alive
    assert log.read_text().splitlines() == ["earlier run", "got settings", "oops"]


def test_ready_line_then_sigterm(tmp_path: Path, children: list[ChildProcess]) -> None:
    """wait_for_line skips other lines and returns None at the ready line; stop sends SIGTERM."""
    # One write: both lines reach the pipe together.
    code = "import sys, time; sys.stdout.write('loading\\nready\\n'); sys.stdout.flush(); time.sleep(60)"
    child = spawn(_python(code), log_file=tmp_path / "c.log", pipe_stdout=True)
    children.append(child)
    assert child.wait_for_line(b"ready", 30) is None
    assert child.alive
    assert child.stop(10) == -signal.SIGTERM
    assert not child.alive
    assert child.proc.stdout is not None and child.proc.stdout.closed


def test_child_that_exits_before_it_is_ready(tmp_path: Path, children: list[ChildProcess]) -> None:
    """A child that exits without the ready line is reported with its status and its log."""
    code = "import sys; print('bad config', file=sys.stderr); sys.exit(3)"
    log = tmp_path / "c.log"
    child = spawn(_python(code), log_file=log, pipe_stdout=True)
    children.append(child)
    assert child.wait_for_line(b"ready", 30) == "exited with status 3"
    assert child.log_tail() == f"  last lines of {log}:\n    bad config"


def test_ready_line_just_before_exit_counts(tmp_path: Path, children: list[ChildProcess]) -> None:
    """A ready line (even without its newline) read before the exit is seen as ready."""
    code = "import sys; sys.stdout.write('ready'); sys.exit(0)"
    child = spawn(_python(code), log_file=tmp_path / "c.log", pipe_stdout=True)
    children.append(child)
    assert child.wait_for_line(b"ready", 30) is None


def test_child_that_is_never_ready(tmp_path: Path, children: list[ChildProcess]) -> None:
    """Past the deadline on the injected clock, wait_for_line says how long it waited."""
    child = spawn(
        _python("import time; time.sleep(60)"), log_file=tmp_path / "c.log", pipe_stdout=True
    )
    children.append(child)
    times = iter([0.0, 100.0])
    why = child.wait_for_line(b"ready", 5, poll_s=0.001, clock=lambda: next(times))
    assert why == "was not ready within 5 s"
    assert child.alive


def test_stop_kills_a_child_that_ignores_sigterm(
    tmp_path: Path, children: list[ChildProcess]
) -> None:
    """A child that ignores SIGTERM is killed (SIGKILL) once the grace time is over."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    child = spawn(_python(code), log_file=tmp_path / "c.log", pipe_stdout=True)
    children.append(child)
    assert child.wait_for_line(b"ready", 30) is None
    assert child.stop(0.2) == -signal.SIGKILL


def test_start_failures_name_the_command(tmp_path: Path) -> None:
    """A command that cannot run, an empty one, or a child that dies before reading its input
    is a ProcessError naming it."""
    missing = tmp_path / "no-such-binary"
    with pytest.raises(ProcessError) as info:
        spawn([str(missing)], log_file=tmp_path / "c.log")
    assert str(info.value) == (
        f"cannot run {missing}: [Errno 2] No such file or directory: '{missing}'"
    )
    with pytest.raises(ProcessError, match=r"^cannot run an empty command$"):
        spawn([], log_file=tmp_path / "c.log")
    log = tmp_path / "deaf.log"
    code = "import sys; print('not reading', file=sys.stderr); sys.exit(4)"
    # More than a pipe holds: the write blocks until the child exits, then fails.
    with pytest.raises(ProcessError) as deaf:
        spawn(_python(code), log_file=log, stdin=b"x" * (4 << 20))
    assert str(deaf.value) == (
        f"{sys.executable} exited (status 4) before it read its input\n"
        f"  last lines of {log}:\n    not reading"
    )
    assert isinstance(deaf.value.__cause__, BrokenPipeError)


def test_wait_for_line_needs_a_stdout_pipe(tmp_path: Path, children: list[ChildProcess]) -> None:
    """Asking for a ready line of a child whose stdout goes to the log is an error, not a hang."""
    child = spawn(_python("import time; time.sleep(60)"), log_file=tmp_path / "c.log")
    children.append(child)
    with pytest.raises(ProcessError) as info:
        child.wait_for_line(b"ready", 5)
    assert str(info.value) == f"{sys.executable}: stdout is not a pipe (spawn with pipe_stdout)"


def test_log_tail_quotes_each_log_under_its_name(tmp_path: Path) -> None:
    """The last lines of each non-empty log, each under its name; a line when there are none."""
    a, b, empty, missing = (tmp_path / n for n in ("a.log", "b.log", "empty.log", "none.log"))
    a.write_text("".join(f"a{i}\n" for i in range(30)))
    b.write_text("only\n")
    empty.write_text("\n")
    assert log_tail([a, empty, missing, b], lines=2) == (
        f"  last lines of {a}:\n    a28\n    a29\n  last lines of {b}:\n    only"
    )
    assert log_tail(a).count("\n") == 20
    assert log_tail([empty, missing]) == f"  (no log in {empty}, {missing})"


def test_terminate_by_pid(tmp_path: Path, children: list[ChildProcess]) -> None:
    """A process found by pid and marker is stopped by SIGTERM; a wrong marker is not it."""
    child = spawn(
        _python("import time; print('ready', flush=True); time.sleep(60)"),
        log_file=tmp_path / "c.log",
        pipe_stdout=True,
        detach=True,
    )
    children.append(child)
    assert child.wait_for_line(b"ready", 30) is None
    assert pid_alive(child.pid, MARKER)
    assert not pid_alive(child.pid, "some-other-program")
    assert terminate(child.pid, MARKER, timeout=10, poll_s=0.01)
    assert not pid_alive(child.pid, MARKER)
