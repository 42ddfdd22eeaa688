"""The Grafana dashboards as static HTML pages, drawn from Prometheus' query API: the local stack's way to see what
the dashboards show (Grafana needs Docker here: it is not packaged for this machine).

    python -m monitoring.dashboard_page [--hours 6]    # `make dashboards`; prints the pages' paths

Every panel of monitoring/grafana/dashboards/*.json is queried over the dashboard's window (the last 6 hours) with
Grafana's interval macros filled in as Grafana would for that step: time series become SVG line charts, stat panels
their last values, bar gauges bars of their last values. The pages (no script, no external file) go to
`<CREDIT_RISK_HOME>/reports/dashboards/<name>.html`; rendering again refreshes them.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from common import permissions
from common.config import settings
from monitoring.grafana_dashboards import DASHBOARD_DIR, DASHBOARDS

POINTS = 240  # samples per series, as a Grafana panel of ~1000 px would request
SCRAPE_SECONDS = 15  # monitoring/prometheus.yml's scrape_interval: the shortest window rate() can use
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
UNITS = {"percentunit": (100, "%"), "ms": (1, " ms"), "s": (1, " s"), "reqps": (1, " req/s"), "hertz": (1, "/s")}
CHART_WIDTH, CHART_HEIGHT = 560, 180


def _duration(seconds: float) -> str:
    return f"{max(round(seconds), 1)}s"


def grafana_macros(step: float, window: float) -> dict[str, str]:
    """Grafana's interval macros for a query over `window` seconds sampled every `step` seconds."""
    rate_interval = max(step + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)
    return {"$__rate_interval": _duration(rate_interval), "$__interval": _duration(step), "$__range": _duration(window)}


def with_macros(expr: str, macros: dict[str, str]) -> str:
    for macro, value in macros.items():
        expr = expr.replace(macro, value)
    return expr


def query_range(prometheus_url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    """`[{"metric": labels, "values": [[t, "v"], ...]}, ...]`; raises on a PromQL error."""
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.load(response)
    if body["status"] != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's legend format: `{{label}}` replaced by the series' label value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template) or json.dumps(labels)


def fmt(value: float, unit: str) -> str:
    """A value as the panel's unit shows it; whole numbers (counts, versions) in full."""
    scale, suffix = UNITS.get(unit, (1, ""))
    value *= scale
    if math.isnan(value):
        return "NaN"
    return f"{value:.0f}{suffix}" if value.is_integer() else f"{value:.4g}{suffix}"


def _points(values: list[list]) -> list[tuple[float, float]]:
    return [(float(t), float(v)) for t, v in values if math.isfinite(float(v))]


def _chart(series: list[tuple[str, list[tuple[float, float]]]], start: float, end: float, unit: str) -> str:
    """An SVG line chart of every series over [start, end], its y range from the data."""
    values = [v for _, points in series for _, v in points]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1

    def xy(t: float, v: float) -> str:
        x = (t - start) / (end - start) * CHART_WIDTH
        y = CHART_HEIGHT - (v - low) / (high - low) * CHART_HEIGHT
        return f"{x:.1f},{y:.1f}"

    lines = [
        f'<polyline fill="none" stroke="{COLOURS[i % len(COLOURS)]}" stroke-width="1.5" '
        f'points="{" ".join(xy(t, v) for t, v in points)}"/>'
        for i, (_, points) in enumerate(series)
    ]
    axis = [
        f'<text x="2" y="12">{html.escape(fmt(high, unit))}</text>',
        f'<text x="2" y="{CHART_HEIGHT - 4}">{html.escape(fmt(low, unit))}</text>',
    ]
    return (
        f'<svg viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="{CHART_WIDTH}" height="{CHART_HEIGHT}">'
        f'<rect width="100%" height="100%" fill="#fafafa" stroke="#ddd"/>{"".join(lines + axis)}</svg>'
    )


def _last_values(series: list[tuple[str, list[tuple[float, float]]]], unit: str, bars: bool) -> str:
    rows = [(name, points[-1][1]) for name, points in series if points]
    top = max((abs(v) for _, v in rows), default=0) or 1
    out = []
    for i, (name, value) in enumerate(rows):
        bar = (
            f'<span class="bar" style="width:{abs(value) / top * 100:.0f}%;background:{COLOURS[i % len(COLOURS)]}">'
            "</span>"
            if bars
            else ""
        )
        out.append(f'<div class="value"><b>{html.escape(fmt(value, unit))}</b> {html.escape(name)}{bar}</div>')
    return "".join(out)


def render_panel(panel: dict, prometheus_url: str, start: float, end: float, step: float) -> str:
    """One panel as an HTML section: its chart or values, or `no data`."""
    macros = grafana_macros(step, end - start)
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    series = []
    for target in panel["targets"]:
        for result in query_range(prometheus_url, with_macros(target["expr"], macros), start, end, step):
            points = _points(result["values"])
            if points:
                series.append((legend(target["legendFormat"], result["metric"]), points))
    if not series:
        body = '<p class="empty">no data</p>'
    elif panel["type"] == "timeseries":
        keys = "".join(
            f'<span style="color:{COLOURS[i % len(COLOURS)]}">&#9632;</span> {html.escape(name)} '
            f"(last {html.escape(fmt(points[-1][1], unit))}) "
            for i, (name, points) in enumerate(series)
        )
        body = _chart(series, start, end, unit) + f'<p class="legend">{keys}</p>'
    else:
        body = _last_values(series, unit, bars=panel["type"] == "bargauge")
    description = f'<p class="description">{html.escape(panel["description"])}</p>' if panel["description"] else ""
    return f'<section class="panel"><h2>{html.escape(panel["title"])}</h2>{description}{body}</section>'


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}.panels{display:flex;flex-wrap:wrap;gap:1em}
.panel{border:1px solid #ccc;border-radius:4px;padding:.6em 1em;width:580px}.panel h2{font-size:1.05em;margin:.2em 0}
.description,.legend{font-size:.8em;color:#555}.empty{color:#999;font-style:italic}.value{margin:.3em 0}
.value b{font-size:1.4em}.bar{display:block;height:8px;border-radius:2px}svg text{font-size:11px;fill:#555}"""


def render(board: dict, prometheus_url: str, end: float, window: float) -> str:
    """A dashboard (Grafana JSON) as one HTML page over the `window` seconds before `end`."""
    step = max(window / POINTS, 1.0)
    start = end - step * math.ceil(window / step)  # so that the last sample falls on `end`
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(end))
    panels = "".join(render_panel(p, prometheus_url, start, end, step) for p in board["panels"])
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(board["title"])}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(board['title'])}</h1>"
        f"<p>From {html.escape(prometheus_url)}, the {window / 3600:g} hours up to {stamp}. A picture of that "
        "moment: <code>make dashboards</code> draws it again.</p>"
        f'<div class="panels">{panels}</div></body></html>\n'
    )


def write_pages(prometheus_url: str, folder: Path, window: float = 6 * 3600) -> dict[str, Path]:
    """Render every dashboard into `folder`; returns name -> page."""
    folder.mkdir(parents=True, exist_ok=True)
    end = time.time()
    pages = {}
    for name in DASHBOARDS:
        board = json.loads((DASHBOARD_DIR / f"{name}.json").read_text())
        pages[name] = folder / f"{name}.html"
        pages[name].write_text(render(board, prometheus_url, end, window))
    return pages


def pages_dir() -> Path:
    return settings().reports_dir / "dashboards"


def local_prometheus() -> str:
    """The local stack's Prometheus (monitoring/local_stack.py)."""
    return f"http://127.0.0.1:{settings().prometheus_port}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the Grafana dashboards from Prometheus as static HTML.")
    parser.add_argument("--hours", type=float, default=6.0, help="the window, up to now (default: 6, as Grafana)")
    parser.add_argument("--prometheus", default=local_prometheus(), help="default: the local stack's")
    args = parser.parse_args(argv)
    permissions.keep_private(settings().home)
    try:
        pages = write_pages(args.prometheus, pages_dir(), args.hours * 3600)
    except OSError as err:
        print(f"no Prometheus answers at {args.prometheus} ({err}): start the stack with `make up`", file=sys.stderr)
        return 1
    for name, page in pages.items():
        print(f"{name} dashboard: {page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
