"""The contenders: who they are, where their code lives, and how a child process runs one.

Each contender is a module of this package with ``serve(cfg: PeerConfig) -> int``: it
runs in a child process (``python -m bench.peers.worker NAME``), consumes
``cfg.input_topic``, publishes one JSON ``Decision`` per input on ``cfg.decision_topic``
(same coordinates and statuses as weir's), and returns its exit status after SIGTERM.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Callable, Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import msgspec

from bench.peers.config import PeerConfig


class Contender(msgspec.Struct, frozen=True, kw_only=True):
    """One system under test."""

    name: str
    """Short name on the command line and in the table."""
    title: str
    how: str
    """One line: what it does per event."""
    module: str
    """Module with ``serve(cfg) -> int``."""
    packages: tuple[str, ...] = ()
    """Distributions whose versions the results record."""
    model: bool = True
    """False for the echo: no decode, no features, no inference."""
    settings: dict[str, str] = msgspec.field(default_factory=dict)
    """``WEIR_*`` settings a weir contender runs with (a declared configuration of weir,
    not a diagnostic override); empty: the defaults."""

    @property
    def weir(self) -> bool:
        """A configuration of weir itself (``weir serve``), not a peer."""
        return self.module == WEIR_MODULE

    def serve(self) -> Callable[[PeerConfig], int]:
        """The contender's ``serve`` function (imported on first use)."""
        fn: Callable[[PeerConfig], int] = importlib.import_module(self.module).serve
        return fn

    def versions(self) -> dict[str, str]:
        """Installed versions of ``packages`` (``missing`` when not installed)."""
        out: dict[str, str] = {}
        for pkg in self.packages:
            try:
                out[pkg] = version(pkg)
            except PackageNotFoundError:
                out[pkg] = "missing"
        return out


WEIR_MODULE = "bench.peers.weir"

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in (
        Contender(
            name="weir",
            title="weir (deadline scheduler)",
            how="weir serve, default settings: getmany, EDF deadline batching, overload shed "
            "in weir's queue, aiokafka",
            module=WEIR_MODULE,
            packages=("weir", "aiokafka", "onnxruntime"),
        ),
        Contender(
            name="weir-e2e",
            title="weir, deadlines from the Kafka timestamp",
            how='weir serve with [scheduler] anchor = "kafka": broker and consumer lag spend '
            "the budget, and an input already past its deadline is expired without inference",
            module=WEIR_MODULE,
            packages=("weir", "aiokafka", "onnxruntime"),
            settings={"WEIR_SCHEDULER__ANCHOR": '"kafka"'},
        ),
        Contender(
            name="naive",
            title="naive aiokafka loop",
            how="async for record: decode, features, infer bucket 1, producer.send",
            module="bench.peers.naive",
            packages=("aiokafka", "onnxruntime"),
        ),
        Contender(
            name="fixed-window",
            title="fixed-window batcher (aiokafka)",
            how="batch until max_batch or max_wait after the first arrival, then infer",
            module="bench.peers.fixed_window",
            packages=("aiokafka", "onnxruntime"),
        ),
        Contender(
            name="faust",
            title="Faust agent (faust-streaming)",
            how="agent: stream.take_events(max_batch, within=max_wait), infer, topic.send",
            module="bench.peers.faust_agent",
            packages=("faust-streaming", "aiokafka", "onnxruntime"),
        ),
        Contender(
            name="quix",
            title="Quix Streams (librdkafka)",
            how="StreamingDataFrame.apply per message (infer bucket 1), to_topic",
            module="bench.peers.quix_app",
            packages=("quixstreams", "confluent-kafka", "onnxruntime"),
        ),
        Contender(
            name="echo",
            title="echo floor (no model)",
            how="replay.echo: consume, produce an ok decision, no decode or model",
            module="bench.peers.echo",
            packages=("aiokafka",),
            model=False,
        ),
    )
}
"""Every contender, in table order."""

WEIRS = {name for name, c in CONTENDERS.items() if c.weir}
"""The contenders that are weir (in any configuration); every other one is a peer."""

_VARIANT_NAME = re.compile(r"[a-z][a-z0-9-]*")


def add_weir_variant(name: str, settings: dict[str, str]) -> Contender:
    """Register another configuration of weir, ``name`` running with ``settings``
    (``WEIR_*`` variables), listed after weir's own, so that two settings of weir can be
    measured side by side in one run."""
    if not _VARIANT_NAME.fullmatch(name):
        raise ValueError(f"weir variant name {name!r}: use lower-case letters, digits and -")
    if name in CONTENDERS:
        raise ValueError(f"weir variant name {name!r} is taken by a contender")
    bad = [k for k in settings if not k.startswith("WEIR_")]
    if not settings or bad:
        raise ValueError(f"weir variant {name!r} needs WEIR_SECTION__KEY=VALUE settings")
    variant = Contender(
        name=name,
        title=f"weir, {name}",
        how="weir serve with " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
        module=WEIR_MODULE,
        packages=CONTENDERS["weir"].packages,
        settings=dict(settings),
    )
    peers = {n: CONTENDERS.pop(n) for n in list(CONTENDERS) if n not in WEIRS}
    CONTENDERS[name] = variant
    CONTENDERS.update(peers)  # the variant after weir's configurations, before the peers
    WEIRS.add(name)
    return variant


T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")
"""The event loops a contender can run on (``uvloop``: as ``weir serve`` does)."""


def run_async(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` on uvloop (``loop="uvloop"``, as ``weir serve`` does) or asyncio."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


async def until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it returns or SIGTERM/SIGINT cancels it (then return quietly)."""
    import signal

    loop = asyncio.get_running_loop()
    task = loop.create_task(work)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise
