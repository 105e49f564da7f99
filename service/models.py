"""Live model swap: load a new version off the hot path, then install it between batches.

:class:`ModelControl` is what ``weir serve`` exposes for it (``[model]`` settings):

- ``swap(path)``: in a dedicated loader thread, load the package at ``path`` (every file's
  sha256 checked), re-run its parity check, build the engine and warm it up (which measures
  its latency profile) with ``engines.version.load_version``; then, on the loop, check that
  its feature contract is the serving one's (``engines.version.contract_change``) and offer
  it to the pipeline, whose dispatcher installs it between two batches. The old engine is
  closed in the loader thread afterwards. One load at a time (a second is ``SwapBusy``).
- A version that fails any step is refused: one ``model_refused`` log line naming the path
  and the reason, ``weir_model_loads_total{result="refused"}``, and the old version keeps
  serving. A swapped-in one logs ``model_swapped`` and counts ``result="loaded"``.
- ``POST /admin/model`` (``[model] admin``, loopback peers only: a package's feature code is
  imported when it loads) with ``{"path": "<package dir>"}``: ``admin`` answers it.
- ``[model] watch_dir``: ``watch`` polls it every ``watch_interval_ms`` and swaps in the
  newest package directory (one holding ``metadata.json``, dated by its newest file) unless
  it is the one serving; one refused is tried again only once a file in it changes.

- ``[model] shadow``: ``start_shadow`` loads that package the same way (refusals alike)
  and runs it as the pipeline's ``service.shadow.Shadow``, publishing to ``shadow_topic``.

A new feature contract (other feature implementation or settings, decision kind, buckets)
is refused rather than rebuilt: the per-key windows and head states were built by the
serving version's code, and rebuilding them would turn every key back to ``warming``.
Restart the service with ``[engine] bundle`` set to such a version instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from engines.errors import EngineError
from engines.version import ModelVersion, contract_change, load_version
from service.errors import ModelRefused, ServiceError, SwapBusy
from service.logs import get_logger
from service.shadow import Shadow

if TYPE_CHECKING:
    from service.base import Sink
    from service.pipeline import Pipeline
    from service.settings import Settings
    from service.tasks import TaskSupervisor

__all__ = ["Loader", "ModelControl"]

log = get_logger("weir.models")

Loader = Callable[[str], ModelVersion]
"""Loads, verifies and warms the package at a path (blocks; run in the loader thread)."""

_META = "metadata.json"


class _SwapRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    path: str


_REQUEST = msgspec.json.Decoder(_SwapRequest)


class ModelControl:
    """Swaps the model a pipeline serves (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        current: ModelVersion,
        pipeline: Pipeline,
        *,
        loader: Loader | None = None,
        on_swap: Callable[[ModelVersion], None] | None = None,
        install_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.current = current
        """The version serving now."""
        self.pipeline = pipeline
        self._load = loader or self._load_package
        self._on_swap = on_swap
        self._install_timeout = install_timeout_s
        """How long the dispatcher may take to reach a batch boundary and install."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="weir-model-loader")
        self._busy = False
        self.last_refusal: dict[str, str] | None = None
        """``{"path", "reason"}`` of the latest refused version."""
        self._tried: dict[str, int] = {}
        """Watched package directory -> its newest file's mtime_ns when last tried."""
        self.shadow: Shadow | None = None
        """The shadow candidate running, if any (``start_shadow``)."""
        self._shadow_task: asyncio.Task[None] | None = None

    def _load_package(self, path: str) -> ModelVersion:
        m = self.settings.model
        return load_version(path, self.settings.engine, require_parity=m.require_parity)

    @property
    def counts(self) -> dict[str, int]:
        """``loaded`` / ``refused`` so far (the pipeline's counters)."""
        return self.pipeline.counters.model_loads

    def status(self) -> dict[str, Any]:
        """The ``model`` part of ``/status``."""
        return {
            "version": self.current.version,
            "path": self.current.path,
            "loads": dict(self.counts),
            "loading": self._busy,
            "last_refusal": self.last_refusal,
            "shadow": None if self.shadow is None else self.shadow.version.version,
        }

    # -- swap -----------------------------------------------------------------------------

    async def swap(self, path: str) -> ModelVersion:
        """Load ``path`` off the loop and install it between batches; returns the version
        now serving. Raises ``ModelRefused`` (old version kept) or ``SwapBusy``."""
        if self._busy:
            raise SwapBusy(f"model package {path} not loaded: another load is in progress")
        self._busy = True
        try:
            return await self._swap(path)
        finally:
            self._busy = False

    async def _load_off_loop(self, path: str, role: str) -> ModelVersion:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._load, path)
        except EngineError as exc:
            raise self._refuse(path, str(exc), role) from exc
        except Exception as exc:  # a package's own feature code may raise anything
            raise self._refuse(path, f"{type(exc).__name__}: {exc}", role) from exc

    async def _swap(self, path: str) -> ModelVersion:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        candidate = await self._load_off_loop(path, "primary")
        reason = self._unfit(candidate)
        if reason is None:
            reason = await self._install(candidate)
        if reason is not None:
            await loop.run_in_executor(self._executor, candidate.engine.close)
            raise self._refuse(path, reason, "primary")
        old, self.current = self.current, candidate
        self.counts["loaded"] += 1
        log.info(
            "model_swapped",
            path=path,
            version=candidate.version,
            previous=old.version,
            load_ms=round((time.monotonic() - t0) * 1e3, 1),
        )
        if self._on_swap is not None:
            self._on_swap(candidate)
        await loop.run_in_executor(self._executor, old.engine.close)
        return candidate

    async def _install(self, candidate: ModelVersion) -> str | None:
        """Have the dispatcher install ``candidate``; why it did not, or None."""
        pipe = self.pipeline
        if pipe.failed is not None:
            return f"the pipeline has failed, nothing to swap into: {pipe.failed}"
        try:
            installed = pipe.offer(candidate)
        except ServiceError as exc:
            return str(exc)
        try:
            await asyncio.wait_for(asyncio.shield(installed), self._install_timeout)
        except TimeoutError:
            if pipe.withdraw(candidate):
                return (
                    f"not installed within {self._install_timeout:g} s: the dispatcher did "
                    "not reach a batch boundary"
                )
            await installed  # installed as the time ran out
        except EngineError as exc:
            return str(exc)
        return None

    def _unfit(self, candidate: ModelVersion) -> str | None:
        if candidate.version == self.current.version:
            return f"version {candidate.version} is serving already"
        change = contract_change(self.current, candidate)
        if change is not None:
            return f"{change}; the per-key state would be invalid (restart with it instead)"
        return None

    def _refuse(self, path: str, reason: str, role: str) -> ModelRefused:
        self.counts["refused"] += 1
        self.last_refusal = {"path": path, "reason": reason}
        log.warning(
            "model_refused", path=path, role=role, reason=reason, serving=self.current.version
        )
        return ModelRefused(f"model package {path} refused: {reason}", path, reason)

    # -- [model] shadow ----------------------------------------------------------------------

    async def start_shadow(self, path: str, sink: Sink, tasks: TaskSupervisor) -> Shadow:
        """Load ``path`` off the loop and run it as the pipeline's shadow (its task under
        ``tasks``); ``ModelRefused`` (logged, counted) when it fails or its feature
        contract differs from the primary's."""
        candidate = await self._load_off_loop(path, "shadow")
        change = contract_change(self.current, candidate)
        if change is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, candidate.engine.close)
            raise self._refuse(
                path, f"{change} (the shadow decides the primary's inputs)", "shadow"
            )
        m = self.settings.model
        shadow = Shadow(
            candidate,
            sink=sink,
            topic=m.shadow_topic,
            counters=self.pipeline.counters,
            queue=m.shadow_queue,
            max_keys=self.settings.state.max_keys,
            output_encoding=self.settings.kafka.output_encoding,
            primary_idle=lambda: self.pipeline.idle,
        )
        self.shadow = shadow
        self.pipeline.shadow = shadow
        self._shadow_task = tasks.spawn(shadow.run(), "weir-shadow")
        log.info("shadow_started", path=path, version=candidate.version, topic=m.shadow_topic)
        return shadow

    async def aclose(self) -> None:
        """Stop the shadow (its thread finishes the batch it runs) and the loader thread;
        a load in progress finishes unseen (not awaited)."""
        task, self._shadow_task = self._shadow_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if self.shadow is not None:
            self.pipeline.shadow = None
            self.shadow.close()
            self.shadow = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- POST /admin/model --------------------------------------------------------------------

    async def admin(self, body: bytes) -> tuple[int, bytes]:
        """Answer ``POST /admin/model``: 200 with the version now serving, 400 for a bad
        body, 409 while another load runs, 422 for a refused version (JSON bodies)."""
        try:
            request = _REQUEST.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            shown = body[:200].decode("utf-8", "replace")
            return 400, _error(
                f'body must be JSON {{"path": "<package dir>"}}: {exc}; got {shown!r}'
            )
        if not request.path:
            return 400, _error('"path" is empty: give a model package directory')
        try:
            version = await self.swap(request.path)
        except SwapBusy as exc:
            return 409, _error(str(exc))
        except ModelRefused as exc:
            return 422, _error(str(exc))
        return 200, msgspec.json.encode({"version": version.version, "path": version.path})

    # -- [model] watch_dir -----------------------------------------------------------------

    def newest(self) -> tuple[str, int] | None:
        """The watched directory's newest package: (path, mtime_ns of its newest file)."""
        root = Path(self.settings.model.watch_dir)
        best: tuple[str, int] | None = None
        try:
            entries = list(root.iterdir())
        except OSError:
            return None
        for entry in entries:
            try:
                if not (entry / _META).is_file():
                    continue
                mtime = max(f.stat().st_mtime_ns for f in entry.iterdir())
            except OSError:
                continue
            if best is None or (mtime, str(entry)) > (best[1], best[0]):
                best = (str(entry), mtime)
        return best

    async def poll(self) -> ModelVersion | None:
        """One look at ``watch_dir``: swap in its newest package when it is new (not the
        one serving, not tried with these file times); the swapped-in version, else None."""
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(self._executor, self.newest)
        if found is None or self._busy:
            return None
        path, mtime = found
        if self._tried.get(path) == mtime or _same_dir(path, self.current.path):
            return None
        self._tried[path] = mtime
        try:
            return await self.swap(path)
        except (ModelRefused, SwapBusy):
            return None  # logged and counted; the old version serves on

    async def watch(self) -> None:
        """Poll ``watch_dir`` every ``watch_interval_ms`` (first after one interval) until
        cancelled."""
        every = self.settings.model.watch_interval_ms / 1000
        while True:
            await asyncio.sleep(every)
            await self.poll()


def _error(message: str) -> bytes:
    return msgspec.json.encode({"error": message})


def _same_dir(a: str, b: str) -> bool:
    if not a or not b:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
