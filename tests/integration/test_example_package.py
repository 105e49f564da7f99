"""The README's new-user path: train the example package, serve it on Kafka, replay a feed.

The same commands the README gives, as subprocesses: ``examples/sensor_package/train.py``
(a user's own feature class, trained from the NAB feed in ../shared), ``weir replay import
nab``, ``weir serve`` with the example's feature module on ``PYTHONPATH`` and ``weir replay
run``; then the decision topic is read back: one decision per reading, from the package,
with its anomaly evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.decision import Status
from tests.kafka_io import read_decisions

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sensor_package"
CSV = REPO.parent / "shared/feeds/nab/data/realKnownCause/machine_temperature_system_failure.csv"
ROWS = 1200
WINDOW = 16


def _env() -> dict[str, str]:
    paths = [str(REPO), str(EXAMPLE), os.environ.get("PYTHONPATH", "")]
    # A budget no loaded CI host misses: this test is about decisions, not latency.
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "WEIR_SCHEDULER__BUDGET_MS": "5000",
    }


async def _run(*args: str, timeout: float = 180.0) -> str:
    """Run ``python ARGS...``; its stdout, or fail with its stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=_env(),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{err.decode()[-3000:]}"
    return out.decode()


@pytest.mark.skipif(not CSV.is_file(), reason=f"the NAB feed is not at {CSV}")
async def test_the_example_package_trains_serves_and_decides(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    """Every replayed reading gets one decision from the user's package; past its warm-up
    the decisions carry the likelihood and the package's threshold."""
    pkg = tmp_path / "machine-temp"
    feed = tmp_path / "mt.parquet"
    # Training and the feed import are independent: run side by side.
    async with asyncio.TaskGroup() as tg:
        train = (str(EXAMPLE / "train.py"), "--csv", str(CSV), "--out", str(pkg))
        training = tg.create_task(_run(*train, "--limit", str(ROWS)))
        tg.create_task(
            _run("-m", "service.cli", "replay", "import", "nab", str(CSV), "--out", str(feed))
        )
    trained = training.result()
    version = json.loads((pkg / "package.json").read_text())["version"]
    assert f"wrote {pkg} ({version})" in trained
    inp, out, dlq = [await topic_factory(1, prefix=p) for p in ("in", "out", "dlq")]
    cfg = tmp_path / "weir.toml"
    cfg.write_text(
        (EXAMPLE / "weir.toml")
        .read_text()
        .replace("127.0.0.1:9092", kafka_bootstrap)
        .replace('["sensors"]', f'["{inp}"]')
        .replace('"sensor-decisions"', f'"{out}"')
        .replace('"sensor-dlq"', f'"{dlq}"')
        .replace('"machine-temp"', f'"g-{tmp_path.name}"')
        .replace('"build/machine-temp"', f'"{pkg}"')
    )
    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service.cli",
        "serve",
        "--config",
        str(cfg),
        env=_env(),
        cwd=REPO,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await _run(
            "-m", "service.cli", "replay", "run", str(feed), "--config", str(cfg),
            "--rate", "2000", "--limit", str(ROWS), "--no-progress", "--out",
            str(tmp_path / "result.json"),
        )  # fmt: skip
        got = await read_decisions(kafka_bootstrap, out, ROWS, fetch_max_wait_ms=50)
    finally:
        with contextlib.suppress(ProcessLookupError):
            serve.send_signal(signal.SIGTERM)
        await asyncio.wait_for(serve.wait(), 30)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["completeness"]["lost"] == 0
    assert sorted(d.offset for d in got) == list(range(ROWS))
    assert {d.model_version for d in got} == {version}
    assert [d.status for d in got[:WINDOW]] == [Status.WARMING] * WINDOW
    ok = [d for d in got if d.status is Status.OK]
    assert len(ok) == ROWS - WINDOW
    assert all(d.anomaly is not None and d.anomaly.threshold == 0.5 for d in ok)
    judged = [d for d in ok if d.anomaly is not None and d.anomaly.likelihood is not None]
    assert len(judged) == len(ok) - (288 + 100)  # LikelihoodSpec() warms on 388 errors
    assert all(
        (d.label == "ALERT") == (d.anomaly is not None and d.anomaly.log_likelihood >= 0.5)
        for d in judged
    )
