"""The Grafana dashboards as static HTML pages, drawn from Prometheus' query API: the local stack's way to see what
the dashboards show (Grafana needs Docker here: it is not packaged for this machine).

    python -m monitoring.dashboard_page [--hours 6]    # `make dashboards`; prints the pages' paths

Every panel of monitoring/grafana/dashboards/*.json is queried over the dashboard's window (the last 6 hours) with
Grafana's interval macros filled in as Grafana would for that step: time series become SVG charts, stat panels
their last values, bar gauges bars of their last values. A chart draws a lone sample as a labelled point, sparse
series as joined points, at most 8 series (those that moved most; the legend counts the rest) and time ticks; an
empty panel says "no data yet". The pages (no script, no external file) go to
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
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
UNITS = {"percentunit": (100, "%"), "ms": (1, " ms"), "s": (1, " s"), "reqps": (1, " req/s"), "hertz": (1, "/s")}
CHART_WIDTH, CHART_HEIGHT, AXIS_HEIGHT = 560, 200, 18  # the time axis' labels below the plot
MARGIN = 8  # inside the plot's frame, around the data
LEGEND_MAX = 8  # series a chart draws and names; the rest are counted as hidden
SPARSE_POINTS = 40  # a series of at most this many samples shows its points, joined by a line
TICK_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
NO_DATA = '<p class="empty">no data yet</p>'


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


Series = list[tuple[str, list[tuple[float, float]]]]


def top_movers(series: Series, keep: int = LEGEND_MAX) -> tuple[Series, int]:
    """At most `keep` series, those that moved most over the window (then the largest last values), and how many
    were left out: a legend of 30 entries cannot be read, nor can a chart of 30 lines."""
    if len(series) <= keep:
        return series, 0

    def movement(item: tuple[str, list[tuple[float, float]]]) -> tuple[float, float]:
        values = [v for _, v in item[1]]
        return max(values) - min(values), abs(values[-1])

    ranked = sorted(series, key=movement, reverse=True)[:keep]
    return [s for s in series if s in ranked], len(series) - keep


def time_ticks(start: float, end: float) -> list[float]:
    """Round wall-clock times inside [start, end]: the longest step (1, 2, 5, 10, 15, 30 min or 1, 2, 3, 6, 12 h)
    that still leaves at least 3 intervals, so that 2 ticks remain when one at an edge is left out."""
    span = end - start
    step = max((s for s in TICK_STEPS if span / s >= 3), default=TICK_STEPS[0])
    offset = time.localtime(start).tm_gmtoff  # ticks on the local clock's round minutes and hours
    first = math.ceil((start + offset) / step) * step - offset
    return [first + i * step for i in range(int((end - first) // step) + 1)]


def _chart(series: Series, start: float, end: float, unit: str) -> str:
    """An SVG chart of every series over [start, end], its y range from the data and time ticks below: a series of
    one sample is a point labelled with its value, a sparse one (few samples) points joined by a line."""
    values = [v for _, points in series for _, v in points]
    low, high = min(values), max(values)
    if high == low:
        pad = abs(high) * 0.1 or 1
        low, high = low - pad, high + pad
    plot_height = CHART_HEIGHT - AXIS_HEIGHT

    def x(t: float) -> float:  # a margin on both sides, so that a point at either end shows whole
        return MARGIN + (t - start) / (end - start) * (CHART_WIDTH - 2 * MARGIN)

    def y(v: float) -> float:
        return MARGIN + (high - v) / (high - low) * (plot_height - 2 * MARGIN)

    marks = []
    for i, (_, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        if len(points) > 1:
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
            marks.append(f'<polyline class="mark" fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        if len(points) <= SPARSE_POINTS:
            marks += [
                f'<circle class="mark" cx="{x(t):.1f}" cy="{y(v):.1f}" r="{4 if len(points) == 1 else 2.5}" '
                f'fill="{colour}"/>'
                for t, v in points
            ]
        if len(points) == 1:
            (t, v), anchor = points[0], "end" if x(points[0][0]) > CHART_WIDTH / 2 else "start"
            shift = -7 if anchor == "end" else 7
            marks.append(
                f'<text class="point-value" x="{x(t) + shift:.1f}" y="{y(v) + 4:.1f}" text-anchor="{anchor}" '
                f'fill="{colour}">{html.escape(fmt(v, unit))}</text>'
            )
    ticks = [
        f'<line class="tick" x1="{x(t):.1f}" y1="0" x2="{x(t):.1f}" y2="{plot_height}"/>'
        f'<text x="{x(t):.1f}" y="{CHART_HEIGHT - 4}" text-anchor="middle">{time.strftime("%H:%M", time.localtime(t))}'
        "</text>"
        for t in time_ticks(start, end)
        if 3 * MARGIN <= x(t) <= CHART_WIDTH - 3 * MARGIN  # a label cut by the frame would misread
    ]
    axis = [
        f'<text x="2" y="12">{html.escape(fmt(high, unit))}</text>',
        f'<text x="2" y="{plot_height - 4}">{html.escape(fmt(low, unit))}</text>',
    ]
    return (
        f'<svg viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="{CHART_WIDTH}" height="{CHART_HEIGHT}">'
        f'<rect width="100%" height="{plot_height}" fill="#fafafa" stroke="#ddd"/>{"".join(ticks + marks + axis)}</svg>'
    )


def _last_values(series: Series, unit: str, bars: bool) -> str:
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


def panel_body(kind: str, series: Series, start: float, end: float, unit: str) -> str:
    """A panel's body for its series: a chart and its legend (timeseries), last values (stat, bargauge as bars),
    or `no data yet`."""
    if not series:
        return NO_DATA
    if kind != "timeseries":
        return _last_values(series, unit, bars=kind == "bargauge")
    shown, hidden = top_movers(series)
    keys = "".join(
        f'<li><span style="color:{COLOURS[i % len(COLOURS)]}">&#9632;</span> {html.escape(name)} '
        f"(last {html.escape(fmt(points[-1][1], unit))})</li>"
        for i, (name, points) in enumerate(shown)
    )
    if hidden:
        keys += f'<li class="hidden">{hidden} more series hidden: those that moved least</li>'
    return _chart(shown, start, end, unit) + f'<ul class="legend">{keys}</ul>'


def render_panel(panel: dict, prometheus_url: str, start: float, end: float, step: float) -> str:
    """One panel as an HTML section: its title, description and body, from its queries over [start, end]."""
    macros = grafana_macros(step, end - start)
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    series = []
    for target in panel["targets"]:
        for result in query_range(prometheus_url, with_macros(target["expr"], macros), start, end, step):
            points = _points(result["values"])
            if points:
                series.append((legend(target["legendFormat"], result["metric"]), points))
    body = panel_body(panel["type"], series, start, end, unit)
    description = f'<p class="description">{html.escape(panel["description"])}</p>' if panel["description"] else ""
    return f'<section class="panel"><h2>{html.escape(panel["title"])}</h2>{description}{body}</section>'


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}.panels{display:flex;flex-wrap:wrap;gap:1em}
.panel{border:1px solid #ccc;border-radius:4px;padding:.6em 1em;width:580px}.panel h2{font-size:1.05em;margin:.2em 0}
.description,.legend{font-size:.8em;color:#555}.legend{list-style:none;padding:0;columns:2}
.legend .hidden{font-style:italic}svg .tick{stroke:#e4e4e4}.empty{color:#999;font-style:italic}.value{margin:.3em 0}
.value b{font-size:1.4em}.bar{display:block;height:8px;border-radius:2px}svg text{font-size:11px;fill:#555}"""


def page(title: str, intro: str, panels: str) -> str:
    """A whole page: its title, an introductory line (HTML) and the panels' sections."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{intro}</p>"
        f'<div class="panels">{panels}</div></body></html>\n'
    )


def render(board: dict, prometheus_url: str, end: float, window: float) -> str:
    """A dashboard (Grafana JSON) as one HTML page over the `window` seconds before `end`."""
    step = max(window / POINTS, 1.0)
    start = end - step * math.ceil(window / step)  # so that the last sample falls on `end`
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(end))
    panels = "".join(render_panel(p, prometheus_url, start, end, step) for p in board["panels"])
    intro = (
        f"From {html.escape(prometheus_url)}, the {window / 3600:g} hours up to {stamp}. A picture of that "
        "moment: <code>make dashboards</code> draws it again."
    )
    return page(board["title"], intro, panels)


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
