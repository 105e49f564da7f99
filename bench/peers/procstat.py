"""CPU time and memory of a process, read from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``.

``cpu_seconds`` is user + system time of every thread of the process (fields 14 and 15 of
``stat``, in clock ticks); ``peak_rss_bytes`` is ``VmHWM`` (the resident-set high-water
mark since start, or since ``reset_peak``, which writes ``5`` to ``clear_refs``).
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat_cpu(text: str) -> float:
    """User + system seconds from the text of ``/proc/<pid>/stat``."""
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    rest = text[text.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / _TICKS


def parse_status_kib(text: str, field: str) -> int | None:
    """A ``kB`` field (``VmHWM``, ``VmRSS``) of ``/proc/<pid>/status``, in KiB."""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far (None once it is gone)."""
    try:
        return parse_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def rss_bytes(pid: int, field: str = "VmRSS") -> int | None:
    """Resident set (``VmRSS``) or its high-water mark (``VmHWM``) of ``pid``, bytes."""
    try:
        kib = parse_status_kib(Path(f"/proc/{pid}/status").read_text(), field)
    except OSError:
        return None
    return None if kib is None else kib * 1024


def peak_rss_bytes(pid: int) -> int | None:
    """``VmHWM`` of ``pid``, bytes."""
    return rss_bytes(pid, "VmHWM")


def reset_peak(pid: int) -> bool:
    """Restart ``pid``'s high-water mark from its current RSS (False where not allowed)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
