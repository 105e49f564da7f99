"""``weir demo --diagnose``'s figures: per-window latency, the service's /status, the text."""

from __future__ import annotations

import msgspec

from replay.diagnose import Diagnosis, render, windows
from replay.measure import Recorder

S = 1_000_000_000
MS = 1_000_000


def _recorder(latencies_ms: list[tuple[float, float]]) -> Recorder:
    """Events due at ``t`` s whose decision came ``ms`` later; every stage 1 ms but the
    broker's way back, which takes the rest."""
    rec = Recorder(len(latencies_ms))
    t0 = 1_000 * S
    for i, (t, ms) in enumerate(latencies_ms):
        due = t0 + int(t * S)
        rec.sent(i, due, due + MS)
        rec.ingest[i] = due + 2 * MS
        rec.dispatch[i] = due + 3 * MS
        rec.infer_done[i] = due + 4 * MS
        rec.publish[i] = due + 5 * MS
        rec.received[i] = due + int(ms * MS)
    return rec


def test_windows_split_by_intended_send_time() -> None:
    """Events fall in the window of their intended send; each window has its own e2e
    percentiles, sender lag and stage p99s; a window with no decision has no figures."""
    rec = _recorder([(0.1, 10.0), (0.2, 20.0), (5.5, 50.0), (12.0, 7.0)])
    rec.received[3] = 0  # no decision
    wins = windows(rec, width_s=5.0)
    assert [(w.start_s, w.events) for w in wins] == [(0.0, 2), (5.0, 1), (10.0, 0)]
    first = wins[0]
    assert first.e2e_max_ms == 20.0 and first.e2e_p50_ms == 15.0
    assert first.sender_lag_max_ms == 1.0
    assert first.stage_p99_ms["broker_in"] == 1.0 and first.stage_p99_ms["publish"] == 1.0
    assert wins[1].stage_p99_ms["broker_out"] == 45.0
    assert wins[2].e2e_p99_ms is None and wins[2].stage_p99_ms["queue_wait"] is None


def test_no_events_no_windows() -> None:
    """A replay that sent nothing has no windows."""
    assert windows(Recorder(4)) == []


def test_service_status_is_kept_and_an_unreachable_one_is_reported() -> None:
    """The service's gc, loop_lag and commit are taken from /status; a failed read leaves
    them out and says why, without raising."""
    d = Diagnosis(port=9)
    doc = {"gc": {"frozen": 3}, "loop_lag": {"count": 1}, "commit": {"count": 2}, "x": 1}
    d.fetch_service(get=lambda url, _t: msgspec.json.encode(doc))
    assert d.service == {"gc": {"frozen": 3}, "loop_lag": {"count": 1}, "commit": {"count": 2}}

    def refuse(url: str, timeout_s: float) -> bytes:
        raise ConnectionRefusedError("connection refused")

    d = Diagnosis(port=9)
    d.fetch_service(get=refuse)
    assert d.service is None
    assert d.service_error == (
        "no /status from the service at http://127.0.0.1:9/status: connection refused"
    )
    d.fetch_service(get=lambda url, _t: b"[1]")
    assert d.service_error == (
        "no /status from the service at http://127.0.0.1:9/status: expected a JSON object, got list"
    )


def test_render_shows_both_processes_and_the_windows() -> None:
    """The text has a pause line per generation and process, the loop lag, the commit
    figures, the long pauses placed on the run's timeline, and a row per window."""
    d = Diagnosis(port=9)
    d.recorded(_recorder([(0.1, 10.0), (5.5, 50.0)]))
    d.harness_lag.record(12 * MS)
    d.service = {
        "gc": {
            "generations": {
                "2": {"count": 1, "total_ms": 40.0, "p50_ms": 40.0, "p99_ms": 40.0, "max_ms": 40.0}
            },
            "long": [{"wall_ns": d.t0_wall_ns + 2 * S, "generation": 2, "ms": 40.0}],
            "threshold": [700, 10, 10],
            "frozen": 5,
        },
        "loop_lag": None,
        "commit": {"count": 3, "p50_ms": 1.0, "p99_ms": 2.0},
    }
    text = render(d.document())
    assert "service  gc gen2         1      40.00    40.00    40.00    40.00" in text
    assert "service  gc pauses >= 1 ms during the run: gen2 40.0 ms at 2.0 s" in text
    assert "service  commits 3, p50 1.00 ms, p99 2.00 ms" in text
    assert "harness  loop lag         1       2.00" in text
    assert "harness  gc gen0         0       0.00        -        -     0.00" in text
    rows = [ln for ln in text.splitlines() if ln.startswith(("       0", "       5"))]
    assert len(rows) == 2 and "10.00" in rows[0] and "50.00" in rows[1]


def test_service_collections_during_the_run_are_the_difference_of_two_reads() -> None:
    """The run's collections are the counts and totals read after minus those read before
    the measured replay; the largest is the longest kept pause from the run's start on."""
    d = Diagnosis(port=9)
    d.recorded(_recorder([(0.1, 10.0)]))
    t0 = d.t0_wall_ns

    def status(count: int, total: float, long: list[dict[str, float]]) -> bytes:
        rest = {"p50_ms": None, "p99_ms": None, "max_ms": 0.0}
        gens = {
            "0": {"count": count, "total_ms": total, **rest},
            "2": {"count": 1, "total_ms": 40.0, **rest},
        }
        return msgspec.json.encode({"gc": {"generations": gens, "long": long}})

    d.fetch_service(get=lambda url, _t: status(10, 3.0, []), before=True)
    assert d.document()["service_run_gc"] is None
    late = [
        {"wall_ns": t0 - S, "generation": 0, "ms": 9.0},
        {"wall_ns": t0 + S, "generation": 0, "ms": 2.5},
    ]
    d.fetch_service(get=lambda url, _t: status(14, 7.5, late))
    assert d.document()["service_run_gc"] == {
        "0": {"count": 4, "total_ms": 4.5, "max_ms_if_over_1": 2.5},
        "2": {"count": 0, "total_ms": 0.0, "max_ms_if_over_1": None},
    }
    assert "service  gc during the measured run: gen0 4x 4.50 ms (max 2.5), gen2 0x 0.00 ms" in (
        render(d.document())
    )
