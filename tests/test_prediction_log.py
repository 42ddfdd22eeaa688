"""The prediction log on disk and as the monitor reads it: rotation, retention, owner-only files, application ids,
a cursor that reads each line once (a rerun the same lines), torn and foreign files skipped with a warning."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from common import features
from live_monitoring import window
from serving import logged_predictions, metrics, predict_exchange
from serving.prediction_log import Call, PredictionLog, segments

ROW = {
    "person_age": 30,
    "person_income": 52000,
    "person_home_ownership": "RENT",
    "person_emp_length": float("nan"),
    "loan_intent": "EDUCATION",
    "loan_grade": "B",
    "loan_amnt": 8000,
    "loan_int_rate": 11.5,
    "loan_percent_income": 0.15,
    "cb_person_default_on_file": "N",
    "cb_person_cred_hist_length": 4,
}


def call(i: int, size: int = 1) -> Call:
    rows = [{**ROW, "person_age": 20 + i % 50} for _ in range(size)]
    ids = [f"app-{i}-{k}" for k in range(size)]
    predictions = [{"probability": 0.25, "label": 0} for _ in range(size)]
    return Call(time.time(), f"req-{i}", "credit_risk", 3, 2.5, ids, rows, predictions)


def written(folder: Path, calls: list[Call], **options) -> metrics.Registry:
    registry = metrics.Registry()
    log = PredictionLog(folder, registry, **options)
    log.start()
    for c in calls:
        log.submit(c)
    log.stop()
    return registry


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CREDIT_RISK_HOME", str(tmp_path))
    return tmp_path


def test_records_are_lines_with_the_call_and_owner_only_files(home: Path) -> None:
    folder = home / "predictions"
    registry = written(folder, [call(1, size=2)])
    (segment,) = segments(folder)
    lines = [json.loads(line) for line in segment.read_text().splitlines()]
    assert [r["application_id"] for r in lines] == ["app-1-0", "app-1-1"]
    assert lines[0]["features"]["person_emp_length"] is None  # NaN as sent: missing
    assert set(lines[0]["features"]) == set(features.FEATURE_NAMES)
    assert (lines[0]["version"], lines[0]["probability"], lines[0]["label"]) == (3, 0.25, 0)
    assert folder.stat().st_mode & 0o777 == 0o700 and segment.stat().st_mode & 0o777 == 0o600
    assert "credit_risk_prediction_log_records 2" in registry.render()


def test_an_explain_call_is_logged_with_its_reason_codes(home: Path) -> None:
    explained = call(2)
    reasons = {"attributions": [0.5] + [0.0] * 10, "reason_codes": ["R01"], "reasons": ["Age is low"]}
    explained.predictions[0].update(reasons)
    written(home / "predictions", [call(1), explained])
    (segment,) = segments(home / "predictions")
    plain, logged = (json.loads(line) for line in segment.read_text().splitlines())
    assert {k: logged[k] for k in reasons} == reasons and logged["probability"] == 0.25
    assert not set(reasons) & set(plain)


def test_a_readable_folder_and_segments_left_behind_are_made_owner_only(home: Path) -> None:
    """What an older version (or a copy made under another umask) left readable, the gateway tightens at start."""
    folder = home / "predictions"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    old = folder / "predictions-20200101T000000000000Z-1.jsonl"
    old.write_text(call(0).lines())
    old.chmod(0o644)
    written(folder, [call(1)])
    assert folder.stat().st_mode & 0o777 == 0o700
    assert [p.stat().st_mode & 0o777 for p in segments(folder)] == [0o600, 0o600]


def test_segments_rotate_and_old_ones_expire(home: Path) -> None:
    folder = home / "predictions"
    folder.mkdir()
    old = folder / "predictions-20200101T000000000000Z-1.jsonl"
    old.write_text(call(0).lines())
    month_ago = time.time() - 31 * 86400
    os.utime(old, (month_ago, month_ago))
    size = len(call(0).lines().encode())
    written(folder, [call(i) for i in range(30)], rotate_bytes=5 * size, retention_days=30)
    kept = segments(folder)
    assert old not in kept
    lines = [line for path in kept for line in path.read_text().splitlines()]
    assert len(lines) == 30
    assert len(kept) >= 2 and all(p.stat().st_size < 5 * size + 30 * size for p in kept)


def test_a_full_queue_drops_and_counts(home: Path) -> None:
    registry = written(home / "predictions", [call(i, size=3) for i in range(4)], capacity=7)
    text = registry.render()
    assert 'credit_risk_prediction_log_dropped{reason="queue_full"} 6' in text
    assert "credit_risk_prediction_log_records 6" in text


def test_sampling_logs_the_configured_share_of_calls(home: Path) -> None:
    """CREDIT_RISK_PREDICTION_LOG_SAMPLE: the gateway asks `sampled()` once per call (ids are echoed either way)."""
    registry = metrics.Registry()
    shares = {}
    for sample in (0.0, 0.3, 1.0):
        log = PredictionLog(home / "predictions", registry, sample=sample)
        shares[sample] = sum(log.sampled() for _ in range(20_000)) / 20_000
    assert shares[0.0] == 0.0 and shares[1.0] == 1.0
    assert abs(shares[0.3] - 0.3) < 0.02  # 6 standard deviations of 20,000 draws


def test_application_ids_are_stripped_echoed_or_generated() -> None:
    body = json.dumps({"instances": [{**ROW, "application_id": "A-1"}, dict(ROW)]}).encode()
    exchange = predict_exchange.parse("/v1/models/credit_risk/versions/7:predict", body)
    assert exchange is not None and exchange.version == 7
    assert "application_id" not in json.loads(exchange.body)["instances"][0]
    assert exchange.ids == ["A-1", f"{exchange.request_id}-1"]
    answer, predictions = exchange.answer(
        b'{"predictions": [{"probability": 0.9, "label": 1}, {"probability": 0.1, "label": 0}]}'
    )
    assert [p["application_id"] for p in json.loads(answer)["predictions"]] == exchange.ids
    assert [p["probability"] for p in predictions] == [0.9, 0.1]
    columnar = predict_exchange.parse(
        "/v1/models/credit_risk:predict",
        json.dumps({"inputs": {"person_age": [30, 40], "application_id": ["x", "y"]}}).encode(),
    )
    assert (
        columnar is not None
        and columnar.ids == ["x", "y"]
        and columnar.instances == [{"person_age": 30}, {"person_age": 40}]
    )
    echoed, rows = columnar.answer(b'{"outputs": {"probability": [0.2, 0.3], "label": [0, 0]}}')
    assert json.loads(echoed)["outputs"]["application_id"] == ["x", "y"] and rows[1] == {"probability": 0.3, "label": 0}
    unchanged = json.dumps({"instances": [ROW]}).encode()
    assert predict_exchange.parse("/v1/models/credit_risk:predict", unchanged).body == unchanged
    for path, raw in [("/v1/models/credit_risk", unchanged), ("/v1/models/credit_risk:predict", b"not json")]:
        assert predict_exchange.parse(path, raw) is None


def test_the_cursor_reads_each_line_once_and_a_rerun_the_same_lines(home: Path) -> None:
    folder = home / "predictions"
    written(folder, [call(i) for i in range(5)])
    first, _ = logged_predictions.read(window.claim("run-1"))
    again, _ = logged_predictions.read(window.claim("run-1"))
    assert list(first["request_id"]) == list(again["request_id"]) == [f"req-{i}" for i in range(5)]
    assert first["person_age"].tolist() == [20.0, 21.0, 22.0, 23.0, 24.0]
    nothing, _ = logged_predictions.read(window.claim("run-2"))
    assert nothing.empty
    written(folder, [call(i) for i in range(5, 8)])
    later, _ = logged_predictions.read(window.claim("run-3"))
    assert list(later["request_id"]) == ["req-5", "req-6", "req-7"]


def test_torn_and_foreign_files_are_skipped_with_a_warning(home: Path) -> None:
    folder = home / "predictions"
    written(folder, [call(i) for i in range(4)])
    (segment,) = segments(folder)
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 40])  # a kill -9 in the middle of the last line
    (folder / "notes.txt").write_text("not a segment")
    (folder / "predictions-20990101T000000000000Z-9.jsonl").write_bytes(b'\x00garbage\n{"a": 1}\n')
    frame, warnings = logged_predictions.read(window.claim("run-1"))
    assert list(frame["request_id"]) == ["req-0", "req-1", "req-2"]
    assert any("notes.txt" in w for w in warnings)
    assert any("torn" in w and segment.name in w for w in warnings)
    assert any("2 line(s) that are not prediction records" in w for w in warnings)
