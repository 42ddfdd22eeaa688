"""The static dashboard pages as a person sees them in Chromium: every panel that has data shows a visible mark (in
the DOM and in the screenshot's pixels), an empty one says "no data yet", a lone sample is a labelled point, a
legend of many series names the top movers and counts the rest, the time axis has ticks."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from common import config
from dags.metrics import monitoring as live_metrics
from monitoring import dashboard_page
from serving import client, process
from testing.browser import chromium, console_errors, ink, save_small, visible
from testing.harness import (
    assert_panels_return_data,
    dashboard,
    live_record,
    query,
    running_stack,
    send_statsd,
    wait_for,
)
from tests.test_monitoring_stack import RUN_PACKETS

pytestmark = pytest.mark.browser
README_IMAGES = config.PROJECT_ROOT / "docs" / "images"


def panel_marks(panel: WebElement) -> int:
    """Check one panel as a person would: an empty one says so and draws nothing; one with data has marks that are
    displayed and show in its pixels. Returns the number of marks."""
    title = panel.find_element(By.TAG_NAME, "h2").text
    if panel.find_elements(By.CLASS_NAME, "empty"):
        assert panel.find_element(By.CLASS_NAME, "empty").text == "no data yet", title
        assert not panel.find_elements(By.CSS_SELECTOR, "svg, .value"), title
        return 0
    charts = panel.find_elements(By.TAG_NAME, "svg")
    if charts:
        (chart,) = charts
        marks = [m for m in chart.find_elements(By.CLASS_NAME, "mark") if visible(m)]
        assert ink(chart, colour=True) > 20, f"{title}: no coloured pixel in the chart"
        ticks = [t.text for t in chart.find_elements(By.TAG_NAME, "text") if re.fullmatch(r"\d\d:\d\d", t.text)]
        assert len(ticks) >= 2, f"{title}: time ticks {ticks}"
    else:
        marks = [v for v in panel.find_elements(By.CLASS_NAME, "value") if visible(v)]
        assert all(ink(v, colour=False) > 20 for v in marks), f"{title}: a value without ink"
    assert marks, f"{title}: has data but no visible mark"
    return len(marks)


def test_chart_shapes_a_person_can_read(tmp_path: Path):
    end = time.time()
    start = end - 3600
    dense = [(start + i * 15, 0.5 + 0.1 * (i % 7)) for i in range(240)]
    many = [(f"flat {i}", [(end - 600, 0.1 * i), (end, 0.1 * i)]) for i in range(27)]
    many += [(f"mover {i}", [(end - 600, 0.0), (end, 5.0 + i)]) for i in range(3)]
    panels = {
        "one sample": [("drift", [(end - 60, 0.21)])],
        "sparse": [("psi", [(start + i * 700, 0.1 * i) for i in range(5)])],
        "dense": [("auc", dense)],
        "thirty series": many,
        "empty": [],
    }
    sections = "".join(
        f'<section class="panel" id="{name.replace(" ", "-")}"><h2>{name}</h2>'
        f"{dashboard_page.panel_body('timeseries', series, start, end, 'short')}</section>"
        for name, series in panels.items()
    )
    page = tmp_path / "charts.html"
    page.write_text(dashboard_page.page("charts", "shapes", sections))

    with chromium() as browser:
        browser.get(page.as_uri())
        assert console_errors(browser) == []
        found = {p.get_attribute("id"): p for p in browser.find_elements(By.CLASS_NAME, "panel")}
        assert [panel_marks(found[n]) for n in ("one-sample", "sparse", "dense", "empty")] == [1, 6, 1, 0]
        label = found["one-sample"].find_element(By.CLASS_NAME, "point-value")
        assert label.text == "0.21" and visible(label)
        legend = [li.text for li in found["thirty-series"].find_elements(By.CSS_SELECTOR, ".legend li")]
        assert len(legend) == 9 and legend[-1] == "22 more series hidden: those that moved least"
        assert sum("mover" in entry for entry in legend) == 3
        assert panel_marks(found["thirty-series"]) == 8 * 3  # each of the 8 sparse series: a line and two points


@pytest.mark.slow
def test_every_dashboard_panel_with_data_shows_a_mark(trained_model: Path, tmp_path: Path):
    """The three pages from a real local stack: the model server answered predictions, a retraining run's and a
    monitoring run's metrics were sent. Only the live page's two gateway panels (no gateway here) have no data."""
    served = tmp_path / "served"
    shutil.copytree(process.saved_model_dir(trained_model), served / "1")
    with process.local_server(served) as serving_url, running_stack(tmp_path / "home", serving_url) as stack:
        client.predict(serving_url, [client.example_row()])  # its counters exist from now on
        wait_for(lambda: query(stack["prometheus"], ":tensorflow:serving:request_count"), 20, "the server scraped")
        for _ in range(10):  # counted after a scrape: rate() sees an increase (a counter's first sample is none)
            client.predict(serving_url, [client.example_row()])
        live = live_metrics.gauges(live_record("person_income"))
        send_statsd(stack["statsd_port"], RUN_PACKETS + [f"credit_risk.{k}:{v}|g" for k, v in live.items()])
        send_statsd(stack["statsd_port"], ["credit_risk.model.version:1|g"])
        time.sleep(2.5)  # two scrapes, so rate() has two samples
        send_statsd(stack["statsd_port"], ["airflow.scheduler_heartbeat:1|c"])
        for name in ("serving", "retraining"):
            assert_panels_return_data(stack["prometheus"], dashboard(name))
        wait_for(lambda: query(stack["prometheus"], "credit_risk_live_verdict"), 10, "the live gauges scraped")
        pages = dashboard_page.write_pages(stack["prometheus"], tmp_path / "pages", window=600)
        screens = config.settings().reports_dir / "screens"

        with chromium(width=1400, height=2400) as browser:  # two panels a row
            empty = {}
            for name, path in pages.items():
                browser.get(path.as_uri())
                assert console_errors(browser) == [], name
                panels = browser.find_elements(By.CLASS_NAME, "panel")
                assert len(panels) == len(dashboard(name)["panels"])
                empty[name] = sum(panel_marks(p) == 0 for p in panels)
                screens.mkdir(parents=True, exist_ok=True)
                browser.execute_script("window.scrollTo(0, 0)")  # the checks scrolled to each panel
                browser.save_screenshot(str(screens / f"dashboard-{name}.png"))
                if name == "serving":
                    height = browser.execute_script("return document.body.scrollHeight")
                    save_small(browser.get_screenshot_as_png(), README_IMAGES / "dashboard-serving.png", 700, height)
        assert empty == {"serving": 0, "retraining": 0, "live": 2}
