"""Settings: TOML plus environment, validated, secrets never shown."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from service.cli import main
from service.errors import ConfigError
from service.settings import DeliveryMode, Secret, Settings, defaults_toml, load_settings


def test_defaults_without_file() -> None:
    """No file and no variables give the documented defaults."""
    assert load_settings(env={}) == Settings()


def test_file_then_environment(tmp_path: Path) -> None:
    """The environment overrides the file, which overrides the defaults."""
    f = tmp_path / "weir.toml"
    f.write_text('[engine]\nthreads = 2\nmax_batch = 32\n[delivery]\nmode = "exactly_once"\n')
    s = load_settings(
        f,
        env={
            "WEIR_ENGINE__THREADS": "1",
            "WEIR_KAFKA__INPUT_TOPICS": '["a", "b"]',
            "WEIR_SCHEDULER__TOPIC_BUDGET_MS": "{ a = 2.5 }",
            "WEIR_CACHE": "/not/a/setting",
        },
    )
    assert s.engine.threads == 1 and s.engine.max_batch == 32
    assert s.delivery.mode is DeliveryMode.EXACTLY_ONCE
    assert s.kafka.input_topics == ["a", "b"]
    assert s.budget_ns("a") == 2_500_000 and s.budget_ns("b") == 5_000_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nthreads = 0\n", "Expected `int` >= 1 - at `$.engine.threads`"),
        ("[engine]\nthraeds = 2\n", "Object contains unknown field `thraeds` - at `$.engine`"),
        ('[delivery]\nmode = "twice"\n', "Invalid enum value 'twice' - at `$.delivery.mode`"),
    ],
)
def test_bad_values_named(tmp_path: Path, text: str, message: str) -> None:
    """A bad value names the field and the file it came from."""
    f = tmp_path / "weir.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(f, env={})
    assert str(info.value) == f"bad settings from {f}: {message}"


def test_bad_environment_named() -> None:
    """A bad variable is named as the source."""
    with pytest.raises(ConfigError) as info:
        load_settings(env={"WEIR_ENGINE__THREADS": "many"})
    assert str(info.value) == (
        "bad settings from defaults + environment (WEIR_ENGINE__THREADS): "
        "Expected `int`, got `str` - at `$.engine.threads`"
    )


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    """Unreadable files are named with the reason."""
    f = tmp_path / "x.toml"
    f.write_text("[engine\n")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_settings(f, env={})
    with pytest.raises(ConfigError, match=r"cannot read settings file .*nope.toml: No such file"):
        load_settings(tmp_path / "nope.toml", env={})


def test_secrets_never_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """A SASL password is usable but prints, encodes and shows as ***."""
    s = load_settings(env={"WEIR_KAFKA__SASL_PASSWORD": "hunter2"})
    assert isinstance(s.kafka.sasl_password, Secret)
    assert s.kafka.sasl_password.reveal() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.redacted())
    assert s.redacted()["kafka"]["sasl_password"] == "***"


def test_config_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`weir config check` accepts good files, refuses bad ones, and `show` hides secrets."""
    monkeypatch.setenv("WEIR_KAFKA__SASL_PASSWORD", "hunter2")
    good = tmp_path / "good.toml"
    good.write_text("[engine]\nthreads = 2\n")
    assert main(["config", "check", str(good)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine]\nthreads = -1\n")
    assert main(["config", "check", str(bad)]) == 2
    assert main(["config", "show", str(good)]) == 0
    out = capsys.readouterr()
    assert "settings OK" in out.out and '"threads": 2' in out.out
    assert "hunter2" not in out.out + out.err
    assert "Expected `int` >= 1 - at `$.engine.threads`" in out.err


def test_defaults_listing_is_valid_toml() -> None:
    """Every knob is listed with its variable, and the listing loads back as the defaults."""
    text = defaults_toml()
    assert "WEIR_SCHEDULER__BUDGET_MS" in text and "WEIR_WORKERS" in text
    data = tomllib.loads(text)
    assert load_settings(env={}) == Settings()
    assert data["engine"]["max_batch"] == Settings().engine.max_batch


def test_repeated_library_logs_are_rate_limited() -> None:
    """The same stdlib log template passes once per interval, then reports how many it dropped."""
    import logging

    from service.logs import RepeatFilter

    now = [0.0]
    f = RepeatFilter(interval_s=5.0, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, msg, None, None)

    assert f.filter(rec("Unable connect to %s"))
    assert not any(f.filter(rec("Unable connect to %s")) for _ in range(1000))
    assert f.filter(rec("another message"))
    now[0] = 6.0
    r = rec("Unable connect to %s")
    assert f.filter(r)
    assert r.msg == "Unable connect to %s [1000 like this dropped in 5 s]"


def test_producer_batch_size_reaches_the_producer_and_is_bounded_by_the_request() -> None:
    """``[kafka] max_batch_bytes`` becomes aiokafka's ``max_batch_size``; one larger than
    ``max_request_bytes`` (a full batch could never go) is refused, naming both values."""
    from service.kafka import producer_kwargs

    s = load_settings(env={"WEIR_KAFKA__MAX_BATCH_BYTES": "262144"})
    assert producer_kwargs(s.kafka)["max_batch_size"] == 262_144
    assert producer_kwargs(Settings().kafka)["max_batch_size"] == Settings().kafka.max_batch_bytes
    s = load_settings(
        env={"WEIR_KAFKA__MAX_BATCH_BYTES": "70000", "WEIR_KAFKA__MAX_REQUEST_BYTES": "65536"}
    )
    with pytest.raises(ConfigError) as err:
        producer_kwargs(s.kafka)
    assert str(err.value) == (
        "[kafka] max_batch_bytes = 70000 exceeds max_request_bytes = 65536: "
        "a full batch could never be sent"
    )


def test_transaction_timeout_reaches_a_transactional_producer_only() -> None:
    """``[kafka] transaction_timeout_ms`` (10 s by default, not aiokafka's 60 s) is given
    to a transactional producer and to no other."""
    from service.kafka import producer_kwargs

    s = load_settings(env={"WEIR_KAFKA__TRANSACTION_TIMEOUT_MS": "7000"})
    assert producer_kwargs(s.kafka, transactional_id="t")["transaction_timeout_ms"] == 7000
    assert "transaction_timeout_ms" not in producer_kwargs(s.kafka)
    kw = producer_kwargs(Settings().kafka, transactional_id="t")
    assert kw["transaction_timeout_ms"] == 10_000


def test_a_heartbeat_interval_not_below_the_session_is_refused() -> None:
    """A heartbeat interval at or above the session timeout is refused, naming both (the
    group would expire the member between two heartbeats)."""
    with pytest.raises(ConfigError) as err:
        load_settings(
            env={
                "WEIR_KAFKA__SESSION_TIMEOUT_MS": "6000",
                "WEIR_KAFKA__HEARTBEAT_INTERVAL_MS": "6000",
            }
        )
    assert "heartbeat_interval_ms = 6000 must be below session_timeout_ms = 6000" in str(err.value)
    assert load_settings(env={"WEIR_KAFKA__HEARTBEAT_INTERVAL_MS": "9999"}).kafka.session_timeout_ms
