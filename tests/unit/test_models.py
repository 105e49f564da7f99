"""Live model swap in memory: a new version is installed between batches, every decision
names the version that made it, and a version that fails stays out while the old serves on."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from engines.errors import BundleError, EngineError
from engines.fake import FakeEngine, LatencyModel
from engines.head import Head
from engines.version import ModelVersion
from schemas.decision import Status
from schemas.features import FeatureSpec, Task
from service.errors import ModelRefused, ServiceError, SwapBusy
from service.memory import MemoryRecord, MemorySink
from service.models import ModelControl
from service.pipeline import Pipeline
from service.settings import Settings, load_settings
from tests.pipeline_io import quote_record, sink_decisions

WINDOW = 4  # the window of the conftest fixtures
LABELS = ["SELL", "HOLD", "BUY"]
Fail = Callable[[int, int], bool]


def _settings(**env: str) -> Settings:
    return load_settings(env={"WEIR_SCHEDULER__BUDGET_MS": "10000", **env})


class _Engine(FakeEngine):
    """A fake engine that remembers being closed."""

    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def _version(
    name: str, *, window: int = WINDOW, max_batch: int = 8, fail: Fail | None = None
) -> ModelVersion:
    spec = FeatureSpec(task=Task.TRADING, window=window)
    engine = _Engine(
        n_features=spec.n_features,
        n_outputs=3,
        max_batch=max_batch,
        latency=LatencyModel(base_ns=20_000 if name == "v1" else 40_000, per_row_ns=0),
        fail=fail,
    )
    engine.warm_up(3)
    return ModelVersion(version=name, engine=engine, head=Head("trading", LABELS), features=spec)


def _record(i: int, key: str = "K0") -> MemoryRecord:
    return quote_record(i, key=key, timestamp=1_700_000_000_000 + i)


def _pipeline(settings: Settings, version: ModelVersion, sink: MemorySink) -> Pipeline:
    """A pipeline (not started) serving ``version`` into ``sink``."""
    return Pipeline(
        settings=settings,
        engine=version.engine,
        head=version.head,
        spec=FeatureSpec(task=Task.TRADING, window=WINDOW),
        sink=sink,
        model_version=version.version,
    )


class Served:
    """A started pipeline serving ``v1`` and the ModelControl over it."""

    def __init__(self, settings: Settings, v1: ModelVersion, loader: Callable[[str], Any]) -> None:
        self.sink = MemorySink()
        self.v1 = v1
        self.pipe = _pipeline(settings, v1, self.sink)
        self.control = ModelControl(settings, v1, self.pipe, loader=loader)
        self.pipe.start()

    async def feed(self, start: int, n: int, keys: int = 3) -> None:
        records = [_record(i, key=f"K{i % keys}") for i in range(start, start + n)]
        for i in range(0, n, 5):
            await self.pipe.ingest(records[i : i + 5])
            await asyncio.sleep(0)
        assert await self.pipe.drain(5.0)

    async def close(self) -> None:
        await self.pipe.close()
        await self.control.aclose()


@pytest.fixture
async def served() -> Any:
    made: list[Served] = []

    def make(
        *,
        settings: Settings | None = None,
        v1: ModelVersion | None = None,
        loader: Callable[[str], ModelVersion] | None = None,
        **versions: Any,
    ) -> Served:
        """``versions`` maps a path to the version (or a callable making it, or the error)
        the loader gives for it; ``loader`` replaces that loader."""

        def load(path: str) -> ModelVersion:
            found = versions[path]
            if isinstance(found, Exception):
                raise found
            return found() if callable(found) else found  # type: ignore[no-any-return]

        s = Served(settings or _settings(), v1 or _version("v1"), loader or load)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


async def test_a_swap_installs_the_new_version_between_batches(served: Any) -> None:
    """Decisions before the swap name v1, after it v2; per key v1... then v2...; the
    scheduler plans with v2's profile and v1's engine is closed."""
    v2 = _version("v2")
    s = served(v2=v2)
    await s.feed(0, 60)
    got = await s.control.swap("v2")
    assert got is v2 and s.control.current is v2 and s.pipe.engine is v2.engine
    assert s.pipe.scheduler.profile.stats() == v2.engine.profile.stats()
    assert s.pipe.scheduler.profile.p99_ns(1) == 40_000  # v1's was 20_000
    await s.feed(60, 60)
    decisions = sink_decisions(s.sink)
    assert sorted(d.offset for d in decisions) == list(range(120))
    assert {d.model_version for d in decisions if d.offset < 60} == {"v1"}
    assert {d.model_version for d in decisions if d.offset >= 60} == {"v2"}
    for key in ("K0", "K1", "K2"):
        versions = [d.model_version for d in decisions if d.key == key]
        assert versions == sorted(versions)  # "v1" < "v2": never back to v1
    assert ("weir-model", b"v2") in s.sink.on("weir.decisions")[-1].headers
    assert s.control.counts == {"loaded": 1, "refused": 0}
    assert s.v1.engine.closed  # type: ignore[union-attr]
    assert s.control.status()["version"] == "v2"


async def test_a_batch_in_flight_finishes_on_the_version_that_started_it(served: Any) -> None:
    """With the engine in a worker thread, a swap offered while a batch runs is installed
    only after that batch: its decisions all name v1, the next batch's v2."""
    entered, release = threading.Event(), threading.Event()
    armed = [False]

    def hold(call: int, bucket: int) -> bool:
        if armed[0]:
            armed[0] = False
            entered.set()
            release.wait(10)
        return False

    s = served(settings=_settings(WEIR_ENGINE__OFFLOAD="true"), v1=_version("v1", fail=hold))
    await s.feed(0, 3 * WINDOW)  # every key past warming
    before = len(sink_decisions(s.sink))
    armed[0] = True
    await s.pipe.ingest([_record(100 + i, key=f"K{i % 3}") for i in range(3)])
    assert await asyncio.to_thread(entered.wait, 10)  # the batch is inside v1's engine
    installed = s.pipe.offer(_version("v2"))
    await asyncio.sleep(0)
    assert s.pipe.model_version == "v1"  # not while the batch runs
    release.set()
    await installed
    await s.feed(200, 6)
    after = sink_decisions(s.sink)[before:]
    assert [d.model_version for d in after[:3]] == ["v1"] * 3
    assert {d.model_version for d in after[3:]} == {"v2"}
    assert all(d.status is Status.OK for d in after)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            BundleError("bundle /m/v2: hash mismatch for student.onnx: expected sha256 a, got b"),
            "bundle /m/v2: hash mismatch for student.onnx: expected sha256 a, got b",
        ),
        (
            BundleError("package /m/v2: parity check failed for fp32 against torch: x"),
            "package /m/v2: parity check failed for fp32 against torch: x",
        ),
        (RuntimeError("user features blew up"), "RuntimeError: user features blew up"),
    ],
)
async def test_a_version_that_fails_to_load_is_refused_and_the_old_one_serves_on(
    served: Any, error: Exception, reason: str
) -> None:
    """A load, hash or parity failure: ModelRefused naming path and reason, one log line,
    the refused counter, and v1 decides what comes next."""
    s = served(**{"/m/v2": error})
    with capture_logs() as logs, pytest.raises(ModelRefused) as info:
        await s.control.swap("/m/v2")
    assert str(info.value) == f"model package /m/v2 refused: {reason}"
    assert [e for e in logs if e["event"] == "model_refused"] == [
        {
            "event": "model_refused",
            "path": "/m/v2",
            "role": "primary",
            "reason": reason,
            "serving": "v1",
            "log_level": "warning",
        }
    ]
    assert s.control.counts == {"loaded": 0, "refused": 1}
    assert s.control.last_refusal == {"path": "/m/v2", "reason": reason}
    await s.feed(0, 20)
    assert {d.model_version for d in sink_decisions(s.sink)} == {"v1"}


async def test_a_new_feature_contract_is_refused_and_its_engine_closed(served: Any) -> None:
    """A candidate over another window would invalidate every key's state: refused."""
    other = _version("v2", window=WINDOW + 2)
    s = served(v2=other)
    with pytest.raises(ModelRefused) as info:
        await s.control.swap("v2")
    width = FeatureSpec(task=Task.TRADING, window=WINDOW).n_features
    assert info.value.reason == (
        f"the model input width changes from {width} to {other.engine.n_features} features; "
        "the per-key state would be invalid (restart with it instead)"
    )
    assert other.engine.closed  # type: ignore[union-attr]
    assert s.pipe.engine is s.v1.engine


async def test_the_version_serving_is_not_loaded_again(served: Any) -> None:
    """Asking for the version that serves is refused (nothing to change)."""
    s = served(again=_version("v1"))
    with pytest.raises(ModelRefused) as info:
        await s.control.swap("again")
    assert info.value.reason == "version v1 is serving already"


async def test_one_load_at_a_time(served: Any) -> None:
    """A second swap while the first is loading is SwapBusy; the first completes."""
    gate = threading.Event()

    def slow() -> ModelVersion:
        gate.wait(10)
        return _version("v2")

    s = served(slow=slow)
    first = asyncio.ensure_future(s.control.swap("slow"))
    await asyncio.sleep(0)
    with pytest.raises(SwapBusy) as info:
        await s.control.swap("slow")
    assert str(info.value) == "model package slow not loaded: another load is in progress"
    gate.set()
    assert (await first).version == "v2"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            b"{not json",
            400,
            'body must be JSON {"path": "<package dir>"}: JSON is malformed: object keys '
            "must be strings (byte 1); got '{not json'",
        ),
        (
            b'{"model": "/m"}',
            400,
            'body must be JSON {"path": "<package dir>"}: Object contains unknown field '
            '`model`; got \'{"model": "/m"}\'',
        ),
        (
            b'{"path": 7}',
            400,
            'body must be JSON {"path": "<package dir>"}: Expected `str`, got `int` - at '
            "`$.path`; got '{\"path\": 7}'",
        ),
        (b'{"path": ""}', 400, '"path" is empty: give a model package directory'),
        (
            b'{"path": "/m/bad"}',
            422,
            "model package /m/bad refused: bundle /m/bad: not a directory",
        ),
    ],
)
async def test_the_admin_endpoint_names_what_is_wrong(
    served: Any, body: bytes, status: int, message: str
) -> None:
    """Bad JSON, a missing or empty path: 400 naming the bad value; a refused version: 422."""
    s = served(**{"/m/bad": BundleError("bundle /m/bad: not a directory")})
    got = await s.control.admin(body)
    assert got == (status, msgspec.json.encode({"error": message}))


async def test_the_admin_endpoint_swaps_and_answers_the_version(served: Any) -> None:
    """A good body: 200 with the version now serving."""
    s = served(**{"/m/v2": _version("v2")})
    assert await s.control.admin(b'{"path": "/m/v2"}') == (200, b'{"version":"v2","path":""}')
    assert s.pipe.model_version == "v2"


def _package_dir(root: Path, name: str, mtime_s: int) -> str:
    d = root / name
    d.mkdir()
    meta = d / "metadata.json"
    meta.write_text("{}")
    os.utime(meta, (mtime_s, mtime_s))
    return str(d)


async def test_the_watched_directory_swaps_in_its_newest_package_once(
    served: Any, tmp_path: Path
) -> None:
    """The newest package is loaded; polling again does nothing; a refused one is tried
    again only after a file in it changes; a directory without metadata.json is ignored."""
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "student.onnx").write_bytes(b"")
    os.utime(partial / "student.onnx", (9_000, 9_000))
    old = _package_dir(tmp_path, "a", 1_000)
    new = _package_dir(tmp_path, "b", 2_000)
    tries: list[str] = []
    outcomes: dict[str, Any] = {old: _version("v1b"), new: BundleError("bundle b: broken")}

    def loader(path: str) -> ModelVersion:
        tries.append(path)
        got = outcomes[path]
        if isinstance(got, Exception):
            raise got
        return got  # type: ignore[no-any-return]

    s = served(settings=_settings(WEIR_MODEL__WATCH_DIR=str(tmp_path)), loader=loader)
    assert await s.control.poll() is None
    assert await s.control.poll() is None
    assert tries == [new]
    assert s.control.counts["refused"] == 1
    outcomes[new] = _version("v2")
    (Path(new) / "student.onnx").write_bytes(b"")  # the copy completes
    os.utime(Path(new) / "student.onnx", (3_000, 3_000))
    assert (await s.control.poll()).version == "v2"  # type: ignore[union-attr]
    assert await s.control.poll() is None  # it serves now
    assert tries == [new, new]


async def test_a_dispatcher_that_never_reaches_a_batch_boundary_refuses_the_swap() -> None:
    """With no dispatcher running the offer is withdrawn after install_timeout_s: refused,
    the old version serves on, and a later swap is not blocked by the stale offer."""
    v1 = _version("v1")
    pipe = _pipeline(_settings(), v1, MemorySink())
    versions = {"v2": _version("v2"), "v3": _version("v3")}
    control = ModelControl(
        _settings(), v1, pipe, loader=versions.__getitem__, install_timeout_s=0.01
    )
    with pytest.raises(ModelRefused) as info:
        await control.swap("v2")
    assert info.value.reason == (
        "not installed within 0.01 s: the dispatcher did not reach a batch boundary"
    )
    assert pipe.model_version == "v1" and versions["v2"].engine.closed  # type: ignore[union-attr]
    await control.aclose()
    pipe.start()
    again = ModelControl(_settings(), v1, pipe, loader=versions.__getitem__)
    assert (await again.swap("v3")).version == "v3"
    await pipe.close()
    await again.aclose()


async def test_a_failed_pipeline_refuses_a_swap() -> None:
    """Once a decision was refused by the broker the pipeline has failed: nothing to swap."""

    def refuse(msg: Any) -> BaseException | None:
        return RuntimeError("broker gone")

    v1 = _version("v1")
    pipe = _pipeline(_settings(), v1, MemorySink(fail=refuse))
    control = ModelControl(_settings(), v1, pipe, loader=lambda path: _version("v2"))
    pipe.start()
    await pipe.ingest([_record(0)])  # its warming decision is refused
    assert pipe.failed is not None
    with pytest.raises(ModelRefused) as info:
        await control.swap("v2")
    assert info.value.reason == (
        "the pipeline has failed, nothing to swap into: publishing decisions failed: "
        "RuntimeError: broker gone - topic=weir.events partition=0 offset=0"
    )
    await pipe.close()
    await control.aclose()


async def test_the_dispatcher_takes_one_offer_and_keeps_out_a_wrong_width(served: Any) -> None:
    """A second offer while one waits is refused; an engine of another width offered
    directly is not installed: its future holds the EngineError and v1 serves on."""
    s = served()
    wide = _version("wide", window=WINDOW + 1)
    first = s.pipe.offer(wide)
    with pytest.raises(ServiceError) as info:
        s.pipe.offer(_version("v3"))
    assert str(info.value) == "model version wide is already waiting to be installed"
    with pytest.raises(EngineError) as bad:
        await first
    width = FeatureSpec(task=Task.TRADING, window=WINDOW).n_features
    assert str(bad.value) == (
        f"model version wide takes {wide.engine.n_features} features per input but the "
        f"feature implementation serving gives {width}"
    )
    assert s.pipe.model_version == "v1"


async def test_the_dispatcher_keeps_out_another_decision_kind(served: Any) -> None:
    """A version whose head decides another kind, offered directly (past the loader's
    contract check), is not installed: the keys' state and the slots' targets are the
    serving kind's. Its future holds the EngineError naming both kinds; v1 serves on."""
    s = served()
    other = _version("anom")
    other.head = Head("anomaly")
    with pytest.raises(EngineError) as bad:
        await s.pipe.offer(other)
    assert str(bad.value) == (
        "model version anom decides 'anomaly' but the version serving decides 'classes': "
        "the keys' state is the old kind's"
    )
    assert s.pipe.model_version == "v1"
    await s.feed(0, 20)
    assert {d.model_version for d in sink_decisions(s.sink)} == {"v1"}


async def test_a_missing_watch_dir_is_looked_at_again_later(served: Any, tmp_path: Path) -> None:
    """A watch_dir that does not exist (yet) gives nothing to load, and no error."""
    tries: list[str] = []
    s = served(
        settings=_settings(WEIR_MODEL__WATCH_DIR=str(tmp_path / "not-yet")),
        loader=lambda path: tries.append(path),  # type: ignore[func-returns-value]
    )
    assert await s.control.poll() is None and tries == []
