"""The model every contender runs: the default bundle's ONNX student, weir's feature code.

``PeerModel`` is what a user of another system would hold in their process: the bundle
loaded and verified (``engines.bundle``), one ``OnnxEngine`` (single intra-op thread, the
same buckets 1..``max_batch`` weir uses), the bundle's head, and a plain dict of per-key
feature windows (``schemas.features``: one ``KeyState`` per key, created on first sight,
updated once per event with the record's Kafka timestamp as arrival time, exactly as
``service.pipeline`` does).

Call contract (one thread, one event loop): ``admit`` decodes one record and folds it into
its key's window; it returns a ``warming`` (or ``error``) ``Decision`` at once, or a
``Pending`` after copying the key's window into the caller's row. ``decide`` runs one
batch of pending rows through the engine and returns their ``ok`` decisions in order.
Decisions carry the same coordinates, statuses and stamps as weir's, so the replay
harness matches and measures them the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec
import numpy as np

from engines.base import Engine
from engines.bundle import Bundle
from engines.defaults import default_bundle_path
from engines.head import Head
from engines.registry import load_engine
from schemas.codec import decision_codec, event_codec
from schemas.decision import Decision, Stamps, Status
from schemas.errors import DecodeError, SchemaError
from schemas.features import FeatureSpec, KeyState

Clock = Callable[[], int]

DEFAULT_MAX_BATCH = 64
"""weir's ``engine.max_batch`` default: every contender gets the same buckets."""


class Pending:
    """One admitted event waiting for inference: its coordinates and stamps."""

    __slots__ = (
        "ingest_ns",
        "kafka_ns",
        "key",
        "offset",
        "partition",
        "source_ns",
        "target",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: str,
        kafka_ns: int | None,
        source_ns: int | None,
        ingest_ns: int,
        target: float = 0.0,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.kafka_ns = kafka_ns
        self.source_ns = source_ns
        self.ingest_ns = ingest_ns
        self.target = target
        """The sensor head's forecast target (the reading's z-score); 0 for trading."""


class PeerModel:
    """Engine, head, feature spec and per-key windows (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        head: Head,
        spec: FeatureSpec,
        model_version: str,
        *,
        wall: Clock = time.time_ns,
    ) -> None:
        self.engine = engine
        self.head = head
        self.spec = spec
        self.model_version = model_version
        self.states: dict[str, KeyState] = {}
        self.n_features = spec.n_features
        self._wall = wall
        self._decode = event_codec("json").decode
        self.encode: Callable[[Decision], bytes] = decision_codec("json").encode
        """The decision encoder (JSON, like weir's default ``output_encoding``)."""
        self._sensor = head.task == "sensor"
        self._targets = np.zeros(engine.max_batch, dtype=np.float64)

    @classmethod
    def load(
        cls,
        bundle: str | Path = "",
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        threads: int = 1,
        warmup_iters: int = 200,
    ) -> PeerModel:
        """The bundle (default: the committed one) on ONNX Runtime, warmed up."""
        b = Bundle.load(bundle or default_bundle_path())
        spec = msgspec.convert(b.feature_spec, FeatureSpec)
        engine = load_engine(b, "onnx", max_batch=max_batch, options={"threads": threads})
        engine.warm_up(warmup_iters)
        return cls(engine, Head.from_bundle(b), spec, b.metadata.model_version)

    def new_rows(self, n: int) -> np.ndarray:
        """A staging slab of ``n`` input rows (float32, ``n_features`` wide)."""
        return np.zeros((n, self.n_features), dtype=np.float32)

    def admit(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        timestamp_ms: int,
        row: np.ndarray,
        ingest_ns: int | None = None,
    ) -> Decision | Pending:
        """Decode and fold one record; a decision now (warming, error) or a ``Pending``."""
        ingest = self._wall() if ingest_ns is None else ingest_ns
        kafka_ns = timestamp_ms * 1_000_000 if timestamp_ms >= 0 else None
        try:
            if value is None:
                raise DecodeError("record has no value", code="empty")
            event = self._decode(value)
            key = event.key
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = self.spec.new_state()
            state.update(event, kafka_ns if kafka_ns is not None else ingest)
        except (DecodeError, SchemaError) as exc:
            return self._decision(
                topic, partition, offset, "", Status.ERROR, kafka_ns, None, ingest, error=str(exc)
            )
        if not state.ready:
            return self._decision(
                topic, partition, offset, key, Status.WARMING, kafka_ns, event.source_ts_ns, ingest
            )
        state.write_window(row)
        target = float(getattr(state, "last_z", 0.0)) if self._sensor else 0.0
        return Pending(topic, partition, offset, key, kafka_ns, event.source_ts_ns, ingest, target)

    def decide(self, pending: Sequence[Pending], rows: np.ndarray) -> list[Decision]:
        """Infer rows ``0..n-1`` of ``rows`` (one bucket) and build their ``ok`` decisions."""
        n = len(pending)
        if n == 0:
            return []
        engine = self.engine
        bucket = engine.bucket_for(n)
        buf = engine.input_buffer(bucket)
        if rows is not buf:
            buf[:n] = rows[:n]
        dispatch = self._wall()
        out = engine.infer(bucket, n)
        done = self._wall()
        targets = self._targets[:n]
        if self._sensor:
            targets[:] = [p.target for p in pending]
        labels, scores = self.head.decide(out, targets)
        names = self.head.labels
        score_rows = scores.tolist()
        label_idx = labels.tolist()
        return [
            self._decision(
                p.topic,
                p.partition,
                p.offset,
                p.key,
                Status.OK,
                p.kafka_ns,
                p.source_ns,
                p.ingest_ns,
                dispatch=dispatch,
                done=done,
                label=names[label_idx[i]],
                scores=score_rows[i],
                n=n,
            )
            for i, p in enumerate(pending)
        ]

    def _decision(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: str,
        status: Status,
        kafka_ns: int | None,
        source_ns: int | None,
        ingest: int,
        *,
        dispatch: int | None = None,
        done: int | None = None,
        label: str = "",
        scores: list[float] | None = None,
        n: int = 0,
        error: str | None = None,
    ) -> Decision:
        return Decision(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            model_version=self.model_version,
            status=status,
            label=label,
            scores=scores if scores is not None else [],
            batch_size=n,
            error=error,
            stamps=Stamps(
                source_ts_ns=source_ns,
                kafka_ts_ns=kafka_ns,
                ingest_wall_ns=ingest,
                dispatch_wall_ns=dispatch,
                infer_done_wall_ns=done,
                publish_wall_ns=self._wall(),
            ),
        )
