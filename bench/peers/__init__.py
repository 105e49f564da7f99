"""Side-by-side benchmark: weir against the systems users would pick instead.

Contenders (``bench.peers.base.CONTENDERS``), each a module with ``serve(cfg)``, each run
alone in a child process with one worker, all consuming the same kind of input topic and
publishing one JSON ``Decision`` per input with the same ONNX student (the default bundle),
the same feature code (``schemas.features``) and the same budget:

- ``weir``: ``service.runtime.Runtime``, default settings (deadline scheduler);
- ``naive``: an aiokafka loop, one record -> one inference (bucket 1) -> one send;
- ``fixed-window``: an aiokafka loop batching to ``max_batch`` or ``max_wait_ms`` after the
  first arrival (Triton / MLServer dynamic batching);
- ``faust``: a faust-streaming agent batching with ``stream.take_events(max, within=...)``;
- ``quix``: a Quix Streams (librdkafka) ``StreamingDataFrame.apply`` per message;
- ``echo``: ``replay.echo`` (consume -> produce, no model): the floor.

The harness (``bench.peers.harness``) drives them with ``replay.runner`` through one
Apache Kafka: a recorded feed at 1x and 10x, then the throughput-latency curve, each
fixed rate repeated and interleaved across contenders and judged on the median of its
repeats (``bench.peers.verdict``), then the scheduling-policy scenarios
(``bench.peers.scenarios``: overload at 1.5x / 3x each one's capacity, two input topics
with different budgets, a costlier model, weir with N workers on N partitions);
``bench.peers.report`` writes JSON, markdown tables (``bench.peers.tables``) and a plot::

    python -m bench.peers --out build/peers [--repeats 3] [--contenders weir,naive,...]

Benchmarks print figures and assert nothing (CONVENTIONS.md, Tests).
"""

from bench.peers.base import CONTENDERS, Contender
from bench.peers.config import PeerConfig
from bench.peers.model import PeerModel, Pending
from bench.peers.results import (
    BenchResult,
    ClassFigures,
    ContenderRun,
    CurvePoint,
    Scenario,
    Trial,
)

__all__ = [
    "CONTENDERS",
    "BenchResult",
    "ClassFigures",
    "Contender",
    "ContenderRun",
    "CurvePoint",
    "PeerConfig",
    "PeerModel",
    "Pending",
    "Scenario",
    "Trial",
]
