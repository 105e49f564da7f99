"""Sampling a contender with py-spy, and where its CPU went.

``start`` runs ``py-spy record --format raw`` (collapsed stacks: ``frame;frame;... count``)
against a running process without pausing it (``--nonblocking``); only active samples are
kept (py-spy drops idle ones by default). ``summarize`` attributes each sample to the
category of its innermost frame that belongs to one, looking through the event loop's own
frames (so a socket write issued by aiokafka's fetcher counts as Kafka consume, msgspec
called from the pipeline as codec, numpy called from the feature code as features); a
sample with nothing but loop frames is the event loop's. It also lists the leaf functions
with the most samples.

On a CPU-starved host a runnable thread waiting for a core looks active too: the shares
then include time spent waiting for the CPU right after waking another process (the
broker), typically at a socket write.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bench.peers.results import ProfileSummary

# (category, path fragments), innermost frame first wins; order breaks ties within a frame.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("inference (ONNX Runtime)", ("onnxruntime", "engines/onnx.py", "engines/base.py")),
    ("features (schemas.features)", ("schemas/features.py", "service/state.py")),
    ("decode/encode (msgspec)", ("schemas/codec.py", "msgspec")),
    ("scheduler", ("service/scheduler/",)),
    (
        "metrics",
        (
            "service/metrics.py",
            "service/stages.py",
            "service/histogram.py",
            "service/lag.py",
            "service/live.py",
            "service/status.py",
            "service/collector.py",
            "prometheus_client",
        ),
    ),
    ("offset tracking", ("service/offsets.py",)),
    ("head (labels)", ("engines/head.py",)),
    ("pipeline / contender loop", ("service/pipeline.py", "service/runtime.py", "bench/peers/")),
    ("kafka consume (aiokafka)", ("aiokafka/consumer/",)),
    ("kafka produce (aiokafka)", ("aiokafka/producer/",)),
    ("kafka socket writes (aiokafka conn)", ("aiokafka/conn.py",)),
    ("kafka protocol (aiokafka)", ("aiokafka/",)),
    ("faust / mode", ("faust/", "mode/")),
    ("quix / confluent-kafka", ("quixstreams/", "confluent_kafka")),
    ("replay echo", ("replay/echo.py",)),
)
LOOP = "event loop"
LOOP_PARTS: tuple[str, ...] = ("asyncio/", "uvloop", "selectors.py")
ROOT_PARTS: tuple[str, ...] = (
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "uvloop/__init__.py",
    "<frozen runpy>",
)
"""Frames that run the loop itself: everything outside them is start-up code, not work."""
OTHER = "other"

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def find() -> str | None:
    """The py-spy executable (on PATH or next to this interpreter)."""
    import sys

    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def start(
    pid: int, out: Path, *, seconds: float, rate: int = 200
) -> subprocess.Popen[bytes] | None:
    """Start sampling ``pid`` for ``seconds`` into ``out`` (None when py-spy is missing)."""
    exe = find()
    if exe is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait(proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> int:
    """Wait for py-spy to finish writing."""
    return proc.wait(timeout_s)


def short_file(path: str) -> str:
    """``aiokafka/consumer/fetcher.py`` rather than the whole site-packages path."""
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/lib/python3":
                path = path.split("/", 1)[1] if "/" in path else path
            return path
    for top in ("service/", "schemas/", "engines/", "replay/", "bench/"):
        i = path.find("/" + top)
        if i >= 0:
            return path[i + 1 :]
    return path


def category(frames: list[str]) -> str:
    """The category of a stack (root first): its innermost categorized frame's, looking
    through event-loop frames and stopping at the loop's root; ``event loop`` when only
    loop frames were seen."""
    loop = False
    for frame in reversed(frames):
        m = _FRAME.match(frame)
        where = m.group("file") if m else frame
        if any(p in where for p in ROOT_PARTS):
            return LOOP
        if any(p in where for p in LOOP_PARTS):
            loop = True
            continue
        for name, parts in CATEGORIES:
            if any(p in where for p in parts):
                return name
    return LOOP if loop else OTHER


def parse(text: str) -> list[tuple[list[str], int]]:
    """Collapsed stacks: (frames root first, samples) per line."""
    out: list[tuple[list[str], int]] = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        out.append((stack.split(";"), int(count)))
    return out


def summarize(
    raw: Path, *, contender: str, rate: float, seconds: float, top: int = 15
) -> ProfileSummary:
    """Category shares and the top leaf functions of a py-spy raw file."""
    try:
        stacks = parse(raw.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        stacks = []
    total = sum(n for _, n in stacks)
    cats: dict[str, int] = {}
    leaves: dict[str, int] = {}
    for frames, n in stacks:
        c = category(frames)
        cats[c] = cats.get(c, 0) + n
        m = _FRAME.match(frames[-1])
        leaf = f"{m.group('func')} ({short_file(m.group('file'))})" if m else frames[-1]
        leaves[leaf] = leaves.get(leaf, 0) + n
    share = {k: v / total for k, v in sorted(cats.items(), key=lambda kv: -kv[1])} if total else {}
    best = sorted(leaves.items(), key=lambda kv: -kv[1])[:top]
    return ProfileSummary(
        contender=contender,
        rate=rate,
        seconds=seconds,
        samples=total,
        raw_file=raw.name,
        categories=share,
        top_self=[(k, v / total) for k, v in best] if total else [],
    )
