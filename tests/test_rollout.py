"""Rollouts through the real gateway and real model servers: a challenger fed income in another unit is rolled back
in shadow before any client sees one of its answers, one returning errors at its first canary step, one retrained on
the same data promoted, and a gateway killed with kill -9 mid-canary resumes; no client request fails in any."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.config import settings
from common.features import LABEL
from dags.metrics import monitoring as dags_metrics
from outcomes.join import champion_vs_challenger, logged
from outcomes.performance import delong, estimated
from serving import process
from serving.rollout import challenger_answers, read_state
from serving.rollout_analysis import LATENCY_ANSWERS, Limits, StageStats, breaches
from serving.rollout_controller import drift_alerts
from testing.harness import free_port, live_record, running_stack, send_statsd, wait_for
from testing.rollout_stack import CHALLENGER, Traffic, rollout_stack, train_variant
from tfx_modules.evaluation.cbpe import expected_auc


def test_the_canary_split_is_sticky_and_weighted() -> None:
    ids = [f"app-{i}" for i in range(10_000)]
    chosen = {w: {i for i in ids if challenger_answers("r1", i, w)} for w in (0, 5, 25, 100)}
    assert not chosen[0] and chosen[100] == set(ids)
    assert 400 < len(chosen[5]) < 600 and 2300 < len(chosen[25]) < 2700
    assert chosen[5] <= chosen[25]  # an applicant on the challenger stays there as the weight grows
    assert {i for i in ids if challenger_answers("r2", i, 25)} != chosen[25]  # another rollout, another draw


def test_the_score_comparison_tells_seed_noise_from_a_unit_error() -> None:
    rng = random.Random(3)
    limits = Limits.of(settings())
    champion = [min(0.99, max(0.01, rng.betavariate(1.2, 4))) for _ in range(300)]
    noisy, broken = StageStats(), StageStats()
    for p in champion:
        q = min(0.99, max(0.01, p + rng.gauss(0, 0.015)))
        noisy.paired((p, int(p >= 0.5)), (q, int(q >= 0.5)))
        broken.paired((p, int(p >= 0.5)), (p / 8, int(p / 8 >= 0.5)))
    assert breaches(noisy.numbers(), limits) == []
    found = breaches(broken.numbers(), limits)
    assert any(line.startswith("PSI of scores") for line in found), found


def test_latency_is_judged_only_on_enough_answers() -> None:
    """A slower challenger is named once both sides have LATENCY_ANSWERS answers; below that, one slow answer (a busy
    host's pause) is not a verdict."""
    limits = Limits.of(settings())

    def stage(answers: int, slow: int) -> dict:
        stats = StageStats()
        for i in range(answers):
            stats.answered("champion", 10.0, True)
            stats.answered("challenger", 120.0 if i < slow else 10.0, True)
        return stats.numbers()

    assert breaches(stage(LATENCY_ANSWERS - 1, slow=5), limits) == []
    (found,) = breaches(stage(LATENCY_ANSWERS, slow=5), limits)
    assert found == "p99 latency 120.0 ms against the champion's 10.0 ms (limit 3.0x and +50 ms)"
    assert breaches(stage(LATENCY_ANSWERS, slow=1), limits) == []  # one slow answer of 200 is below the p99


def test_the_gateways_cbpe_matches_the_monitoring_runs() -> None:
    rng = random.Random(5)
    scores = [round(rng.betavariate(1, 4), 2) for _ in range(500)]
    labels = [int(p >= 0.5) for p in scores]
    assert expected_auc(scores) == pytest.approx(estimated(scores, labels)["auc"], abs=1e-12)
    assert expected_auc([0.0, 0.0]) is None


@pytest.fixture(scope="module")
def retrained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_variant(tmp_path_factory.mktemp("retrained"))


@pytest.fixture(scope="module")
def thousands_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained with income in a unit ten times smaller (in thousands, the clip at 4,000 made income a constant the
    model ignored): blessed offline (its eval split has the same unit), skewed live."""
    return train_variant(tmp_path_factory.mktemp("thousands"), 10.0)


def _finish(controller: subprocess.Popen[str], timeout: float = 240) -> list[str]:
    """The controller's output lines once it has ended."""
    out, _ = controller.communicate(timeout=timeout)
    return out.strip().splitlines()


def _roll_out(home: Path, champion: Path, challenger: Path) -> tuple[int, list[str], Traffic]:
    """Shadow then canary (5, 25, 100 %) under steady traffic: the controller's exit code, its lines, the traffic."""
    with rollout_stack(home, champion, challenger) as stack, Traffic(stack.gateway) as traffic:
        args = ("--shadow-requests", "200", "--step-requests", "80", "--stage-seconds", "90")
        controller = stack.controller(*args)
        lines = _finish(controller)
        if controller.returncode == 0:
            wait_for(lambda: traffic.versions[str(CHALLENGER)] > 20, timeout=30, what="answers from the promoted one")
            assert not _challenger_running(home)
    return controller.returncode, lines, traffic


def _challenger_running(home: Path) -> bool:
    """Whether a model server started by the controller (it serves a folder under `home`) still runs."""
    folder = str(home / "state" / "rollout-challenger").encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and folder in (entry / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _state(home: Path) -> dict:
    return read_state(home / "rollout" / "rollout.json")


@pytest.mark.slow
@pytest.mark.timeout(3600)  # its fixtures train up to three models
def test_a_challenger_with_income_in_thousands_is_rolled_back_in_shadow(
    trained_model: Path, thousands_model: Path, tmp_path: Path
) -> None:
    code, lines, traffic = _roll_out(tmp_path, trained_model, thousands_model)
    assert code == 1, lines
    assert lines[-1].startswith(f"rolled back version {CHALLENGER}: "), lines
    assert "PSI" in lines[-1] or "flipped" in lines[-1], lines
    assert traffic.failures == [] and traffic.ok > 0
    assert str(CHALLENGER) not in traffic.versions  # no client saw one of its answers
    state = _state(tmp_path)
    assert state["stage"] == "rolled_back" and state["history"][-1]["stage"] == "shadow"
    pairs = [json.loads(x) for seg in (tmp_path / "predictions").glob("*.jsonl") for x in seg.read_text().splitlines()]
    roles = {(r.get("role"), r["version"]) for r in pairs}
    assert ("champion", 1) in roles and ("challenger", CHALLENGER) in roles  # both answers logged as a pair


@pytest.mark.slow
@pytest.mark.timeout(3600)  # its fixtures train up to three models
def test_a_challenger_returning_errors_is_rolled_back_at_its_first_canary_step(
    trained_model: Path, tmp_path: Path
) -> None:
    """A real model server that refuses every predict call (its body limit is below any request's size)."""
    with rollout_stack(tmp_path, trained_model, trained_model) as stack:
        broken_dir = tmp_path / "broken"
        shutil.copytree(stack.challenger_dir, broken_dir / str(CHALLENGER))
        with process.local_server(broken_dir, "--max-body-bytes", "64") as broken, Traffic(stack.gateway) as traffic:
            controller = stack.controller(
                "--stages", "canary", "--step-requests", "150", "--stage-seconds", "90", "--challenger-url", broken
            )
            lines = _finish(controller)
    assert controller.returncode == 1, lines
    assert lines[-1].startswith(f"rolled back version {CHALLENGER}: error ratio"), lines
    assert traffic.failures == [] and traffic.ok > 0
    state = _state(tmp_path)
    assert (state["history"][-1]["stage"], state["history"][-1]["weight"]) == ("canary", 5)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # its fixtures train up to three models
def test_a_challenger_retrained_on_the_same_data_is_promoted(
    trained_model: Path, retrained_model: Path, tmp_path: Path
) -> None:
    code, lines, traffic = _roll_out(tmp_path, trained_model, retrained_model)
    assert code == 0, lines
    assert lines[-1].startswith(f"promoted version {CHALLENGER} ("), lines
    assert any(line.startswith("shadow: passed") for line in lines), lines
    assert traffic.failures == []
    assert _state(tmp_path)["stage"] == "promoted"
    assert json.loads((tmp_path / "state" / "serving.json").read_text())["live"]["version"] == CHALLENGER


@pytest.mark.slow
@pytest.mark.timeout(3600)  # its fixtures train up to three models
@pytest.mark.faults
def test_a_gateway_killed_mid_canary_resumes_at_the_recorded_step(
    trained_model: Path, retrained_model: Path, tmp_path: Path
) -> None:
    with rollout_stack(tmp_path, trained_model, retrained_model) as stack, Traffic(stack.gateway) as traffic:
        controller = stack.controller(
            "--stages", "canary", "--canary-steps", "10,50,100", "--step-requests", "120", "--stage-seconds", "120"
        )
        wait_for(lambda: _state(tmp_path).get("weight") == 50, timeout=120, what="the 50 % step")
        traffic.paused.set()
        time.sleep(0.3)
        os.kill(stack.gateway_proc.pid, signal.SIGKILL)
        stack.gateway_proc.wait()
        assert (_state(tmp_path)["stage"], _state(tmp_path)["weight"]) == ("canary", 50)
        stack.restart_gateway()
        traffic.paused.clear()
        lines = _finish(controller)
    assert controller.returncode == 0, lines
    assert lines[-1].startswith(f"promoted version {CHALLENGER} ("), lines
    assert traffic.failures == []
    history = _state(tmp_path)["history"]
    assert [(h["weight"], h["verdict"]) for h in history] == [(10, "pass"), (50, "pass"), (100, "pass")]


def test_delong_matches_its_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    outcome = (rng.random(400) < 0.3).astype(float)
    sharp, blunt = outcome * 0.8 + rng.normal(0, 0.6, 400), outcome * 0.3 + rng.normal(0, 0.6, 400)
    components = []
    for scores in (sharp, blunt):
        pos, neg = scores[outcome == 1], scores[outcome == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        components.append((psi.mean(1), psi.mean(0)))
    s10 = np.cov(np.vstack([c[0] for c in components]))
    s01 = np.cov(np.vstack([c[1] for c in components]))
    n1, n0 = len(components[0][0]), len(components[0][1])
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / n1 + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n0
    test = delong(sharp, blunt, outcome)
    assert test["z"] == pytest.approx((components[0][0].mean() - components[1][0].mean()) / np.sqrt(variance))
    assert test["p_value"] < 1e-4 and test["auc_champion"] > test["auc_challenger"]
    assert delong(sharp, sharp, outcome)["p_value"] == 1.0


def test_the_monitoring_run_compares_champion_and_challenger_on_the_same_applicants() -> None:
    rng = np.random.default_rng(1)
    outcome = (rng.random(300) < 0.3).astype(int)
    ids = [f"a{i}" for i in range(300)]
    good, bad = outcome * 0.6 + rng.random(300) * 0.4, rng.random(300)
    rows = []
    for i, app in enumerate(ids):
        rows.append({"request_id": f"r{i}", "application_id": app, "probability": good[i], "version": 1})
        rows[-1].update(role="champion", shadow=None, time=float(i))
        rows.append({"request_id": f"r{i}", "application_id": app, "probability": bad[i], "version": 2})
        rows[-1].update(role="challenger", shadow=True, time=float(i) + 0.1)
    frame = pd.DataFrame(rows).assign(model="credit_risk")
    known = pd.DataFrame({"application_id": ids, LABEL: outcome})
    (entry,) = champion_vs_challenger(frame, known)
    assert (entry["challenger"], entry["champions"], entry["pairs"]) == (2, [1], 300)
    assert entry["delong"]["p_value"] < 0.001
    assert entry["line"].startswith("challenger 2 against champion 1 on the same 300 applicants")
    assert set(logged(1, frame)["version"]) == {1}  # a shadow answer is never taken for the decision


def test_a_firing_live_drift_alert_is_what_holds_a_stage(tmp_path: Path) -> None:
    """The real local Prometheus with the project's rules: no hold before the monitoring run's drift gauges
    arrive, LiveDriftDetected named once they make it fire."""
    with running_stack(tmp_path, f"http://127.0.0.1:{free_port()}") as stack:
        assert drift_alerts(settings()) == []
        gauges = dags_metrics.gauges(live_record("person_income"))
        send_statsd(stack["statsd_port"], [f"credit_risk.{name}:{value}|g" for name, value in gauges.items()])
        wait_for(lambda: drift_alerts(settings()), timeout=60, what="LiveDriftDetected firing")
        assert drift_alerts(settings()) == ["LiveDriftDetected"]
