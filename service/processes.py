"""Child processes that weir starts: a command whose output goes to a log file, stopped by
SIGTERM (then SIGKILL), with the end of its log quoted when it fails.

One helper for every process weir runs beside itself: the service or the echo in the demo
(``replay.demo``), each contender of the peers benchmark (``bench.peers.harness``) and the
brokers weir manages (``service.broker``), which outlive the command that started them
and are stopped later by pid (:func:`terminate`, :func:`pid_alive`).

- :func:`spawn` starts ``argv`` with its output appended to ``log_file``; ``stdin`` bytes
  are written to it once and closed (settings travel there, never on the command line);
  ``pipe_stdout=True`` keeps stdout for a readiness line (:meth:`ChildProcess.wait_for_line`),
  stderr still going to the log; ``detach=True`` starts a session of its own, so that a
  Ctrl-C in the terminal does not reach it.
- :meth:`ChildProcess.stop`: SIGTERM, up to ``timeout_s`` for a clean exit, then SIGKILL.
- :func:`log_tail`: the last lines of one or more logs, each under its name.

Errors are :class:`service.errors.ProcessError`, naming the command and the cause.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

from service.errors import ProcessError

LOG_TAIL_LINES: Final = 20
KILL_WAIT_S: Final = 10.0


def log_tail(paths: Path | Sequence[Path], lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of each non-empty file of ``paths``, each under its name; a
    line saying there was nothing when none could be read or all were empty."""
    files = [paths] if isinstance(paths, Path) else list(paths)
    parts: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            tail = "\n".join("    " + line for line in text.splitlines()[-lines:])
            parts.append(f"  last lines of {path}:\n{tail}")
    if parts:
        return "\n".join(parts)
    return f"  (no log in {', '.join(str(p) for p in files) or 'no files'})"


class ChildProcess:
    """A started child process (see the module docstring); ``proc`` is its ``Popen``."""

    def __init__(self, proc: subprocess.Popen[bytes], *, argv: Sequence[str], log_file: Path):
        self.proc = proc
        self.argv = list(argv)
        self.log_file = log_file

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Whether it still runs."""
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has exited (``-N``: killed by signal N), else None."""
        return self.proc.poll()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of its log."""
        return log_tail(self.log_file, lines)

    def wait_for_line(
        self,
        expected: bytes,
        timeout_s: float,
        *,
        poll_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> str | None:
        """Block until the child prints the line ``expected`` on stdout (``pipe_stdout=True``):
        None once it did, else why not (``"exited with status 3"``, ``"was not ready within
        120 s"``). Other lines are read and skipped."""
        out = self.proc.stdout
        if out is None:
            raise ProcessError(f"{self.argv[0]}: stdout is not a pipe (spawn with pipe_stdout)")
        # Raw reads into a buffer of our own: a buffered readline could take two lines off
        # the pipe at once and leave the second where select() does not see it.
        fd = out.fileno()
        pending = b""
        eof = False
        deadline = clock() + timeout_s
        while True:
            if eof:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(poll_s)
            elif select.select([fd], [], [], poll_s)[0]:
                chunk = os.read(fd, 65536)
                eof = not chunk
                *lines, pending = (pending + chunk).split(b"\n")
                if eof:
                    lines.append(pending)
                if any(line.strip() == expected for line in lines):
                    return None
            # Exited only once its output is all read (the ready line may come just before).
            status = None if not eof and _readable(fd) else self.proc.poll()
            if status is not None:
                return f"exited with status {status}"
            if clock() > deadline:
                return f"was not ready within {timeout_s:g} s"

    def stop(self, timeout_s: float = 15.0, *, kill_wait_s: float = KILL_WAIT_S) -> int | None:
        """SIGTERM, up to ``timeout_s`` for it to exit, then SIGKILL; returns its exit status
        (None if it survived even SIGKILL for ``kill_wait_s``). Closes its pipes."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(kill_wait_s)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return proc.returncode


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    pipe_stdout: bool = False,
    detach: bool = False,
) -> ChildProcess:
    """Start ``argv``, its output appended to ``log_file`` (directories created); see the
    module docstring for ``stdin``, ``pipe_stdout`` and ``detach``."""
    if not argv:
        raise ProcessError("cannot run an empty command")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE if pipe_stdout else log,
                stderr=log if pipe_stdout else subprocess.STDOUT,
                start_new_session=detach,
            )
        except OSError as exc:
            raise ProcessError(f"cannot run {argv[0]}: {exc}") from exc
    child = ChildProcess(proc, argv=argv, log_file=log_file)
    if stdin is not None:
        _feed(child, proc.stdin, stdin)
    return child


def _feed(child: ChildProcess, pipe: IO[bytes] | None, data: bytes) -> None:
    assert pipe is not None
    try:
        pipe.write(data)
        pipe.close()
    except BrokenPipeError as exc:
        status = child.stop(0)
        raise ProcessError(
            f"{child.argv[0]} exited (status {status}) before it read its input\n"
            + child.log_tail()
        ) from exc


# -- processes found by pid (they may belong to an earlier weir command) ------------------------


def pid_alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and (where /proc says) its command line contains ``marker``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    proc = Path("/proc") / str(pid)
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc here (macOS): trust kill(0)
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        _reap(pid)
        return False
    return marker in cmdline


def _reap(pid: int) -> None:
    """Collect an exited child of ours so it stops showing as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def terminate(
    pid: int,
    marker: str,
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    poll_s: float = 0.05,
) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL; True when it exited on SIGTERM.
    ``proc``, when it is that process's ``Popen``, is waited on instead of polling ``pid``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        _reap(pid)
        return True
    if _wait_gone(pid, marker, timeout, proc, poll_s):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, marker, KILL_WAIT_S, proc, poll_s):
        raise ProcessError(f"process {pid} survived SIGKILL for {KILL_WAIT_S:g} s")
    return False


def _wait_gone(
    pid: int, marker: str, timeout: float, proc: subprocess.Popen[bytes] | None, poll_s: float
) -> bool:
    if proc is not None and proc.pid == pid:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while pid_alive(pid, marker):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True
