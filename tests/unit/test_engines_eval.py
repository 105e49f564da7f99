"""``weir model eval``: a trading bundle, its teacher and the baselines scored on a feed.

The feed is eleven quotes of one key, window 1, horizon 1, so every table row below is
worked out by hand: mids (events 0..10) 100, 100.01, 100.01, 100, 100, 100.01, 100.02,
100.02, 100.01, 100.01, 100.01 give labels (rows 0..9) BUY HOLD SELL HOLD BUY BUY HOLD
SELL HOLD HOLD with a HOLD band of 0.5 bps (a tick is ~1 bps). train_frac 0.5 cuts at
5 ms: training rows 0..3 (row 4 is purged: its label looks at event 5), test rows 5..9.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from engines.bundle import Bundle, sha256_file
from engines.cli import register
from engines.dataset import column_stats, drop_columns
from engines.errors import EngineError
from engines.evaluation import fit_imbalance_rule, score
from engines.fake import write_tiny_trading_bundle
from schemas.events import Event, Quote, SensorReading
from schemas.features import TRADING_ROW, FeatureSpec, Task
from schemas.feed import FeedWriter

T0 = 1_700_000_000_000_000_000
MIDS = (100.0, 100.01, 100.01, 100.0, 100.0, 100.01, 100.02, 100.02, 100.01, 100.01, 100.01)
# (bid_qty, ask_qty): level-1 imbalance 0.5, 0, -0.5, 0, 0, 0.6, -0.2, -0.6, 0, 0.3, 0.
QTYS = ((3, 1), (1, 1), (1, 3), (1, 1), (1, 1), (4, 1), (2, 3), (1, 4), (1, 1), (13, 7), (1, 1))
SPEC = FeatureSpec(task=Task.TRADING, window=1)
L1 = TRADING_ROW.index("l1_imbalance")


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="weir")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["model", "eval", *argv])
    code: int = args.func(args)
    return code


def _write(path: Path, events: list[tuple[Event, int]]) -> Path:
    with FeedWriter(path) as w:
        for ev, recv in events:
            w.write(ev, recv)
    return path


def _quote_feed(path: Path) -> Path:
    events: list[tuple[Event, int]] = [
        (
            Quote(symbol="AAA", bid_px=m - 0.01, bid_qty=b, ask_px=m + 0.01, ask_qty=a),
            T0 + i * 1_000_000,
        )
        for i, (m, (b, a)) in enumerate(zip(MIDS, QTYS, strict=True))
    ]
    return _write(path, events)


def _linear_onnx(l1_weights: tuple[float, float, float], bias: tuple[float, float, float]) -> bytes:
    """Logits ``l1_imbalance * l1_weights + bias`` over SPEC's 10 inputs, as ONNX bytes."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((SPEC.n_features, 3), dtype=np.float32)
    w[L1] = l1_weights
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["output"]),
        ],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", SPEC.n_features])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _bundle(
    path: Path, feed: Path, model: bytes, *, task: str = "trading", data: Any = None
) -> Path:
    dataset = {"feed": feed.name, "horizon": 1, "theta_bps": 0.5, "train_frac": 0.5}
    Bundle.write(
        path,
        models={"fp32": model},
        feature_spec=msgspec.to_builtins(SPEC),
        model_version=path.name,
        task=task,
        n_features=SPEC.n_features,
        n_outputs=3,
        labels=["SELL", "HOLD", "BUY"],
        data=data if data is not None else {"dataset": dataset, "feed_sha256": sha256_file(feed)},
    )
    return path


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    return _quote_feed(tmp_path / "quotes.parquet")


@pytest.fixture
def student(tmp_path: Path, feed: Path) -> Path:
    """SELL if l1 < -0.05, BUY if l1 > 0.05, else HOLD."""
    return _bundle(tmp_path / "student", feed, _linear_onnx((-10.0, 0.0, 10.0), (0, 0.5, 0)))


@pytest.fixture
def teacher(tmp_path: Path, feed: Path) -> Path:
    """The student's rule upside down."""
    return _bundle(tmp_path / "teacher", feed, _linear_onnx((10.0, 0.0, -10.0), (0, 0.5, 0)))


def test_table_rows_match_the_hand_computed_scores(
    feed: Path, student: Path, teacher: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On test rows 5..9 (y BUY HOLD SELL HOLD HOLD, l1 0.6 -0.2 -0.6 0 0.3) every model's
    row holds the precision/recall/F1 worked out by hand."""
    args = ["--feed", str(feed), "--train-feed", str(feed), "--rows", "test"]
    assert _run(str(student), *args, "--teacher", str(teacher)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"student (fp32) on {feed}: 5 rows (test), horizon 1, theta 0.5 bps; "
        "classes SELL 1 / HOLD 3 / BUY 1"
    )
    # Rule fit on training rows 0..3 (l1 0.5 0 -0.5 0; BUY HOLD SELL HOLD): the first
    # perfect pair is lo = 1st percentile = -0.485, hi = 0.
    assert lines[1] == (
        "imbalance rule: SELL if l1_imbalance < -0.4850, BUY if > 0.0000 "
        f"(fit on 4 training rows of {feed}, macro-F1 1.0000 there); majority: HOLD"
    )
    assert lines[3:] == [
        # pred BUY SELL SELL HOLD BUY
        "student      0.6111  0.5000 1.0000 0.6667  1.0000 0.3333 0.5000  0.5000 1.0000 0.6667"
        "  2/1/2",
        # pred SELL BUY BUY HOLD SELL
        "teacher      0.1667  0.0000 0.0000 0.0000  1.0000 0.3333 0.5000  0.0000 0.0000 0.0000"
        "  2/1/2",
        "majority     0.2500  0.0000 0.0000 0.0000  0.6000 1.0000 0.7500  0.0000 0.0000 0.0000"
        "  0/5/0",
        # pred BUY HOLD SELL HOLD BUY
        "imbalance    0.8222  1.0000 1.0000 1.0000  1.0000 0.6667 0.8000  0.5000 1.0000 0.6667"
        "  1/2/2",
        "student keeps 366.7% of the teacher's macro-F1",
        "student - imbalance rule: -0.2111 macro-F1",
    ]


def test_all_rows_and_json_output(
    feed: Path, student: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --rows every labelled row (10) is scored; --json writes the same scores."""
    out = tmp_path / "eval.json"
    args = ["--feed", str(feed), "--train-feed", str(feed), "--json", str(out)]
    assert _run(str(student), *args) == 0
    text = capsys.readouterr().out
    assert "10 rows (all)" in text
    assert "teacher" not in text
    got = json.loads(out.read_bytes())
    assert got["n_rows"] == 10
    assert got["class_counts"] == [2, 5, 3]
    assert got["majority"] == "HOLD"
    assert set(got["models"]) == {"student", "majority", "imbalance"}
    # Student on all rows: l1 0.5 0 -0.5 0 0 0.6 -0.2 -0.6 0 0.3 -> B H S H H B S S H B
    # against B H S H B B H S H H: SELL tp 2 of 3 predicted, HOLD 3 of 4, BUY 2 of 3.
    s = got["models"]["student"]["per_class"]
    assert s["SELL"] == {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    assert s["HOLD"] == {"precision": 0.75, "recall": 0.6, "f1": 2 / 3, "support": 5}
    assert s["BUY"]["recall"] == pytest.approx(2 / 3)


def test_score_counts_never_predicted_classes_as_zero() -> None:
    """A class no row is predicted as has precision 0, F1 0; macro-F1 averages the three."""
    y = np.array([0, 1, 2, 2])
    s = score(y, np.array([2, 2, 2, 2]), ["SELL", "HOLD", "BUY"])
    assert s.per_class["SELL"].precision == 0.0
    assert s.per_class["BUY"].precision == 0.5
    assert s.per_class["BUY"].f1 == pytest.approx(2 / 3)
    assert s.macro_f1 == pytest.approx(2 / 9)
    assert s.predicted == [0, 0, 4]


def test_imbalance_rule_thresholds_come_from_the_training_rows_only() -> None:
    """The rule separates its training rows perfectly where a threshold pair can."""
    q = np.array([-0.9, -0.8, 0.0, 0.1, 0.85, 0.95])
    y = np.array([0, 0, 1, 1, 2, 2])
    rule = fit_imbalance_rule(q, y, "train")
    assert rule.train_macro_f1 == 1.0
    np.testing.assert_array_equal(rule.predict(q), y)
    assert -0.8 < rule.lo <= 0.0
    assert 0.1 <= rule.hi < 0.85


def test_imbalance_rule_needs_training_rows() -> None:
    """No training rows: an error naming the feed."""
    with pytest.raises(EngineError, match=r"^feed t\.parquet: no labelled training rows"):
        fit_imbalance_rule(np.zeros(0), np.zeros(0, dtype=np.int64), "t.parquet")


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert _run(*argv) == 1
    err: str = capsys.readouterr().err
    return err.strip()


def test_missing_bundle_is_named(
    feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bundle path that does not exist: exit 1 naming it."""
    missing = tmp_path / "nope"
    err = _error(capsys, str(missing), "--feed", str(feed), "--train-feed", str(feed))
    assert err == f"weir model eval: bundle {missing}: not a directory"


def test_missing_feed_is_named(
    student: Path, feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A feed path that does not exist: exit 1 naming it."""
    missing = tmp_path / "nope.parquet"
    err = _error(capsys, str(student), "--feed", str(missing), "--train-feed", str(feed))
    assert err == f"weir model eval: feed {missing}: not found"


def test_sensor_feed_is_refused(
    student: Path, feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A feed of sensor readings is not a trading feed: exit 1 naming both."""
    sensor = _write(
        tmp_path / "sensor.parquet",
        [(SensorReading(sensor_id="s", value=1.0), T0 + i) for i in range(3)],
    )
    err = _error(capsys, str(student), "--feed", str(sensor), "--train-feed", str(feed))
    assert err == (
        f"weir model eval: feed {sensor}: holds sensor events, but bundle {student} is a "
        "trading model"
    )


def test_sensor_bundle_is_a_task_mismatch(
    feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bundle whose task is not trading: exit 1 naming its task."""
    b = _bundle(tmp_path / "sensor", feed, _linear_onnx((0, 0, 0), (0, 0, 0)), task="sensor")
    err = _error(capsys, str(b), "--feed", str(feed), "--train-feed", str(feed))
    assert (
        err == f"weir model eval: bundle {b}: task 'sensor', but eval scores trading bundles only"
    )


def test_teacher_of_another_task_is_a_mismatch(
    feed: Path, student: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A teacher bundle of another task: exit 1 naming both tasks."""
    t = _bundle(tmp_path / "t", feed, _linear_onnx((0, 0, 0), (0, 0, 0)), task="sensor")
    argv = [str(student), "--feed", str(feed), "--train-feed", str(feed), "--teacher", str(t)]
    err = _error(capsys, *argv)
    assert err == (
        f"weir model eval: teacher bundle {t}: task 'sensor' does not match bundle "
        f"{student} task 'trading'"
    )


def test_train_feed_other_than_the_bundles_is_refused(
    feed: Path, student: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thresholds are never fit on a feed the bundle was not trained on."""
    other = _write(
        tmp_path / "other.parquet",
        [(Quote(symbol="A", bid_px=1.0, bid_qty=1, ask_px=2.0, ask_qty=1), T0)],
    )
    err = _error(capsys, str(student), "--feed", str(feed), "--train-feed", str(other))
    assert err == (
        f"weir model eval: --train-feed {other}: sha256 {sha256_file(other)} is not the feed "
        f"bundle {student} was trained on (quotes.parquet, sha256 {sha256_file(feed)})"
    )


def test_bundle_without_dataset_metadata_is_refused(
    feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bundle that does not say how it labelled: exit 1, no guessing."""
    b = write_tiny_trading_bundle(tmp_path / "tiny", window=1, model_version="tiny").path
    err = _error(capsys, str(b), "--feed", str(feed), "--train-feed", str(feed))
    assert err == (
        f"weir model eval: bundle {b}: metadata.data has no dataset horizon/theta_bps "
        "(not built by weir model build); cannot label as training did"
    )


def test_unknown_precision_is_named(
    feed: Path, student: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--precision the bundle lacks: exit 1 listing what it has."""
    argv = [str(student), "--feed", str(feed), "--train-feed", str(feed), "--precision", "int8"]
    err = _error(capsys, *argv)
    assert err == f"weir model eval: bundle {student}: no int8 model (has fp32)"


def test_drop_columns_feeds_the_column_as_zero_at_every_position() -> None:
    """A dropped column gets mean 0 and infinite std at every window position, so
    ``(x - mean) / std`` is 0 whatever x; other columns keep their statistics."""
    spec = FeatureSpec(task=Task.TRADING, window=3)
    x = np.random.default_rng(0).normal(size=(50, spec.n_features)).astype(np.float32)
    mean, std = column_stats(x, spec.row_width)
    m2, s2 = drop_columns(mean, std, spec.row_names, ["spread_bps"])
    col = TRADING_ROW.index("spread_bps")
    dropped = np.arange(col, spec.n_features, spec.row_width)
    kept = np.setdiff1d(np.arange(spec.n_features), dropped)
    assert np.all(m2[dropped] == 0.0)
    assert np.all(np.isinf(s2[dropped]))
    np.testing.assert_array_equal(m2[kept], mean[kept])
    np.testing.assert_array_equal(s2[kept], std[kept])
    z = (x - m2) * (np.float32(1.0) / s2)
    assert np.all(z[:, dropped] == 0.0)


def test_drop_columns_names_unknown_columns() -> None:
    """An unknown column name raises, naming it and the known ones."""
    spec = FeatureSpec(task=Task.TRADING, window=1)
    ones = np.ones(spec.n_features, dtype=np.float32)
    with pytest.raises(EngineError) as info:
        drop_columns(ones, ones, spec.row_names, ["spread", "is_book"])
    assert str(info.value) == (
        "drop_features: unknown column(s) spread; known: " + ", ".join(TRADING_ROW)
    )


def test_a_file_that_is_not_a_feed_is_named(
    student: Path, feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a feed: exit 1 with the reader's reason, no traceback."""
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    err = _error(capsys, str(student), "--feed", str(bad), "--train-feed", str(feed))
    assert err.startswith(f"weir model eval: cannot read feed {bad}: ")


def test_bundle_with_a_bad_horizon_is_refused(
    feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dataset horizon below 1 cannot label anything: exit 1 naming it."""
    data = {"dataset": {"horizon": 0, "theta_bps": 0.5}}
    b = _bundle(tmp_path / "h0", feed, _linear_onnx((0, 0, 0), (0, 0, 0)), data=data)
    err = _error(capsys, str(b), "--feed", str(feed), "--train-feed", str(feed))
    assert err == f"weir model eval: bundle {b}: dataset horizon 0 must be >= 1"


def test_bundle_with_a_bad_feature_spec_is_refused(
    feed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A feature spec the serving code would refuse: exit 1 naming the bad value."""
    b = _bundle(tmp_path / "spec", feed, _linear_onnx((0, 0, 0), (0, 0, 0)))
    spec = {"task": "trading", "window": 0}
    (b / "feature_spec.json").write_bytes(json.dumps(spec).encode())
    meta = json.loads((b / "metadata.json").read_bytes())
    meta["files"]["feature_spec.json"]["sha256"] = sha256_file(b / "feature_spec.json")
    (b / "metadata.json").write_text(json.dumps(meta))
    err = _error(capsys, str(b), "--feed", str(feed), "--train-feed", str(feed))
    assert err == (
        f"weir model eval: bundle {b}: bad feature spec: Expected `int` >= 1 - at `$.window`"
    )
