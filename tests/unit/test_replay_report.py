"""Results JSON, the text and HTML reports, `weir replay report` and `compare`."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hdrh.histogram import HdrHistogram

from replay.comparison import compare
from replay.errors import ReplayError
from replay.measure import Recorder
from replay.pacing import Pacing
from replay.report import format_summary, format_verdict, render_html, write_html
from replay.results import (
    RESULT_FORMAT,
    LatencySummary,
    RunConfig,
    RunResult,
    decode_histogram,
    read_result,
    write_result,
)
from replay.runner import Timing, build_result
from replay.slo import Slo, evaluate
from schemas.decision import Decision, Stamps, Status
from service.cli import main

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
CHARTS = (
    "latency-over-time",
    "percentile-spectrum",
    "throughput",
    "batch-sizes",
    "batch-size-distribution",
    "stage-breakdown",
    "misses-over-time",
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture
def make_result() -> Callable[..., RunResult]:
    """A run of ``seconds`` at 500 events/s with a stall, misses and stamps, computed for real."""

    def make(seconds: int = 6, extra_ms: float = 0.0, budget_ms: float = 20.0) -> RunResult:
        rec = Recorder(16)
        n = seconds * 500
        for i in range(n):
            intended = T0 + i * 2 * MS
            actual = max(intended, T0 + 3000 * MS) if 1250 <= i < 1500 else intended
            rec.sent(i, intended, actual)
            rec.bound(i, "in", i % 2, i)
            if i % 997 == 13:
                continue  # lost
            status = Status.OK
            if i % 301 == 7:
                status = Status.SHED
            elif i % 409 == 5:
                status = Status.EXPIRED
            ingest = actual + MS
            stamps = Stamps(
                ingest_wall_ns=ingest,
                dispatch_wall_ns=ingest + 300_000 + (i % 7) * 100_000,
                infer_done_wall_ns=ingest + 500_000 + (i % 7) * 100_000,
                publish_wall_ns=ingest + 600_000 + (i % 7) * 100_000,
                deadline_wall_ns=ingest + 5 * MS,
            )
            d = Decision(
                topic="in",
                partition=i % 2,
                offset=i,
                key=f"K{i % 3}",
                model_version="t",
                status=status,
                batch_size=1 + i % 8,
                stamps=stamps,
            )
            rec.decided(d, ingest + 2 * MS + int(extra_ms * MS))
        config = RunConfig(
            feed="feeds/x.parquet",
            feed_rows=n,
            rows_replayed=n,
            feed_span_s=float(seconds),
            mode="kafka",
            service="test",
            bootstrap="127.0.0.1:9092",
        )
        slo = Slo(budget_ms=budget_ms, percentiles=((99.0, 10.0),), min_attainment=0.9)
        return build_result(
            rec,
            Timing(started_wall_ns=T0, ended_wall_ns=T0 + seconds * 10**9),
            config=config,
            slo=slo,
            pacing=Pacing(speed=1.0),
        )

    return make


def test_results_round_trip(make_result: Callable[..., RunResult], tmp_path: Path) -> None:
    """A result written to JSON reads back equal, histograms included."""
    r = make_result()
    path = write_result(r, tmp_path / "r.json")
    back = read_result(path)
    assert back == r
    hist = decode_histogram(back.latency["e2e"].hdr)
    assert hist.get_total_count() == back.latency["e2e"].count
    raw = msgspec.json.decode(path.read_bytes())
    assert raw["format"] == RESULT_FORMAT
    assert set(raw) >= {"config", "completeness", "latency", "stages", "series", "verdict"}
    assert set(raw["series"]) >= {"t_s", "sent", "decided", "p50_ms", "p99_ms", "misses"}


def test_result_files_of_other_kinds_are_refused(tmp_path: Path) -> None:
    """Reading a file that is not a result names the file and what was found."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something/2"}')
    with pytest.raises(ReplayError) as info:
        read_result(bad)
    assert str(info.value) == (
        f"results {bad}: format is 'something/2', expected 'weir.replay.result/1' "
        "(not a weir replay result, or from another version)"
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "weir.replay.result/1", "config": 3}')
    with pytest.raises(ReplayError, match=r"does not match the schema: Expected `object`"):
        read_result(broken)


def test_text_summary_and_verdict(make_result: Callable[..., RunResult]) -> None:
    """The summary names the key figures; the verdict table has one row per check."""
    r = make_result()
    text = format_summary(r)
    for word in ("throughput", "e2e latency", "raw latency", "lost 3", "shed", "attainment"):
        assert word in text
    assert r.verdict is not None
    table = format_verdict(r.verdict).splitlines()
    assert table[0] == "verdict: FAIL"
    assert [line.split()[0] for line in table[2:]] == ["e2e", "attainment", "lost"]
    assert table[-1].rstrip().endswith("FAIL")


def test_latency_past_60_s_is_reported_as_measured(make_result: Callable[..., RunResult]) -> None:
    """Decisions 300 s after their send show as 300 s in the summary, the verdict and the
    page, never as the 60 s top of a histogram range, and fail a p99 limit of 100 s."""
    r = make_result(seconds=1, extra_ms=300_000.0)
    e2e = r.latency["e2e"]
    assert e2e.max_ms == pytest.approx(300_003.0) and e2e.clamped_high == 0
    line = next(x for x in format_summary(r).splitlines() if "e2e latency" in x)
    figures = [float(v.replace(",", "")) for v in re.findall(r"(?:p50|p99|max) ([\d,.]+)", line)]
    assert len(figures) == 3 and all(300_000 <= v < 300_400 for v in figures), line
    assert ">" not in line.split("(")[0]
    assert r.verdict is not None
    row = next(x for x in format_verdict(r.verdict).splitlines() if x.strip().startswith("e2e"))
    assert re.search(r"300,\d{3} ms\s+FAIL$", row), row
    page = render_html(r)
    e2e_row = re.search(r"<tr><td>e2e</td>(.*?)</tr>", page)
    assert e2e_row is not None
    cells = re.findall(r"<td>([^<]*)</td>", e2e_row.group(1))[1:]
    assert len(cells) == 6 and all(re.fullmatch(r"300,\d{3}", c) for c in cells), cells


def _old_summary(count: int) -> LatencySummary:
    """A summary as results files before the growing range held it: every value past 60 s,
    recorded at the 60 s top of a fixed range and counted in ``clamped_high``."""
    hist = HdrHistogram(1_000, 60_000_000_000, 3)
    hist.record_value(60_000_000_000, count)
    top = hist.get_value_at_percentile(50) / 1e6
    return LatencySummary(
        count=count,
        min_ms=60_000.0,
        mean_ms=60_000.0,
        max_ms=60_000.0,
        percentiles=dict.fromkeys(("50", "90", "99", "99.9", "99.99"), top),
        clamped_high=count,
        hdr=hist.encode().decode("ascii"),
    )


def test_old_results_past_the_range_show_lower_bounds_and_fail(
    make_result: Callable[..., RunResult],
) -> None:
    """Figures that fell past an old result's 60 s range are marked ``>`` with the count beyond
    it, in the text and on the page, and a limit they seem to meet fails."""
    r = make_result(seconds=1)
    r.latency["e2e"] = _old_summary(300)
    line = next(x for x in format_summary(r).splitlines() if "e2e latency" in x)
    assert "p50 >60,029  p99 >60,029  p99.9 >60,029  max >60,000 ms  [> 60 s: 300 of 300]" in line
    verdict = evaluate(
        Slo(budget_ms=100_000.0, percentiles=((99.0, 70_000.0),)),
        latency=r.latency,
        completeness=r.completeness,
        sender=r.sender,
    )
    assert not verdict.passed
    check = verdict.checks[0]
    assert (check.name, check.passed, check.lower_bound) == ("e2e p99", False, True)
    text = format_verdict(verdict).splitlines()
    assert re.search(r"<= 70,000 ms\s+>60,029 ms\s+FAIL$", text[2]), text[2]
    assert "  e2e p99: beyond the histogram's 60,000 ms range: at least this" in text
    page = render_html(msgspec.structs.replace(r, verdict=verdict))
    assert "<td>&gt;60,029 ms</td>" in page
    assert "e2e: &gt; 60 s: 300 of 300 beyond the histogram's range" in page


def test_html_is_self_contained_with_every_plot(make_result: Callable[..., RunResult]) -> None:
    """The page has every chart, each with data, and references nothing outside itself."""
    page = render_html(make_result())
    for name in CHARTS:
        assert f'data-chart="{name}"' in page
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"\b(src|href)=", page)
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    points = [
        int(x) for x in re.findall(r'class="series" data-name="[^"]*" data-points="(\d+)"', page)
    ]
    assert len(points) >= 14 and all(p > 0 for p in points)
    spectrum = page.split('data-chart="percentile-spectrum"')[1].split("</svg>")[0]
    assert (
        'data-name="e2e (CO-corrected)"' in spectrum and 'data-name="raw (actual send)"' in spectrum
    )


def test_compare_prints_deltas(make_result: Callable[..., RunResult]) -> None:
    """compare lists both runs' figures with the difference and its ratio."""
    a, b = make_result(), make_result(extra_ms=2.0)
    text = compare(a, b, names=("base", "slow"))
    row = next(line for line in text.splitlines() if line.strip().startswith("e2e p50"))
    cells = row.split()
    assert cells[-2].startswith("+2.") and cells[-1].endswith("%")
    assert "lost" in text and "verdict" in text


def test_report_and_compare_commands(
    make_result: Callable[..., RunResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`weir replay report` writes the page beside the JSON; `compare` prints the table."""
    a = write_result(make_result(), tmp_path / "a.json")
    b = write_result(make_result(extra_ms=1.0), tmp_path / "b.json")
    assert main(["replay", "report", str(a)]) == 0
    assert (tmp_path / "a.html").read_text().count('<svg class="chart"') == len(CHARTS)
    assert main(["replay", "report", str(a), "--out", str(tmp_path / "x" / "r.html")]) == 0
    assert (tmp_path / "x" / "r.html").exists()
    assert main(["replay", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "figure" in out and "delta" in out and "report:" in out
    assert main(["replay", "report", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"weir: error: cannot read results {tmp_path / 'missing.json'}: No such file or directory"
    )


def _png_pixels(path: Path) -> bytes:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat = b""
    pos = 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return zlib.decompress(idat)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(
    make_result: Callable[..., RunResult], tmp_path: Path
) -> None:
    """Headless Chromium lays out every plot with its data, and the page is not blank."""
    assert CHROMIUM is not None
    page = write_html(make_result(), tmp_path / "report.html")
    common = [CHROMIUM, *CHROMIUM_FLAGS]
    dom = subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for name in CHARTS:
        assert f'data-chart="{name}"' in dom
    assert len(re.findall(r'<path class="series"[^>]* d="M', dom)) >= 8
    assert len(re.findall(r'<rect class="bar"', dom)) > 20
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            *common,
            f"--user-data-dir={tmp_path / 'p2'}",
            "--window-size=1000,2600",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = _png_pixels(shot)
    # A blank page filters down to a handful of byte values; plots in colour give many.
    assert len(set(pixels)) > 100
    assert sum(1 for b in pixels[::7] if b not in (0, 255)) > len(pixels[::7]) // 100
