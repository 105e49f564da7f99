"""The process supervisor of ``weir serve --workers N`` with fake processes and a fake
clock: restarts with a doubling, capped, resetting back-off; signals forwarded; status."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from service.workers import Supervisor

POLL_S = 0.25


class FakeProc:
    """A worker process whose exit the test decides."""

    def __init__(self, argv: list[str], pid: int) -> None:
        self.argv = argv
        self.pid = pid
        self.rc: int | None = None
        self.signals: list[int] = []
        self.exit_on: dict[int, int] = {signal.SIGTERM: 0, signal.SIGKILL: -9}
        """The status it exits with on each signal (drop a key: it ignores that signal)."""

    def poll(self) -> int | None:
        return self.rc

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig in self.exit_on:
            self.rc = self.exit_on[sig]


class Harness:
    """Fake ``spawn``, ``clock`` and ``sleep``: each sleep moves the clock, then runs the
    script with the new time (where the test kills workers or sends signals)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.procs: list[FakeProc] = []
        self.sleeps: list[float] = []
        self.script: Callable[[float], None] = lambda now: None

    def spawn(self, argv: list[str]) -> FakeProc:
        proc = FakeProc(argv, 1000 + len(self.procs))
        self.procs.append(proc)
        return proc

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.script(self.now)

    def supervisor(self, workers: int, **kw: float) -> Supervisor:
        return Supervisor(
            workers,
            "x",
            poll_s=POLL_S,
            spawn=self.spawn,
            clock=self.clock,
            sleep=self.sleep,
            **kw,  # type: ignore[arg-type]
        )

    def live(self, index: int) -> FakeProc:
        """The latest process started for worker ``index``."""
        flag = str(index)
        return [p for p in self.procs if p.argv[p.argv.index("--worker-index") + 1] == flag][-1]


def test_workers_start_with_their_index_and_the_config() -> None:
    """Each child runs ``service.cli serve`` with its own worker index and the same file."""
    h = Harness()
    sup = h.supervisor(2)
    h.script = lambda now: sup._on_signal(signal.SIGTERM, None)
    assert sup.run(install_signals=False) == 0
    assert [p.argv for p in h.procs] == [
        [sys.executable, "-m", "service.cli", "serve", "--worker-index", str(i), "--config", "x"]
        for i in range(2)
    ]


def test_a_dying_worker_restarts_after_a_doubling_capped_back_off() -> None:
    """A worker that keeps dying is restarted after 0.5, 1, 2, 2 s (capped at
    ``max_backoff_s``); the others are left alone."""
    h = Harness()
    sup = h.supervisor(2, max_backoff_s=2.0)

    def script(now: float) -> None:
        if sup.restarts < 4:
            h.live(0).rc = 2
        else:
            sup._on_signal(signal.SIGTERM, None)

    h.script = script
    assert sup.run(install_signals=False) == 0
    assert sup.restarts == 4
    backoffs = [s for s in h.sleeps if s != POLL_S]
    assert backoffs == [0.5, 1.0, 2.0, 2.0]
    assert len([p for p in h.procs if p.argv[-3] == "1"]) == 1  # worker 1 never restarted


def test_back_off_resets_after_a_minute_up() -> None:
    """A worker that ran for over a minute before dying restarts after the first step
    (0.5 s) again, not the doubled one."""
    h = Harness()
    sup = h.supervisor(1)
    deaths = [1.0, 3.0, 100.0]  # when the live worker dies (up 1 s, 1.5 s, then 95.5 s)

    def script(now: float) -> None:
        if deaths and now >= deaths[0]:
            deaths.pop(0)
            h.live(0).rc = 1
        elif not deaths and sup.restarts == 3:
            sup._on_signal(signal.SIGTERM, None)

    h.script = script
    sup.run(install_signals=False)
    assert [s for s in h.sleeps if s != POLL_S] == [0.5, 1.0, 0.5]


def test_signals_are_forwarded_then_escalated_and_status_is_the_first_failure() -> None:
    """The first signal sends SIGTERM to every live child, a second SIGKILL to those still
    running; the supervisor returns once all exited, with the first non-zero status."""
    h = Harness()
    sup = h.supervisor(3)
    sent = [0]

    def script(now: float) -> None:
        if sent[0] == 0:
            h.procs[1].exit_on = {signal.SIGKILL: -9}  # ignores SIGTERM
            h.procs[2].exit_on = {signal.SIGTERM: 3}
            sup._on_signal(signal.SIGTERM, None)
        elif sent[0] == 1:
            sup._on_signal(signal.SIGINT, None)
        sent[0] += 1

    h.script = script
    assert sup.run(install_signals=False) == 3
    assert [p.signals for p in h.procs] == [
        [signal.SIGTERM],
        [signal.SIGTERM, signal.SIGKILL],
        [signal.SIGTERM],
    ]
    assert sup.restarts == 0


def test_a_signal_during_the_back_off_is_not_followed_by_a_restart() -> None:
    """A worker that died is not started again when the stop signal arrives while its
    back-off runs; the status is the dead worker's."""
    h = Harness()
    sup = h.supervisor(1)

    def script(now: float) -> None:
        if h.live(0).rc is None:
            h.live(0).rc = 4
        else:
            sup._on_signal(signal.SIGTERM, None)  # during the back-off sleep

    h.script = script
    assert sup.run(install_signals=False) == 4
    assert len(h.procs) == 1 and sup.restarts == 0
