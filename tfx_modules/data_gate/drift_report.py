"""The HTML report of one DAG run a person opens from an alert: per batch its verdict, anomalies, drift values
against thresholds, and the distributions of the batch against the serving model's training data.

Distributions come from the TFDV statistics the drift gate compared (features as the model sees them), so the
picture and the numbers agree. Runs in the ML environment (matplotlib, TFDV protos).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from common import features

if TYPE_CHECKING:
    from tensorflow_metadata.proto.v0 import statistics_pb2

STYLE = """body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.bad{color:#b00;font-weight:bold}
.ok{color:#070}img{max-width:100%}"""


def _by_name(stats: statistics_pb2.DatasetFeatureStatisticsList) -> dict[str, statistics_pb2.FeatureNameStatistics]:
    return {f.path.step[0]: f for f in stats.datasets[0].features}


def _numeric(feature: statistics_pb2.FeatureNameStatistics) -> tuple[list[float], list[float]]:
    """Bucket edges and densities of the equal-width histogram (the one the divergence is computed on)."""
    histogram = next(h for h in feature.num_stats.histograms if h.type == h.STANDARD)
    total = sum(b.sample_count for b in histogram.buckets) or 1.0
    edges = [b.low_value for b in histogram.buckets] + [histogram.buckets[-1].high_value]
    return edges, [b.sample_count / total for b in histogram.buckets]


def _categorical(feature: statistics_pb2.FeatureNameStatistics) -> dict[str, float]:
    counts = {b.label: b.sample_count for b in feature.string_stats.rank_histogram.buckets}
    total = sum(counts.values()) or 1.0
    return {label: count / total for label, count in counts.items()}


def figure(
    batch: statistics_pb2.DatasetFeatureStatisticsList,
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None,
    names: tuple[str, str] = ("batch", "baseline"),
) -> str:
    """One small plot per feature, batch against baseline (labelled `names`), as an inline PNG data URI."""
    columns = 4
    rows = -(-len(features.FEATURES) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows))
    sources = [(names[0], _by_name(batch))] + ([(names[1], _by_name(baseline))] if baseline else [])
    for axis, spec in zip(axes.flat, features.FEATURES, strict=False):
        for label, stats in sources:
            if spec.categorical:
                shares = _categorical(stats[spec.name])
                offset = 0.2 if label == names[1] else -0.2
                positions = [i + offset for i in range(len(spec.vocabulary))]
                axis.bar(positions, [shares.get(v, 0.0) for v in spec.vocabulary], width=0.4, label=label)
                axis.set_xticks(range(len(spec.vocabulary)), spec.vocabulary, rotation=45, fontsize=6)
            else:
                edges, shares = _numeric(stats[spec.name])
                axis.stairs(shares, edges, label=label, fill=label == names[1], alpha=0.5)
        axis.set_title(spec.name + (" (log1p)" if spec.log else ""), fontsize=8)
        axis.tick_params(labelsize=6)
    for axis in axes.flat[len(features.FEATURES) :]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _batch_section(
    batch: dict,
    stats: statistics_pb2.DatasetFeatureStatisticsList | None,
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None,
) -> str:
    verdict_class = "bad" if batch["status"] == "quarantined" else "ok"
    parts = [
        f"<h2>{html.escape(batch['name'])}</h2>",
        f"<p>sha256 <code>{batch['sha256']}</code>, {batch.get('rows', 0)} rows: "
        f"<span class={verdict_class}>{html.escape(batch['status'])}</span>"
        f"{': ' + html.escape(batch['reason']) if batch.get('reason') else ''}</p>",
    ]
    if batch.get("anomalies"):
        rows = [(html.escape(k), html.escape(v)) for k, v in batch["anomalies"].items()]
        parts.append("<h3>Anomalies</h3>" + table(("column", "anomaly"), rows))
    if batch.get("drift"):
        rows = [
            (
                name,
                d["measure"],
                f"{d['value']:.4f}",
                f"{d['threshold']:.4f}",
                "<span class=bad>drift</span>" if d["drifted"] else "ok",
            )
            for name, d in batch["drift"].items()
        ]
        parts.append("<h3>Drift</h3>" + table(("feature", "measure", "value", "threshold", ""), rows))
    if stats is not None:
        parts.append(f'<h3>Distributions</h3><img alt="distributions" src="{figure(stats, baseline)}">')
    return "\n".join(parts)


def write(
    path: Path,
    run_id: str,
    batches: list[dict],
    statistics: dict[str, statistics_pb2.DatasetFeatureStatisticsList],
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None,
    baseline_label: str,
) -> Path:
    """Write the report of run `run_id`; `statistics` maps a batch's sha256 to its drift statistics."""
    sections = [_batch_section(b, statistics.get(b["sha256"]), baseline) for b in batches] or ["<p>No new batch.</p>"]
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Drift report {html.escape(run_id)}</title>"
        f"<style>{STYLE}</style></head><body><h1>Validation and drift: run {html.escape(run_id)}</h1>"
        f"<p>Baseline: {html.escape(baseline_label)}</p>{''.join(sections)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
