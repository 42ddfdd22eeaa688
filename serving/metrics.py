"""Prometheus metrics under TF Serving's own names, so one Grafana dashboard reads both servers.

TF Serving's exporter turns `/tensorflow/serving/request_count` into `:tensorflow:serving:request_count`, writes
counters without a `_total` suffix and samplers as histograms in microseconds (buckets 10 * 1.8^i, 33 of them).
prometheus_client would rename counters, so the few series are rendered here.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

REQUEST_COUNT = ":tensorflow:serving:request_count"  # labels model_name, status (TF status code name)
REQUEST_LATENCY = ":tensorflow:serving:request_latency"  # labels model_name, API, entrypoint; microseconds
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"  # labels model_path, status (success|fail)
LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"  # label model_path; microseconds, a counter
# TF Serving has no gauge of the live version (dashboards derive it from load_attempt_count's model_path);
# this one is the local server's addition, named in the same family.
MODEL_VERSION = ":tensorflow:serving:model_version"  # label model_name; the version that answers requests

LATENCY_BUCKETS: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = (*labels, *extra)
    if not pairs:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Registry:
    """Thread-safe counters, gauges and histograms rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hists: dict[str, dict[Labels, list[float]]] = defaultdict(dict)  # bucket counts..., sum, count
        self._buckets: dict[str, tuple[float, ...]] = {}

    def inc(self, name: str, labels: dict[str, str], by: float = 1) -> None:
        key = tuple(labels.items())
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0) + by

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        with self._lock:
            self._gauges[name][tuple(labels.items())] = value

    def observe(
        self, name: str, labels: dict[str, str], value: float, buckets: tuple[float, ...] = LATENCY_BUCKETS
    ) -> None:
        """Add `value` to a histogram; a histogram keeps the buckets of its first observation."""
        key = tuple(labels.items())
        with self._lock:
            buckets = self._buckets.setdefault(name, buckets)
            index = bisect.bisect_left(buckets, value)
            cells = self._hists[name].setdefault(key, [0.0] * (len(buckets) + 3))
            cells[index] += 1  # index == len(buckets) is the +Inf overflow cell
            cells[-2] += value
            cells[-1] += 1

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
                for name, series in sorted(table.items()):
                    lines.append(f"# TYPE {name} {kind}")
                    lines.extend(f"{name}{_fmt_labels(k)} {_num(v)}" for k, v in series.items())
            for name, series in sorted(self._hists.items()):
                lines.append(f"# TYPE {name} histogram")
                for key, cells in series.items():
                    cumulative = 0.0
                    for bound, count in zip((*self._buckets[name], float("inf")), cells[:-2], strict=True):
                        cumulative += count
                        le = "+Inf" if bound == float("inf") else _num(round(bound, 6))
                        lines.append(f"{name}_bucket{_fmt_labels(key, (('le', le),))} {_num(cumulative)}")
                    lines.append(f"{name}_sum{_fmt_labels(key)} {_num(cells[-2])}")
                    lines.append(f"{name}_count{_fmt_labels(key)} {_num(cells[-1])}")
        return "\n".join(lines) + "\n"
