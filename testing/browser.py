"""A real browser for the tests marked `browser`: Debian's headless Chromium driven by Selenium through Debian's
chromium-driver (scripts/setup_browser.sh installs both; nothing is downloaded at run time), and the checks a person
makes by looking: a mark is visible on the page and in its pixels, the console has no error, every image loaded."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement

WINDOW = (1300, 1800)


def require_browser() -> tuple[str, str]:
    """Chromium's and its driver's paths; skip when missing on a developer machine, fail under CI (env CI set)."""
    found = [shutil.which(name) for name in ("chromium", "chromedriver")]
    if all(found):
        return found[0], found[1]
    message = "chromium and chromium-driver are not installed (scripts/setup_browser.sh installs them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def chromium(width: int = WINDOW[0], height: int = WINDOW[1]) -> Iterator[webdriver.Chrome]:
    """A headless Chromium that keeps its console log (`console_errors`); quit afterwards."""
    binary, driver_path = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(180)  # a loaded machine renders Airflow's UI slowly
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The console's errors (SEVERE) since the last call: script errors and resources that failed to load."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def broken_images(driver: webdriver.Chrome) -> list[str]:
    """The `src` (cut short) of every image on the page that did not load or has no pixels."""
    return driver.execute_script(
        "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80));"
    )


def visible(element: WebElement) -> bool:
    """Shown, with a box of some size. Not Selenium's `is_displayed`: it calls a flat line (a box of height 0,
    drawn with its stroke's width) hidden."""
    rect = element.rect
    shown = (
        element.value_of_css_property("visibility") != "hidden" and element.value_of_css_property("display") != "none"
    )
    return shown and (rect["width"] > 0 or rect["height"] > 0)


def ink(element: WebElement, colour: bool) -> int:
    """Pixels of the element's screenshot that stand out: saturated ones (`colour`: a chart's lines and points on
    its grey frame, ticks and labels) or dark ones (text on white). Scrolled to the middle of the window first: a
    screenshot keeps only the part inside it."""
    element.parent.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    pixels = Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB").getdata()
    if colour:
        return sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60)
    return sum(1 for r, g, b in pixels if max(r, g, b) < 128)


def save_small(png: bytes, path: Path, width: int, height: int | None = None) -> Path:
    """A screenshot cut to its top `height` pixels (the page, not the empty window below it), scaled to `width` and
    reduced to a 256-colour palette: a small PNG for the README."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, 0, image.width, min(height or image.height, image.height)))
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256).save(path, optimize=True)
    return path
