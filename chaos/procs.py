"""The service under test as a child process: its settings file, its log, its memory.

:class:`ServiceProc` runs ``python -m service.cli serve ...`` (or ``python -m chaos.worker``),
keeps every line of its stderr (structlog JSON) with the wall time it arrived, finds the
worker processes a ``--workers N`` supervisor started, samples the resident memory of every
process of the service every 100 ms and asks ``/readyz`` when told its HTTP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["ServiceProc", "rss_kb", "write_toml"]


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{section: {key: value}}`` as TOML (strings, numbers, booleans, lists)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return orjson.dumps(v).decode()
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines: list[str] = []
    for name, table in sections.items():
        if not isinstance(table, Mapping):
            lines.insert(0, f"{name} = {value(table)}")
            continue
        lines.append(f"[{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def rss_kb(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of ``pid`` in KiB from /proc; ``(0, 0)`` when it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError):
        return 0, 0
    return rss, hwm


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


class ServiceProc:
    """One service process tree (module docstring)."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        module: str = "service.cli",
    ) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[tuple[int, str]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.peak_rss_kb = 0
        """Largest VmHWM of any one process of the tree."""
        self.peak_total_rss_kb = 0
        """Largest sum of VmRSS over the tree at one sample."""
        self._tasks: list[asyncio.Task[None]] = []
        self._new_line = asyncio.Event()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    async def start(self) -> None:
        """Start it and the log reader and memory sampler."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_log()), loop.create_task(self._sample())]

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with self.log_path.open("ab") as out:
            async for raw in self.proc.stderr:
                out.write(raw)
                self.lines.append((time.time_ns(), raw.decode(errors="replace").rstrip("\n")))
                self._new_line.set()

    def tree(self) -> list[int]:
        """Pids of the process and of its children (the workers of a supervisor)."""
        if self.proc is None or self.proc.returncode is not None:
            return []
        return [self.pid, *_children(self.pid)]

    async def _sample(self) -> None:
        while True:
            total = 0
            for pid in self.tree():
                rss, hwm = rss_kb(pid)
                total += rss
                self.peak_rss_kb = max(self.peak_rss_kb, hwm)
            self.peak_total_rss_kb = max(self.peak_total_rss_kb, total)
            await asyncio.sleep(0.1)

    def events(self, name: str) -> list[tuple[int, dict[str, Any]]]:
        """Log records whose ``event`` is ``name``, with their arrival wall time."""
        out: list[tuple[int, dict[str, Any]]] = []
        needle = f'"event":"{name}"'
        for ts, line in self.lines:
            if needle in line:
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append((ts, orjson.loads(line)))
        return out

    def text(self) -> str:
        """The whole log so far."""
        return "\n".join(line for _, line in self.lines)

    async def wait_event(self, name: str, *, count: int = 1, timeout_s: float = 60.0) -> None:
        """Until ``count`` records of ``name`` were logged; raises TimeoutError, or
        RuntimeError naming the exit status when the process ended first."""
        async with asyncio.timeout(timeout_s):
            while len(self.events(name)) < count:
                if self.returncode is not None:
                    await asyncio.sleep(0.2)  # let the reader take the last lines
                    if len(self.events(name)) >= count:
                        return
                    raise RuntimeError(
                        f"service exited with {self.returncode} before {count} x {name}:\n"
                        + "\n".join(line for _, line in self.lines[-15:])
                    )
                self._new_line.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_line.wait(), 0.5)

    def worker_pids(self) -> list[int]:
        """Pids of the workers a supervisor started, in start order."""
        return [int(rec["pid"]) for _, rec in self.events("worker_started")]

    async def wait(self, timeout_s: float) -> int | None:
        """Until it exits (its status) or ``timeout_s`` passes (None)."""
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            return None

    async def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        status = await self.wait(timeout_s)
        if status is None:
            await self.kill()
            status = await self.wait(10)
        await self._stop_tasks()
        return -9 if status is None else status

    async def kill(self) -> None:
        """SIGKILL the process and its children."""
        for pid in reversed(self.tree()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            await self.wait(10)
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        if not self._tasks:
            return
        reader, sampler = self._tasks
        self._tasks = []
        sampler.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait({reader}, timeout=2)
        reader.cancel()
        for t in (reader, sampler):
            with contextlib.suppress(asyncio.CancelledError):
                await t
