"""statsd-exporter's mapping rules in Python, so the local bridge reads the same mapping file as the real exporter.

Faithful to prom/statsd-exporter's mapper: glob rules (each `*` is one whole dot-separated component) are tried
first and the first one in file order wins; then regex rules (unanchored search, like Go's regexp) in file order.
`$1`/`${1}` in `name` and `labels` expand to captures; a reference that is not a capture number expands to "".
Unmapped names are escaped as the exporter escapes them. Options the bridge does not implement are refused rather
than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

METRIC_TYPES = ("counter", "gauge", "observer")
# The exporter's validation patterns (pkg/mapper/mapper.go).
_GLOB_RE = re.compile(r"^(\*\.|[a-zA-Z_](-?[a-zA-Z0-9_])*\.)+(\*|[a-zA-Z_](-?[a-zA-Z0-9_])*)$")
_NAME_RE = re.compile(r"^([a-zA-Z_]|\$\{?\d+\}?)([a-zA-Z0-9_]|\$\{?\d+\}?)*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_REFERENCE_RE = re.compile(r"\$\{([a-zA-Z0-9_$]+)\}|\$([a-zA-Z0-9_]+)")
DEFAULT_QUANTILES = ((0.5, 0.05), (0.9, 0.01), (0.99, 0.001))
DEFAULT_SUMMARY_MAX_AGE = 600.0  # seconds; client_golang's DefMaxAge
_SUPPORTED_KEYS = {
    "match",
    "name",
    "labels",
    "match_type",
    "match_metric_type",
    "action",
    "observer_type",
    "timer_type",
    "summary_options",
    "quantiles",
    "ttl",
    "help",
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class MappingError(ValueError):
    """The mapping file is invalid or asks for something the bridge does not implement."""


def escape_metric_name(name: str) -> str:
    """The exporter's `EscapeMetricName`: invalid characters become `_`, a leading digit gets a `_` prefix, and the
    second dash of a `--` pair is dropped."""
    out = ["_"] if name[:1].isdigit() else []
    previous = ""
    for char in name:
        if char.isascii() and (char.isalnum() or char == "_"):
            out.append(char)
        elif not (char == "-" and previous == "-"):
            out.append("_")
        previous = char
    return "".join(out)


def parse_duration(value: str | int | float) -> float:
    """A Go duration (`1m30s`, `0`) in seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    parts = _DURATION_RE.findall(text)
    if "".join(n + u for n, u in parts) != text:
        raise MappingError(f"invalid duration {value!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def expand(template: str, captures: tuple[str, ...]) -> str:
    """Replace `$N`/`${N}` by the Nth capture (1-based); any other reference becomes "" as in the exporter."""

    def one(match: re.Match[str]) -> str:
        ref = match.group(1) or match.group(2)
        if ref.isdigit() and 1 <= int(ref) <= len(captures):
            return captures[int(ref) - 1] or ""
        return ""

    return _REFERENCE_RE.sub(one, template)


@dataclass(frozen=True)
class Rule:
    """One mapping entry, validated."""

    match: str
    name: str
    pattern: re.Pattern[str]
    glob: bool
    labels: dict[str, str]
    metric_type: str | None  # match_metric_type normalised to counter|gauge|observer
    drop: bool
    quantiles: tuple[tuple[float, float], ...]
    max_age: float
    ttl: float
    help: str


@dataclass(frozen=True)
class Mapped:
    """The result of mapping one StatsD name."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    rule: Rule | None = None

    @property
    def drop(self) -> bool:
        return self.rule is not None and self.rule.drop


def _metric_type(value: str | None, where: str) -> str | None:
    if value in (None, ""):
        return None
    normalised = "observer" if value in ("timer", "observer") else value
    if normalised not in METRIC_TYPES:
        raise MappingError(f"{where}: match_metric_type must be counter, gauge or timer, not {value!r}")
    return normalised


def _quantiles(options: list[dict] | None, default: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    if not options:
        return default
    return tuple((float(q["quantile"]), float(q.get("error", 0.0))) for q in options)


def _rule(entry: dict, defaults: dict, index: int) -> Rule:
    where = f"mapping {index} ({entry.get('match')!r})"
    unknown = set(entry) - _SUPPORTED_KEYS
    if unknown:
        raise MappingError(f"{where}: options not implemented by the bridge: {sorted(unknown)}")
    if not entry.get("match") or not entry.get("name"):
        raise MappingError(f"{where}: needs `match` and `name`")
    name, match = str(entry["name"]), str(entry["match"])
    if not _NAME_RE.match(name):
        raise MappingError(f"{where}: invalid metric name {name!r}")
    labels = {str(k): str(v) for k, v in (entry.get("labels") or {}).items()}
    bad = [k for k in labels if not _LABEL_RE.match(k)]
    if bad:
        raise MappingError(f"{where}: invalid label names {bad}")
    match_type = entry.get("match_type") or defaults.get("match_type") or "glob"
    if match_type == "glob":
        if not _GLOB_RE.match(match):
            raise MappingError(f"{where}: invalid glob {match!r}")
        pattern = re.compile("^" + r"\.".join("([^.]*)" if p == "*" else re.escape(p) for p in match.split(".")) + "$")
    elif match_type == "regex":
        try:
            pattern = re.compile(match)
        except re.error as error:
            raise MappingError(f"{where}: invalid regex: {error}") from error
    else:
        raise MappingError(f"{where}: match_type must be glob or regex, not {match_type!r}")
    observer = entry.get("observer_type") or entry.get("timer_type") or defaults.get("observer_type") or "summary"
    if observer != "summary":
        raise MappingError(f"{where}: observer_type {observer!r} is not implemented by the bridge (use summary)")
    action = entry.get("action", "map")
    if action not in ("map", "drop"):
        raise MappingError(f"{where}: action must be map or drop, not {action!r}")
    summary = entry.get("summary_options") or {}
    default_summary = defaults.get("summary_options") or {}
    return Rule(
        match=match,
        name=name,
        pattern=pattern,
        glob=match_type == "glob",
        labels=labels,
        metric_type=_metric_type(entry.get("match_metric_type"), where),
        drop=action == "drop",
        quantiles=_quantiles(
            summary.get("quantiles") or entry.get("quantiles"),
            _quantiles(default_summary.get("quantiles") or defaults.get("quantiles"), DEFAULT_QUANTILES),
        ),
        max_age=parse_duration(summary.get("max_age") or default_summary.get("max_age") or DEFAULT_SUMMARY_MAX_AGE),
        ttl=parse_duration(entry.get("ttl") or defaults.get("ttl") or 0),
        help=str(entry.get("help") or f"Metric autogenerated by statsd_bridge from {match}"),
    )


class Mapper:
    """Maps StatsD metric names (and types) to Prometheus names and labels."""

    def __init__(self, config: dict) -> None:
        if not isinstance(config, dict):
            raise MappingError("the mapping file must be a YAML mapping with `mappings:`")
        defaults = config.get("defaults") or {}
        if defaults.get("glob_disable_ordering"):
            raise MappingError("glob_disable_ordering is not implemented by the bridge")
        self.default_ttl = parse_duration(defaults.get("ttl") or 0)
        self.default_quantiles = _quantiles((defaults.get("summary_options") or {}).get("quantiles"), DEFAULT_QUANTILES)
        rules = [_rule(entry, defaults, i) for i, entry in enumerate(config.get("mappings") or [])]
        # Globs first, in file order; then regexes, in file order: the exporter's lookup order.
        self.rules = [r for r in rules if r.glob] + [r for r in rules if not r.glob]

    @classmethod
    def from_file(cls, path: str | Path) -> Mapper:
        try:
            return cls(yaml.safe_load(Path(path).read_text()))
        except yaml.YAMLError as error:
            raise MappingError(f"{path}: not valid YAML: {error}") from error

    def map(self, statsd_name: str, metric_type: str) -> Mapped:
        """The Prometheus name and labels for one StatsD metric; unmapped names get the exporter's default."""
        for rule in self.rules:
            if rule.metric_type not in (None, metric_type):
                continue
            found = rule.pattern.fullmatch(statsd_name) if rule.glob else rule.pattern.search(statsd_name)
            if found:
                captures = found.groups()
                labels = {k: expand(v, captures) for k, v in rule.labels.items()}
                return Mapped(escape_metric_name(expand(rule.name, captures)), labels, rule)
        return Mapped(escape_metric_name(statsd_name))
