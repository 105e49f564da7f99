"""What one contender process is told: broker, topics, group, model and batching knobs.

The harness writes a ``PeerConfig`` as JSON on the child's stdin (``bench.peers.worker``);
every contender reads the same one, so they all see the same broker, topics, bundle,
bucket sizes and SLO budget. ``weir_settings`` turns it into weir ``Settings`` (defaults
plus the broker, topics and group; the ops endpoint off unless ``weir_env`` turns it on,
as the harness does for a single weir worker, ``bench.peers.opsprobe``): the aiokafka
contenders take their client settings from there too, so weir, the naive loop, the
fixed-window batcher and the echo run identical consumer and producer configurations.
"""

from __future__ import annotations

import msgspec

from service.settings import Settings, load_settings


class PeerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One contender's run (see the module docstring)."""

    bootstrap: str
    input_topic: str
    decision_topic: str
    dlq_topic: str
    group_id: str
    partitions: int = 1
    bundle: str = ""
    """Model bundle directory; empty: the committed default bundle."""
    budget_ms: float = 5.0
    """The SLO budget: weir's deadline budget; the batchers' max wait is below it."""
    max_batch: int = 64
    """Largest batch (and bucket) of every batching contender (weir's default)."""
    max_wait_ms: float = 1.0
    """Fixed-window and Faust ``take``: wait at most this long after the first arrival."""
    loop: str = "uvloop"
    """Event loop of the aiokafka contenders: ``uvloop`` (as ``weir serve``) or ``asyncio``."""
    log_level: str = "warning"
    workdir: str = ""
    """A scratch directory for contenders that keep files (Faust data, Quix state)."""
    weir_env: dict[str, str] = msgspec.field(default_factory=dict)
    """Extra ``WEIR_*`` settings for a weir contender only: its declared configuration
    (``Contender.settings``) and any diagnostic overrides; empty: the defaults."""
    warmup_iters: int = 200
    extra_input_topics: list[str] = msgspec.field(default_factory=list)
    """More input topics, consumed with ``input_topic`` (the mixed-deadline scenario)."""
    topic_budget_ms: dict[str, float] = msgspec.field(default_factory=dict)
    """Per-topic SLO budgets: weir's ``scheduler.topic_budget_ms``; the peers have no such
    knob (they batch the same way whatever the topic), which is what the scenario tests."""

    @property
    def input_topics(self) -> list[str]:
        """Every topic a contender consumes."""
        return [self.input_topic, *self.extra_input_topics]


def weir_settings(cfg: PeerConfig) -> Settings:
    """weir's default settings with this run's broker, topics, group and budget."""
    env = {
        "WEIR_KAFKA__BOOTSTRAP_SERVERS": _q(cfg.bootstrap),
        "WEIR_KAFKA__INPUT_TOPICS": msgspec.json.encode(cfg.input_topics).decode(),
        "WEIR_KAFKA__DECISION_TOPIC": _q(cfg.decision_topic),
        "WEIR_KAFKA__DLQ_TOPIC": _q(cfg.dlq_topic),
        "WEIR_KAFKA__GROUP_ID": _q(cfg.group_id),
        "WEIR_SCHEDULER__BUDGET_MS": repr(float(cfg.budget_ms)),
        "WEIR_SCHEDULER__FIXED_WINDOW_WAIT_MS": repr(float(cfg.max_wait_ms)),
        "WEIR_ENGINE__MAX_BATCH": str(cfg.max_batch),
        "WEIR_ENGINE__WARMUP_ITERS": str(cfg.warmup_iters),
        "WEIR_HTTP__ENABLED": "false",
        "WEIR_LOG__LEVEL": _q(cfg.log_level),
    }
    if cfg.topic_budget_ms:
        env["WEIR_SCHEDULER__TOPIC_BUDGET_MS"] = (
            "{" + ", ".join(f"{_q(t)} = {float(b)!r}" for t, b in cfg.topic_budget_ms.items()) + "}"
        )
    if cfg.bundle:
        env["WEIR_ENGINE__BUNDLE"] = _q(cfg.bundle)
    env.update(cfg.weir_env)
    return load_settings(None, env=env)


def _q(text: str) -> str:
    # Settings variables are parsed as TOML: a quoted string stays a string ("123" too).
    return msgspec.json.encode(text).decode()
