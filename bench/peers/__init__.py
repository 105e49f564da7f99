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
Apache Kafka: a recorded feed at 1x and 10x, then a fixed-rate ramp for each one's
maximum sustainable rate; ``bench.peers.report`` writes JSON, a markdown table and a plot::

    python -m bench.peers --out build/peers [--repeats 3] [--contenders weir,naive,...]

Benchmarks print figures and assert nothing (CONVENTIONS.md, Tests).
"""

from bench.peers.base import CONTENDERS, Contender
from bench.peers.config import PeerConfig
from bench.peers.model import PeerModel, Pending
from bench.peers.results import BenchResult, ContenderRun, Trial

__all__ = [
    "CONTENDERS",
    "BenchResult",
    "Contender",
    "ContenderRun",
    "PeerConfig",
    "PeerModel",
    "Pending",
    "Trial",
]
