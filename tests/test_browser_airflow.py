"""The mission's first line, as a person walks it in Chromium on a local Airflow: log in with the printed password,
open credit_risk_retraining, trigger it from the UI's trigger form with a Param changed (gate_only: validate and
decide, no training, so the run is short), see the run reach success in the grid, open a task's log and find the
outcome line. A screenshot of each step goes to $CREDIT_RISK_HOME/reports/screens/; the grid's to the README."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from common import config
from data.generate import generate
from scripts import airflow_local
from testing import airflow_sandbox
from testing.browser import chromium, save_small
from testing.harness import airflow_settings, wait_for
from tfx_modules.data_gate import dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Airflow's start and one gate-only DAG run: minutes
DAG = airflow_local.DAG_ID
README_IMAGE = config.PROJECT_ROOT / "docs" / "images" / "airflow-run.png"


def found(browser: WebDriver, css: str) -> WebElement | None:
    """The first displayed element matching `css`, if any (the UI renders hidden copies of some)."""
    return next((e for e in browser.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None)


def run_tooltip(browser: WebDriver, run_id: str) -> str:
    """The grid's tooltip for the run's bar (its run id, state and duration), shown by pointing at the bar; empty
    while the bar is not drawn (the grid redraws as the run goes on)."""
    try:
        bar = found(browser, f'a[href="/dags/{DAG}/runs/{run_id}/"]')
        if bar is None:
            return ""
        browser.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))", bar)
        tips = browser.find_elements(By.XPATH, f"//div[contains(., 'Run ID: {run_id}')]")  # the tooltip, its parents
        return min((t.text for t in tips if "State:" in t.text), key=len, default="")
    except StaleElementReferenceException:
        return ""


def finished(browser: WebDriver, run_id: str) -> str:
    """The run's tooltip once it says Success or Failed, else empty."""
    tooltip = run_tooltip(browser, run_id)
    return tooltip if re.search(r"State: (Success|Failed)", tooltip) else ""


def test_trigger_from_the_form_and_follow_the_run(tmp_path: Path):
    home = tmp_path / "home"
    env = {
        **airflow_settings(home),
        "CREDIT_RISK_STATSD_PORT": "9",
        "CREDIT_RISK_MONITOR_SCHEDULE": "none",
        # The browser loads the api-server that tasks report to: on a busy 2-core machine a task's call to it took
        # longer than the default 5 s and the task failed before it started.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
    }
    batch = dataset.write_canonical(generate(300, seed=31), tmp_path / "batch.csv")
    with airflow_sandbox.running_airflow(home, env), chromium(1400, 1000) as browser:
        login_line = airflow_local.start()  # as make up prints it: the URL, the user and the password
        url, user, password = re.fullmatch(r"Airflow UI: (\S+) \(user (\S+), password (\S+)\);.*", login_line).groups()
        incoming = config.settings().incoming_dir
        incoming.mkdir(parents=True, exist_ok=True)
        (incoming / ".batch.csv.partial").write_bytes(batch.read_bytes())
        (incoming / ".batch.csv.partial").replace(incoming / "batch.csv")
        screens = config.settings().reports_dir / "screens"
        screens.mkdir(parents=True, exist_ok=True)

        def screenshot(step: str) -> None:
            browser.save_screenshot(str(screens / f"airflow-{step}.png"))

        browser.get(url)
        wait_for(lambda: found(browser, "input[name=username]"), 60, "the login form")
        screenshot("1-login")
        browser.find_element(By.NAME, "username").send_keys(user)
        browser.find_element(By.NAME, "password").send_keys(password)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(lambda: "/auth/login" not in browser.current_url, 30, "the login to go through")

        airflow_local.api().unpause(DAG, timeout=240)  # as `make up` leaves it: parsed and unpaused
        browser.get(f"{url}/dags/{DAG}")
        trigger = wait_for(lambda: found(browser, "[data-testid=trigger-dag-button]"), 120, "the DAG's page")
        screenshot("2-dag")
        trigger.click()
        switch = wait_for(lambda: found(browser, '[id="switch:element_gate_only"]'), 30, "the trigger form's Params")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", switch)
        switch.find_element(By.CSS_SELECTOR, "[data-part=control]").click()
        assert switch.get_attribute("data-state") == "checked"
        screenshot("3-trigger-form")
        submit = browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
        submit.click()
        wait_for(lambda: f"/dags/{DAG}/runs/" in browser.current_url, 120, "the new run's page")
        run_id = browser.current_url.split("/runs/")[1].split("/")[0]

        browser.get(f"{url}/dags/{DAG}")
        tooltip = wait_for(lambda: finished(browser, run_id), 600, "the run to finish in the grid", interval=3)
        screenshot("4-grid")
        save_small(browser.get_screenshot_as_png(), README_IMAGE, 700)
        assert "State: Success" in tooltip, tooltip

        browser.get(f"{url}/dags/{DAG}/runs/{run_id}/tasks/finish")
        line = wait_for(
            lambda: re.search(r"OUTCOME (.+)", browser.find_element(By.TAG_NAME, "body").text), 60, "the task's log"
        )
        screenshot("5-task-log")
        outcome = json.loads((config.settings().state_dir / "last_run.json").read_text())
    assert outcome["run_id"] == run_id
    assert line[1] == outcome["outcome"] and line[1].startswith("gate only: "), line[1]  # the Param took effect
