"""Reason codes: exact baseline Shapley values inside the SavedModel, on real rows, in process and over REST."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf

from common import features
from data.fetch import SHARED_DATASET as REAL_CSV
from serving import client, process
from tfx_modules.evaluation import explain, saved_model

REAL_ROWS = 40


def test_the_shapley_matrix_gives_each_feature_its_exact_share() -> None:
    """On a value function with a known answer: a linear part (each feature its own term) plus a pure interaction
    of features 0 and 1 (split evenly between them), and the attributions add up to v(all) - v(none)."""
    n = 5
    masks = explain.coalitions(n).astype(float)
    weights = np.array([0.5, -1.0, 2.0, 0.0, 3.0])
    values = masks @ weights + 4.0 * masks[:, 0] * masks[:, 1]
    attributions = values @ explain.shapley_matrix(n)
    np.testing.assert_allclose(attributions, weights + np.array([2.0, 2.0, 0, 0, 0]), atol=1e-12)
    assert attributions.sum() == pytest.approx(values[-1] - values[0])
    assert masks[0].sum() == 0 and masks[-1].sum() == n


def _toy_logit(inputs: dict[str, tf.Tensor]) -> tf.Tensor:
    """A known model: linear in age, income and rent, plus an interaction of grade D and a missing interest rate."""
    rate_missing = tf.cast(tf.math.is_nan(inputs["loan_int_rate"]), tf.float32)
    grade_d = tf.cast(tf.equal(inputs["loan_grade"], "D"), tf.float32)
    rent = tf.cast(tf.equal(inputs["person_home_ownership"], "RENT"), tf.float32)
    return -0.05 * inputs["person_age"] + 1e-5 * inputs["person_income"] + 0.7 * rent + 2.0 * grade_d * rate_missing


def test_the_explainer_gives_exact_shapley_values_and_reasons_for_a_known_model() -> None:
    explain_fn = tf.function(explain.explainer(_toy_logit, features.FEATURE_NAMES), autograph=False)
    rows = [
        {
            **features.BASELINE,
            "person_age": 20,
            "loan_grade": "D",
            "loan_int_rate": None,
            "person_home_ownership": "RENT",
        },
        {**features.BASELINE, "person_income": 20_000},
        dict(features.BASELINE),
    ]
    out = {k: v.numpy() for k, v in explain_fn(columns(rows)).items()}
    index = {name: i for i, name in enumerate(features.FEATURE_NAMES)}
    first, second, third = out[explain.ATTRIBUTIONS]
    assert first[index["person_age"]] == pytest.approx(0.3)
    assert first[index["person_home_ownership"]] == pytest.approx(0.7)
    assert first[index["loan_grade"]] == pytest.approx(1.0) and first[index["loan_int_rate"]] == pytest.approx(1.0)
    assert (first[[index[n] for n in ("person_income", "loan_amnt", "loan_intent")]] == 0).all()
    assert (
        second[index["person_income"]] == pytest.approx(-0.4) and (np.delete(second, index["person_income"]) == 0).all()
    )
    assert (third == 0).all()
    np.testing.assert_allclose(
        out[explain.ATTRIBUTIONS].sum(axis=1), out[explain.LOGIT] - out[explain.BASELINE_LOGIT], atol=1e-5
    )
    codes = out[explain.REASON_CODES].astype(str).tolist()
    assert codes[0][:2] == ["GRADE", "RATE_MISSING"] or codes[0][:2] == ["RATE_MISSING", "GRADE"]
    assert codes[0][2:] == ["HOME", "AGE_LOW"]
    assert out[explain.REASONS][0].astype(str).tolist()[2] == "Home ownership status (RENT)"
    assert codes[1] == codes[2] == [""] * features.REASON_COUNT  # nothing pushes towards default


def test_the_baseline_and_reasons_cover_every_feature_with_valid_values() -> None:
    for feature in features.FEATURES:
        value, reason = features.BASELINE[feature.name], features.REASONS[feature.name]
        if feature.categorical:
            assert value in feature.vocabulary and reason.high
        else:
            assert feature.valid[0] <= value <= feature.valid[1] and reason.high and reason.low
        if feature.optional:
            assert reason.missing
    assert len({r.code for r in features.REASONS.values()}) == len(features.FEATURES)


def real_rows(n: int, seed: int = 3) -> list[dict]:
    """`n` real applications, half of them with a missing optional value where the data has such rows."""
    rows = client.read_rows(REAL_CSV)
    rng = np.random.default_rng(seed)
    missing = [r for r in rows if any(r[name] is None for name in features.OPTIONAL)]
    complete = [r for r in rows if all(r[name] is not None for name in features.OPTIONAL)]
    picked = [missing[i] for i in rng.choice(len(missing), n // 2, replace=False)]
    return picked + [complete[i] for i in rng.choice(len(complete), n - n // 2, replace=False)]


def columns(rows: list[dict]) -> dict[str, tf.Tensor]:
    return {
        f.name: tf.constant([r[f.name] for r in rows])
        if f.categorical
        else tf.constant([math.nan if r[f.name] is None else r[f.name] for r in rows], tf.float32)
        for f in features.FEATURES
    }


def logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p) - np.log1p(-p)


@pytest.fixture(scope="module")
def signatures(trained_model: Path):
    return saved_model.load(process.saved_model_dir(trained_model)).signatures


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return real_rows(REAL_ROWS)


@pytest.mark.slow
def test_attributions_add_up_and_are_deterministic_on_real_rows(signatures, rows: list[dict]) -> None:
    explained = [
        {k: v.numpy() for k, v in signatures["explain"](**columns(chunk)).items()} for chunk in (rows[:20], rows[20:])
    ]
    out = {k: np.concatenate([e[k] for e in explained]) for k in explained[0]}
    again = {k: v.numpy() for k, v in signatures["explain"](**columns(rows[:20])).items()}
    for name, value in again.items():
        np.testing.assert_array_equal(value, explained[0][name], err_msg=name)  # identical input, identical answer
    attributions = out[explain.ATTRIBUTIONS]
    assert attributions.shape == (len(rows), len(features.FEATURES))
    gap = attributions.sum(axis=1) - (out[explain.LOGIT] - out[explain.BASELINE_LOGIT])
    assert np.abs(gap).max() < 1e-3
    # The logits are those of the served probability (where float32 can tell them apart from 0 and 1).
    scored = signatures["serving_default"](**columns(rows))["probability"].numpy()
    np.testing.assert_allclose(out["probability"], scored, atol=1e-5)
    usable = (scored > 1e-4) & (scored < 1 - 1e-4)
    assert usable.sum() > len(rows) // 2
    np.testing.assert_allclose(logit(scored[usable]), out[explain.LOGIT][usable], atol=1e-3)
    baseline = signatures["serving_default"](**columns([features.BASELINE]))["probability"].numpy()
    np.testing.assert_allclose(out[explain.BASELINE_LOGIT], logit(baseline)[0], atol=1e-3)


@pytest.mark.slow
def test_a_feature_at_its_baseline_value_gets_zero(signatures, rows: list[dict]) -> None:
    at_baseline = ("person_home_ownership", "loan_grade", "loan_int_rate", "cb_person_cred_hist_length")
    changed = [{**row, **{name: features.BASELINE[name] for name in at_baseline}} for row in rows[:10]]
    out = signatures["explain"](**columns(changed))
    attributions = out[explain.ATTRIBUTIONS].numpy()
    for name in at_baseline:
        assert (attributions[:, features.FEATURE_NAMES.index(name)] == 0).all(), name
    whole = signatures["explain"](**columns([features.BASELINE]))
    assert (whole[explain.ATTRIBUTIONS].numpy() == 0).all()
    assert whole[explain.LOGIT].numpy()[0] == pytest.approx(whole[explain.BASELINE_LOGIT].numpy()[0], abs=1e-9)
    assert (whole[explain.REASON_CODES].numpy() == b"").all()


@pytest.mark.slow
def test_reasons_are_the_features_pushing_hardest_towards_default(signatures, rows: list[dict]) -> None:
    out = {k: v.numpy() for k, v in signatures["explain"](**columns(rows[:20])).items()}
    for row, attributions, codes, sentences in zip(
        rows, out[explain.ATTRIBUTIONS], out[explain.REASON_CODES], out[explain.REASONS], strict=False
    ):
        order = [i for i in np.argsort(-attributions, kind="stable") if attributions[i] > 0][: features.REASON_COUNT]
        assert len(codes) == features.REASON_COUNT
        expected = []
        for i in order:
            name = features.FEATURE_NAMES[i]
            reason, value = features.REASONS[name], row[name]
            if features.BY_NAME[name].categorical:
                expected.append((reason.code, reason.high.replace("{value}", value)))
            elif value is None:
                expected.append((f"{reason.code}_MISSING", reason.missing))
            elif value >= features.BASELINE[name]:
                expected.append((f"{reason.code}_HIGH", reason.high))
            else:
                expected.append((f"{reason.code}_LOW", reason.low))
        expected += [("", "")] * (features.REASON_COUNT - len(expected))
        assert [(c.decode(), s.decode()) for c, s in zip(codes, sentences, strict=True)] == expected


@pytest.fixture(scope="module")
def urls(trained_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """The TF Serving stand-in serving the trained model, and the gateway in front of it."""
    served = tmp_path_factory.mktemp("served")
    shutil.copytree(process.saved_model_dir(trained_model), served / "1")
    with process.local_server(served) as server, process.local_gateway(server) as gateway:
        yield server, gateway


def post(url: str, body: object) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body)
    return httpx.post(f"{url}/v1/models/credit_risk:predict", content=content, timeout=60)


@pytest.mark.slow
def test_explain_over_rest_equals_the_in_process_call_with_nulls(urls, signatures, rows: list[dict]) -> None:
    sent = rows[:3]
    direct = {k: v.numpy() for k, v in signatures["explain"](**columns(sent)).items()}
    for url in urls:
        answer = post(url, {"signature_name": "explain", "instances": sent})  # None = JSON null in optional fields
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert set(predictions[0]) == {
            "probability",
            "label",
            explain.LOGIT,
            explain.BASELINE_LOGIT,
            explain.ATTRIBUTIONS,
            explain.REASON_CODES,
            explain.REASONS,
        }
        np.testing.assert_allclose([p[explain.ATTRIBUTIONS] for p in predictions], direct[explain.ATTRIBUTIONS])
        assert [p[explain.REASONS] for p in predictions] == direct[explain.REASONS].astype(str).tolist()
        plain = post(url, {"instances": sent}).json()["predictions"]
        assert [p["probability"] for p in plain] == pytest.approx([p["probability"] for p in predictions], abs=1e-5)


def _bad_explain_requests() -> list[tuple[str, object]]:
    row = client.example_row()
    return [
        ("null numeric required", {"signature_name": "explain", "instances": [{**row, "person_income": None}]}),
        ("null category", {"signature_name": "explain", "instances": [{**row, "loan_grade": None}]}),
        ("wrong type", {"signature_name": "explain", "instances": [{**row, "person_age": "abc"}]}),
        ("missing feature", {"signature_name": "explain", "instances": [{"person_age": 30}]}),
        ("malformed json", b'{"signature_name": "explain", "instances": ['),
        ("too many instances", {"signature_name": "explain", "instances": [row] * (explain.MAX_INSTANCES + 1)}),
        ("signature name not a string", {"signature_name": 3, "instances": [row]}),
        ("the tf.Example signature", {"signature_name": "serving_examples", "instances": [row]}),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "body"), _bad_explain_requests(), ids=[c[0] for c in _bad_explain_requests()])
def test_bad_explain_input_gets_a_400_with_a_message(urls, case: str, body: object) -> None:
    for url in urls:
        answer = post(url, body)
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"error"} and answer.json()["error"]
        if case == "too many instances":
            assert f"at most {explain.MAX_INSTANCES} instances" in answer.json()["error"]


def test_without_person_age_the_model_and_its_explanations_leave_it_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from tfx_modules.model import AGE, model_inputs

    monkeypatch.setenv("CREDIT_RISK_USE_AGE", "off")
    names = model_inputs()
    assert AGE not in names and len(names) == len(features.FEATURES) - 1
    explain_fn = tf.function(explain.explainer(_toy_logit, names), autograph=False)
    row = {**features.BASELINE, AGE: 20, "person_home_ownership": "RENT"}
    attributions = explain_fn(columns([row]))[explain.ATTRIBUTIONS].numpy()[0]
    assert attributions.shape == (len(features.FEATURES),)
    assert attributions[features.FEATURE_NAMES.index(AGE)] == 0  # the model's own age effect is not attributed
    assert attributions.sum() == pytest.approx(0.7)  # rent alone, among the features the model uses
