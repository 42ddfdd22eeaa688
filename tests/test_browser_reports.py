"""The reports a person opens, in Chromium: the model report, the model card, the data gate's drift report and the
live monitoring report render without a console error and every image on them loads.

One small home, as the DAGs fill it: a model trained on generated rows with its lineage (model report, card, the
training batch's gate report), a second batch through the gate (a drift report against that model's data), and
predictions through the gateway judged by the monitor (the monitoring report)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from common import config
from data.generate import generate
from live_monitoring import monitor
from serving import process, traffic
from testing.browser import broken_images, chromium, console_errors
from testing.harness import wait_for
from tests.conftest import train_recorded
from tfx_modules.data_gate import dataset, intake

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # one TFX run on generated rows


def logged(gateway: str) -> float:
    """Prediction records the gateway's log has written (its metrics page)."""
    text = httpx.get(f"{gateway}/gateway/metrics", timeout=10).text
    return float(re.search(r"^credit_risk_prediction_log_records (\S+)", text, re.M)[1])


def reports(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Build the four kinds of report in `home`; name -> page."""
    monkeypatch.setenv("CREDIT_RISK_HOME", str(home))
    settings = config.settings()
    model = train_recorded(home, generate(2000, seed=11))
    dataset.write_canonical(generate(500, seed=12), settings.incoming_dir / "batch.csv")
    gate = intake.intake("browser-gate", None, None)
    with (
        process.local_server(home / "models" / config.MODEL_NAME) as server,
        process.local_gateway(server, "--prediction-log", str(home / "predictions")) as gateway,
    ):
        rows = traffic.read_csv(dataset.write_canonical(generate(250, seed=13), home / "live.csv"))
        sent = traffic.replay(gateway, rows, rate=200)
        assert sent["failed"] == 0, sent["failures"]
        wait_for(lambda: logged(gateway) >= len(rows), timeout=20, what="the gateway's log writer")
    record = monitor.run("browser-monitor", {"min_predictions": 200})
    assert record["verdict"] in {"drift", "no_drift"}, record["outcome"]  # judged: its statistics are drawn
    return {
        "model report": settings.model_report(model["version"]),
        "model card": settings.model_card(model["version"]),
        "drift report": Path(gate["report"]),
        "monitoring report": Path(record["report"]),
    }


def test_reports_render_without_errors_and_their_images_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pages = reports(tmp_path / "home", monkeypatch)
    screens = config.settings().reports_dir / "screens"
    screens.mkdir(parents=True, exist_ok=True)
    images = {}
    with chromium() as browser:
        for name, page in pages.items():
            assert page.is_file(), f"{name}: {page}"
            browser.get(page.as_uri())
            assert console_errors(browser) == [], name
            assert broken_images(browser) == [], name
            assert browser.find_element(By.TAG_NAME, "h1").text, f"{name}: no title"
            images[name] = len(browser.find_elements(By.TAG_NAME, "img"))
            browser.save_screenshot(str(screens / f"{name.replace(' ', '-')}.png"))
    assert images["model report"] > 0 and images["drift report"] > 0, images  # plots to check, not none
