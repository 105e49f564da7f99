"""Reading weir's own stalls around a trial (``bench.peers.opsprobe``)."""

from __future__ import annotations

import asyncio

import pytest

from bench.peers.opsprobe import (
    GC_PAUSE,
    LOOP_LAG,
    Page,
    held_at_least_ms,
    holds,
    mean_batch,
    parse_page,
    sample,
)
from service.broker._process import free_port


def _page(
    lag: list[int], gc0: list[int], gc2: list[int], batches: tuple[int, int] | None = None
) -> str:
    """A Prometheus page with the two histograms (buckets 1 ms, 50 ms, 100 ms, +Inf;
    cumulative counts as given), a metric the probe ignores and, with ``batches``, the
    batch-size histogram with that (count, sum)."""
    les = ("0.001", "0.05", "0.1", "+Inf")
    lines = [
        "# HELP weir_events_total Events.",
        "# TYPE weir_events_total counter",
        "weir_events_total 7.0",
        f"# HELP {LOOP_LAG} Loop lag.",
        f"# TYPE {LOOP_LAG} histogram",
    ]
    lines += [f'{LOOP_LAG}_bucket{{le="{le}"}} {n}' for le, n in zip(les, lag, strict=True)]
    lines += [f"{LOOP_LAG}_count {lag[-1]}", f"{LOOP_LAG}_sum 0.5"]
    lines += [f"# HELP {GC_PAUSE} GC.", f"# TYPE {GC_PAUSE} histogram"]
    for gen, counts in (("0", gc0), ("2", gc2)):
        lines += [
            f'{GC_PAUSE}_bucket{{generation="{gen}",le="{le}"}} {n}'
            for le, n in zip(les, counts, strict=True)
        ]
        lines += [f'{GC_PAUSE}_count{{generation="{gen}"}} {counts[-1]}']
        lines += [f'{GC_PAUSE}_sum{{generation="{gen}"}} 0.1']
    if batches is not None:
        n, rows = batches
        lines += ["# HELP weir_batch_size_rows Rows.", "# TYPE weir_batch_size_rows histogram"]
        lines += [f'weir_batch_size_rows_bucket{{le="+Inf"}} {n}']
        lines += [f"weir_batch_size_rows_count {n}", f"weir_batch_size_rows_sum {rows}"]
    return "\n".join(lines) + "\n"


def test_parse_sums_the_labels_of_each_histogram() -> None:
    """The GC's generations are summed bucket by bucket; other metrics are skipped."""
    got = parse_page(_page([5, 6, 6, 6], [10, 10, 10, 10], [0, 1, 2, 2])).buckets
    assert got[LOOP_LAG] == {0.001: 5, 0.05: 6, 0.1: 6, float("inf"): 6}
    assert got[GC_PAUSE] == {0.001: 10, 0.05: 11, 0.1: 12, float("inf"): 12}


def test_the_longest_hold_is_the_lower_edge_of_the_highest_bucket_that_grew() -> None:
    """A wake-up in (50, 100] ms during the trial: held at least 50 ms, even though an
    earlier trial had one past 100 ms (its count did not grow); only on-time wake-ups: 0;
    a missing read: None."""
    before = {0.001: 100.0, 0.05: 101.0, 0.1: 101.0, float("inf"): 102.0}
    after = {0.001: 180.0, 0.05: 181.0, 0.1: 182.0, float("inf"): 183.0}
    assert held_at_least_ms(before, after) == pytest.approx(50.0)
    only_fast = {0.001: 150.0, 0.05: 101.0 + 50, 0.1: 101.0 + 50, float("inf"): 102.0 + 50}
    assert held_at_least_ms(before, only_fast) == 0.0
    past_top = {**after, float("inf"): 184.0}
    assert held_at_least_ms(before, past_top) == pytest.approx(100.0)
    assert held_at_least_ms(None, after) is None
    assert held_at_least_ms(before, None) is None


def test_holds_reads_both_histograms_or_neither() -> None:
    b = parse_page(_page([5, 6, 6, 6], [10, 10, 10, 10], [0, 0, 0, 0]))
    a = parse_page(_page([9, 10, 11, 11], [20, 20, 20, 20], [0, 1, 1, 1]))
    assert holds(b, a) == pytest.approx((50.0, 1.0))
    assert holds(None, a) == (None, None)
    assert holds(b, None) == (None, None)


def test_the_mean_batch_is_the_trials_rows_over_its_batches() -> None:
    """(1,300 - 300) rows in (140 - 40) batches: 10 per batch; no batch in the trial, a
    page without the histogram, or a missing read: None."""
    quiet = [0, 0, 0, 0]
    before = parse_page(_page(quiet, quiet, quiet, (40, 300)))
    after = parse_page(_page(quiet, quiet, quiet, (140, 1300)))
    assert before.batches == (40.0, 300.0)
    assert mean_batch(before, after) == pytest.approx(10.0)
    assert mean_batch(before, before) is None
    bare = parse_page(_page(quiet, quiet, quiet))
    assert bare.batches is None and bare.buckets == before.buckets
    assert mean_batch(bare, after) is None
    assert mean_batch(None, after) is None and mean_batch(before, None) is None
    assert isinstance(after, Page)


async def test_sample_reads_the_page_over_http_or_gives_none() -> None:
    """The probe reads a whole one-request page; an error status, a page that is not
    Prometheus text, a port nothing listens on, or no port at all sample as None."""
    page = _page([1, 2, 3, 3], [1, 1, 1, 1], [0, 0, 0, 0])
    answer = [b"200 OK", page.encode()]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert request.startswith(b"GET /metrics HTTP/1.1\r\n")
        status, body = answer
        writer.write(b"HTTP/1.1 " + status + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        got = await sample(port)
        assert got is not None and got.buckets[LOOP_LAG][0.1] == 3
        assert got.buckets[GC_PAUSE][0.001] == 1 and got.batches is None
        answer[0] = b"503 Service Unavailable"
        assert await sample(port) is None
        answer[:] = [b"200 OK", b"weir_event_loop_lag_seconds_bucket{le=oops} 1\n"]
        assert await sample(port) is None
    assert await sample(free_port()) is None
    assert await sample(None) is None
