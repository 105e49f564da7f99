"""Settings: one frozen object, loaded once from a TOML file plus environment variables.

Precedence: defaults < TOML file < environment. A variable ``WEIR_<SECTION>__<FIELD>``
(upper case, double underscore) overrides ``[section] field``; its text is parsed as TOML
(``WEIR_ENGINE__THREADS=2``, ``WEIR_KAFKA__INPUT_TOPICS='["a","b"]'``) and falls back to a
plain string. Unknown keys in the file are errors naming the key; bad values name the field
and where they came from. Secrets (SASL password, TLS key password) are ``Secret`` values:
printed and logged as ``***``; ``reveal()`` is called only where the client needs them.

Every knob, its default and its variable are listed by ``weir config show --defaults``.
"""

from __future__ import annotations

import enum
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from service.errors import ConfigError

ENV_PREFIX = "WEIR_"


class Secret:
    """A string that never shows itself: ``repr``, ``str`` and encoders give ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret text, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class DeliveryMode(enum.StrEnum):
    """How decisions and consumed offsets are tied together."""

    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class Anchor(enum.StrEnum):
    """What a deadline counts from."""

    INGEST = "ingest"
    KAFKA = "kafka"
    SOURCE = "source"


class ExpiryPolicy(enum.StrEnum):
    """What to do with an event that cannot meet its deadline even alone."""

    PUBLISH = "publish"
    """Publish an ``expired`` decision without inference."""
    INFER_LATE = "infer_late"
    """Infer anyway and mark the decision ``late``."""


class BatchPolicy(enum.StrEnum):
    """Which batching rule runs (the baselines are for comparison)."""

    DEADLINE = "deadline"
    FIXED_WINDOW = "fixed_window"
    GREEDY = "greedy"
    PER_EVENT = "per_event"


class WarmupMode(enum.StrEnum):
    """How a key's window is filled after a partition is assigned."""

    WARMING = "warming"
    """Publish ``warming`` decisions until the window is full."""
    SEEK = "seek"
    """Seek back ``seek_back`` records per partition and rebuild windows silently."""


class InputFormat(enum.StrEnum):
    """How an input record's bytes become an event (``[schema] format``)."""

    WEIR = "weir"
    """weir's own wire types (``schemas.events``) in ``[kafka] input_encoding``."""
    STRUCT = "struct"
    """The user's ``msgspec.Struct`` (``[schema] struct``) in ``[kafka] input_encoding``."""
    FIELDS = "fields"
    """A JSON object / MessagePack map mapped onto a wire type by the field map."""
    AVRO = "avro"
    """Confluent-framed Avro through the Schema Registry, then the field map."""
    JSON_SCHEMA = "json_schema"
    """Confluent-framed JSON checked by its JSON Schema from the registry, then the field map."""


Positive = Annotated[int, msgspec.Meta(gt=0)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class KafkaSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Kafka client settings (passed through to aiokafka)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "weir"
    group_id: str = "weir"
    group_instance_id: str | None = None
    input_topics: list[str] = msgspec.field(default_factory=lambda: ["weir.events"])
    decision_topic: str = "weir.decisions"
    dlq_topic: str = "weir.dlq"
    input_encoding: str = "json"
    max_event_bytes: Positive = 1_048_576
    """Larger records go to the dead-letter topic (reason ``oversized``) undecoded."""
    output_encoding: str = "json"
    auto_offset_reset: str = "earliest"
    fetch_max_wait_ms: NonNegative = 5
    fetch_min_bytes: Positive = 1
    max_poll_records: Positive = 2000
    max_partition_fetch_bytes: Positive = 1_048_576
    session_timeout_ms: Positive = 10_000
    heartbeat_interval_ms: Positive = 3_000
    max_poll_interval_ms: Positive = 300_000
    linger_ms: NonNegative = 0
    acks: str = "all"
    enable_idempotence: bool = False
    """Idempotent producer (off by default: the embedded Tansu broker refuses InitProducerId)."""
    compression_type: str | None = None
    request_timeout_ms: Positive = 30_000
    retry_backoff_ms: Positive = 100
    max_request_bytes: Positive = 1_048_576
    """Largest produce request (aiokafka ``max_request_size``); a larger decision or dead
    letter fails, naming its size and this limit."""
    max_batch_bytes: Positive = 262_144
    """Largest record batch per partition (aiokafka ``max_batch_size``), at most
    ``max_request_bytes``. aiokafka has one produce request in flight per broker and puts
    one batch per partition in it, so this caps what a partition can publish per round
    trip. aiokafka's own 16,384 held a one-partition decision topic to about 60
    decisions per round trip: with the wide student at 10x (2,427/s) weir's decision
    publish -> broker p99 was 134-311 ms at 16,384 and 6.5-33 ms at 262,144
    (``python -m bench.peers --weir-variant``, 3 repeats, side by side)."""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: Secret | None = None
    transaction_timeout_ms: Positive = 10_000
    """Exactly-once: how long the broker lets a transaction stay open before it aborts it
    (aiokafka's default is 60,000). A worker killed mid-transaction on a host it does not
    come back to leaves one open that nothing fences, and until it ends, readers with
    ``read_committed`` see nothing past it on those partitions: this bounds that wait.
    weir's own transactions last a flush interval and a drain."""

    def __post_init__(self) -> None:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms = {self.heartbeat_interval_ms} must be below "
                f"session_timeout_ms = {self.session_timeout_ms}: the group expires a member "
                "that sends no heartbeat within its session"
            )


class SchemaSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The input's event schema: how a record's bytes become an event."""

    format: InputFormat = InputFormat.WEIR
    """``weir`` (wire types), ``struct`` (your msgspec.Struct), ``fields`` (JSON/MessagePack
    through the field map), ``avro`` or ``json_schema`` (Confluent wire format: magic byte
    and schema id; schemas from ``registry_url``, looked up once per id)."""
    struct: str = ""
    """``struct``: the event class as ``module:Class`` (a ``msgspec.Struct``); the decoded
    object reaches the feature code as it is."""
    kind: str = "sensor"
    """Field map: which wire type the fields build (``sensor``, ``quote``, ``trade``, ...)."""
    key_field: str = ""
    """Input field holding the key (needed by the field map; ``struct``: default ``key``)."""
    source_ts_field: str = ""
    """Input field holding the event's own time; empty: it has none."""
    source_ts_unit: str = "ms"
    """Unit of ``source_ts_field``: ``ns``, ``us``, ``ms`` or ``s`` (Avro timestamp
    logical types are read as they are)."""
    values: dict[str, str] = msgspec.field(default_factory=dict)
    """Field map: wire type field -> input field, e.g. ``{ value = "temperature" }``."""
    registry_url: str = ""
    """Schema Registry base URL (Confluent API: ``GET {url}/schemas/ids/{id}``), e.g.
    ``http://registry:8080/apis/ccompat/v7`` for Apicurio."""
    registry_timeout_ms: Positive = 5_000
    """Bound on one schema lookup; the first record of a schema id waits for it."""


class DeliverySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Delivery semantics and commit cadence."""

    mode: DeliveryMode = DeliveryMode.AT_LEAST_ONCE
    commit_interval_ms: Positive = 200
    commit_in_background: bool = True
    """At-least-once: the periodic commit runs beside the fetch loop (one at a time), so
    records keep being ingested during its broker round trip; off: the loop waits for it
    (every record that arrives meanwhile waits as long). Rebalance and shutdown commits
    always wait, after any commit in flight."""
    transactional_id_prefix: str = "weir"
    startup_timeout_ms: Positive = 60_000
    """How long to retry reaching the brokers at start before giving up."""
    flush_interval_ms: Positive = 20
    """Exactly-once: how often a transaction is committed."""
    max_inflight_decisions: Positive = 10_000
    """Decisions and dead letters produced but not yet acknowledged, at most. At the bound
    consumption pauses (and publishing waits) until acknowledgements bring it below."""
    max_inflight_bytes: Positive = 16_777_216
    """The same bound on their payload bytes (key, value, headers)."""


class TopicSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Missing topics: created on request, else an error (outputs) or a warning (inputs)."""

    create: bool = False
    """Create the missing input, decision and dead-letter topics at start, with
    ``partitions`` and ``replication_factor``. Off (default): a missing decision or
    dead-letter topic stops the start with an error naming it and the broker; a missing
    input topic is warned about and consumed once it exists."""
    partitions: Positive = 1
    """Partitions of each topic that ``create`` makes."""
    replication_factor: Positive = 1
    """Replication factor of each topic that ``create`` makes (at most the broker count)."""
    missing_check_ms: Positive = 500
    """While an input topic is missing, how often the consumer fetches metadata again: the
    topic is consumed within about this long of its creation (aiokafka alone would wait for
    its ``metadata_max_age_ms``, 5 minutes)."""
    missing_warn_ms: Positive = 30_000
    """How often the warning naming each input topic still missing is repeated."""


class SchedulerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Deadlines, batching and overload."""

    policy: BatchPolicy = BatchPolicy.DEADLINE
    budget_ms: PositiveFloat = 5.0
    topic_budget_ms: dict[str, PositiveFloat] = msgspec.field(default_factory=dict)
    """Budgets of topics that differ from ``budget_ms``. Such a topic is a class of its
    own: its decisions keep each key's order among themselves, but never wait behind the
    same key's events of another topic (Kafka orders nothing across topics either)."""
    anchor: Anchor = Anchor.INGEST
    skew_allowance_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    expiry: ExpiryPolicy = ExpiryPolicy.PUBLISH
    max_hold_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Deadline policy: longest an idle engine waits for a fuller batch. 0 (default)
    dispatches at once when the engine is idle; batches grow while it is busy. Measured
    best on shared or noisy hosts, where a timer wake can be milliseconds late
    (``python -m bench.scheduler``)."""
    hold_until_safe_start: bool = False
    """Ignore ``max_hold_ms`` and wait until ``deadline - p99.9(bucket) - guard``."""
    max_queue: Positive = 20_000
    """Hard bound on queued events; past it, the least urgent are shed."""
    ingest_chunk: Positive = 64
    """Records ingested between readings of the ingest time; at such a point, once ingest
    has run for the engine's largest-batch p99, the dispatcher gets a turn, so a large
    fetch does not hold back batches of what is queued."""
    pause_loose_first: bool = True
    """With ``pause_on_overload = true``: backpressure pauses the partitions of the topics
    with a looser budget than the tightest first, and every partition only past half of
    ``max_queue`` (or with the sink full); false: every partition at once
    (``service.backpressure``)."""
    pause_on_overload: bool | Literal["loose"] = "loose"
    """Which partitions the scheduler's overload pauses (above). ``"loose"`` (default): only
    those of topics whose budget is looser than the tightest assigned topic's (none with
    one budget for all); the tightest keep flowing and the scheduler's overload rule sheds, in
    weir's queue, what it cannot decide in time. False: none. True: the loose topics'
    first, and every partition when all share one budget. Every partition still pauses
    past half of ``max_queue`` or with the sink full, for memory. Events a pause holds wait
    in the broker, where no deadline orders them: with the Kafka or source time as anchor
    they age there and arrive expired, and with the ingest anchor they are decided ``ok``
    by weir's clock long after they were sent. Measured side by side (``python -m
    bench.peers --overload-base common``, 2-core host, the wide student, 12,001 events/s
    offered on one topic, 3 repeats): decisions per second in time from the send, 2,825
    [2,459-3,211] without the pause against 1,608 [1,157-1,621] with it (ingest anchor),
    and 4,989 [4,207-5,489] against 1,930 [1,620-2,046] (Kafka-timestamp anchor)."""
    turns_after_batch: Positive | Literal["auto"] = "auto"
    """Event-loop turns the dispatcher gives after each batch before the next one: each
    step of a decision's way to the broker (the sink hands its batch to the producer, the
    producer's sender takes it once the request before was answered, writes it, reads the
    answer) needs a turn, and an inline engine call holds the loop between turns. ``"auto"``:
    4 for a model whose largest bucket takes longer than ``[engine] offload_above_ms``
    (p99), 1 for a faster one, decided again for each model version. Measured side by side
    (``bench.peers``, 2-core host, medians of 3): with a wide student (batch of 64 in 9.3
    ms) at a steady 1,000 events/s the p99 was 34.6 ms [29.6-35.3] with 4 turns and 78.2 ms
    [27.4-126] with 1 (in the 10x bursty replay neither came near the fixed-window
    batcher: 188 and 208 ms against 91); with the default student, 4 turns against 1 was
    better at 10x, 2,000 and 4,000 events/s (p99 20.3, 14.4 and 17.8 ms against 28.5, 19.1
    and 21.9) but worse at 1x (29.9 against 10.4) and at 8,000 events/s (61.6 against 33.3
    ms, which failed the 50 ms SLO), so the default student keeps 1."""
    fixed_window_wait_ms: PositiveFloat = 1.0
    """Baseline ``fixed_window``: max wait from the first arrival."""


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The compiled model."""

    bundle: str = ""
    """Bundle directory; empty means the committed default bundle."""
    kind: str = "onnx"
    threads: Positive = 1
    max_batch: Positive = 64
    warmup_iters: Positive = 200
    offload: bool | Literal["auto"] = False
    """Run ``infer`` in a worker thread instead of on the event loop: ``false`` (default),
    ``true``, or ``"auto"``: the thread when the model's largest bucket takes longer than
    ``offload_above_ms`` (p99 of its measured profile), decided again for each model
    version installed. Measured side by side with a wide student (batch of 64 in 9.3 ms,
    ``bench.peers``, 2-core host, medians of 3): the thread cut the 10x bursty replay's
    p99 (106 ms [81-131] against 188 [182-257] inline) but raised the p50 at a steady
    1,000 events/s (27.2 ms [21.9-58.1] against 10.7 [10.1-11.3]), where only inline kept
    the 50 ms SLO in all 3 repeats: the engine thread and the loop contend for the GIL and
    the cores."""
    offload_above_ms: Annotated[float, msgspec.Meta(ge=0.0)] = 1.0
    """``offload = "auto"`` moves ``infer`` to a thread above this p99 of the largest bucket
    (the default student's batch of 64 took 0.07 ms on average here)."""
    alert_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    """Override the package's anomaly threshold (a log-likelihood); unset: the package's."""


class StateSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-key feature windows."""

    max_keys: Positive = 100_000
    warmup: WarmupMode = WarmupMode.WARMING
    seek_back: NonNegative = 0


class ShutdownSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Bounds on draining."""

    drain_timeout_ms: Positive = 5_000
    revoke_timeout_ms: Positive = 2_000


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The metrics / health endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: NonNegative = 9464


class ModelControlSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Live model swap and shadow (docs/model-packages.md, "Live swap and shadow")."""

    admin: bool = False
    """Serve ``POST /admin/model`` on the ``[http]`` server, to loopback peers only (loading
    a package imports its feature code): off by default."""
    watch_dir: str = ""
    """A directory polled for package directories: the newest (by ``metadata.json`` time)
    is loaded and swapped in; empty: off."""
    watch_interval_ms: Positive = 2_000
    require_parity: bool = False
    """Refuse a package without ``parity_sample.json`` (one with it is always checked)."""
    shadow: str = ""
    """Package directory of a shadow candidate run on the primary's batches; empty: off."""
    shadow_topic: str = "weir.decisions.shadow"
    shadow_queue: Positive = 4
    """Batches waiting for the shadow; a batch beyond them is dropped and counted."""


class LogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """structlog output."""

    level: str = "info"
    format: str = "json"


class TracingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """W3C trace context and OpenTelemetry spans (docs/tracing.md)."""

    enabled: bool = False
    """One OpenTelemetry span per batch, and each traced decision a child of the input's
    trace; needs the ``otel`` extra. The tracer provider is the one the process has (e.g.
    ``opentelemetry-instrument``), else one built from the ``OTEL_*`` environment variables.
    Off: a valid ``traceparent``/``tracestate`` is forwarded unchanged."""
    event_spans: bool = False
    """With ``enabled``: also a ``weir.event`` span per traced event (a child of its input's
    context, linked to the batch span), whose context its decision carries out. Off (the
    default): only the batch span, linked to each traced event; decisions forward the
    input's context unchanged. An SDK span per event costs several times a batch link
    (``python -m bench.trace``)."""


class GcSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The garbage collector and the stall probe (``service.pauses``)."""

    freeze_when_ready: bool = True
    """When the first partitions are assigned (model loaded and warmed, clients up): one
    full collection, then ``gc.freeze()``, so no later collection walks what start-up made
    (the model, the modules); off: Python's collector as it is."""
    gen0_threshold: NonNegative = 0
    """Allocations between gen-0 collections (Python's default is 700); 0 leaves it."""
    loop_lag_interval_ms: NonNegative = 10
    """The event-loop lag probe's sleep (``weir_event_loop_lag_seconds``); 0: no probe."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything weir serve reads."""

    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    topics: TopicSettings = msgspec.field(default_factory=TopicSettings)
    schema: SchemaSettings = msgspec.field(default_factory=SchemaSettings)
    scheduler: SchedulerSettings = msgspec.field(default_factory=SchedulerSettings)
    engine: EngineSettings = msgspec.field(default_factory=EngineSettings)
    state: StateSettings = msgspec.field(default_factory=StateSettings)
    shutdown: ShutdownSettings = msgspec.field(default_factory=ShutdownSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    model: ModelControlSettings = msgspec.field(default_factory=ModelControlSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)
    gc: GcSettings = msgspec.field(default_factory=GcSettings)
    workers: Positive = 1

    def budget_ns(self, topic: str) -> int:
        """The deadline budget of ``topic`` in ns (per-topic override or the default)."""
        ms = self.scheduler.topic_budget_ms.get(topic, self.scheduler.budget_ms)
        return int(ms * 1e6)

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret shown as ``***``."""
        return msgspec.to_builtins(self, enc_hook=_enc_hook)  # type: ignore[no-any-return]


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret and isinstance(obj, str):
        return Secret(obj)
    raise NotImplementedError(f"cannot read {type_!r}")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return "***"
    raise NotImplementedError(f"cannot write {type(obj)!r}")


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    tree: dict[str, Any] = {}
    names: list[str] = []
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in ("WEIR_KAFKA_BOOTSTRAP",):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if len(path) == 1 and path[0] != "workers":
            continue  # WEIR_CACHE, WEIR_FEEDS_DIR ... belong to other tools
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _env_value(text)
        names.append(name)
    return tree, names


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings from ``path`` (TOML, optional) and ``env`` (default ``os.environ``)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read settings file {p}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {p} is not valid TOML: {exc}") from exc
        source = str(p)
    overrides, names = _env_overrides(os.environ if env is None else env)
    if names:
        data = _merge(data, overrides)
        source = f"{source} + environment ({', '.join(sorted(names))})"
    try:
        return msgspec.convert(data, Settings, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"bad settings from {source}: {exc}") from exc


def defaults_toml() -> str:
    """Every knob with its default and its environment variable, as commented TOML."""
    lines = ["# weir settings: every knob with its default and its environment variable."]
    root = Settings()
    fields = msgspec.structs.fields(Settings)
    # Plain keys first: after a [table] header they would belong to that table.
    for field in fields:
        value = getattr(root, field.name)
        if not isinstance(value, msgspec.Struct):
            lines.append(f"{field.name} = {_toml(value)}  # WEIR_{field.name.upper()}")
    for field in fields:
        value = getattr(root, field.name)
        if not isinstance(value, msgspec.Struct):
            continue
        lines.append("")
        lines.append(f"[{field.name}]")
        if value.__doc__:
            lines.append(f"# {value.__doc__.strip().splitlines()[0]}")
        for sub in msgspec.structs.fields(type(value)):
            var = f"WEIR_{field.name.upper()}__{sub.name.upper()}"
            v = getattr(value, sub.name)
            if v is None:
                lines.append(f"# {sub.name} = (unset)  # {var}")
            else:
                lines.append(f"{sub.name} = {_toml(v)}  # {var}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, Secret):
        return '"***"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, dict):
        inner = ", ".join(f"{k} = {_toml(v)}" for k, v in value.items())
        return "{" + (f" {inner} " if inner else "") + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)
