"""A small StatsD-to-Prometheus bridge for the local stack, where prom/statsd-exporter cannot be installed.

It reads the same mapping file as statsd-exporter (see monitoring/statsd_mapper.py) and keeps its semantics:
counters keep the mapped name (no `_total`) and reject negative increments; gauges are set, or moved by a signed
value (`+3|g`, `-1|g`); `ms` timers are observed in seconds (`h`/`d` as sent) into summaries with quantiles over
a sliding window; `@rate` scales counters and repeats timer observations; DogStatsD `|#k:v` tags become labels.
A name seen first as one type and later as another is a conflict and the later sample is dropped, as the exporter
does. Run: `python -m monitoring.statsd_bridge --udp-port 8125 --http-port 9102 --mapping
monitoring/statsd_mapping.yml`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from monitoring.statsd_mapper import DEFAULT_SUMMARY_MAX_AGE, Mapper, Rule

log = logging.getLogger("statsd_bridge")
disable_created_metrics()
MAX_OBSERVATIONS = 10_000  # per series and window: bounds memory under a flood of timings
_TYPES = {"c": "counter", "g": "gauge", "ms": "observer", "h": "observer", "d": "observer"}


class SampleError(ValueError):
    """A StatsD line that cannot be parsed; `reason` is the exporter's error label."""

    def __init__(self, reason: str, line: str) -> None:
        super().__init__(f"{reason}: {line!r}")
        self.reason = reason


@dataclass(frozen=True)
class Event:
    """One StatsD sample after parsing: the value already in the unit Prometheus will see."""

    name: str
    type: str  # counter | gauge | observer
    value: float
    relative: bool = False  # a signed gauge value moves the gauge instead of setting it
    repeat: int = 1  # timer observations implied by a sampling rate
    tags: tuple[tuple[str, str], ...] = ()


def _parse_sample(name: str, sample: str, tags: tuple[tuple[str, str], ...], line: str) -> Event:
    parts = sample.split("|")
    if len(parts) < 2:
        raise SampleError("malformed_component", line)
    raw, kind = parts[0], parts[1]
    if kind not in _TYPES:
        raise SampleError("illegal_event", line)
    try:
        value = float(raw)
    except ValueError as error:
        raise SampleError("malformed_value", line) from error
    if not math.isfinite(value):
        raise SampleError("malformed_value", line)
    rate = 1.0
    for option in parts[2:]:
        if option.startswith("@"):
            try:
                rate = float(option[1:])
            except ValueError as error:
                raise SampleError("invalid_sample_factor", line) from error
            if not 0 < rate <= 1:
                raise SampleError("invalid_sample_factor", line)
        elif not option.startswith("#"):
            raise SampleError("invalid_sample_factor", line)
    metric_type = _TYPES[kind]
    if metric_type == "counter":
        return Event(name, metric_type, value / rate, tags=tags)
    if metric_type == "gauge":
        return Event(name, metric_type, value, relative=raw[:1] in "+-", tags=tags)
    return Event(name, metric_type, value / 1000 if kind == "ms" else value, repeat=int(1 / rate), tags=tags)


def _parse_tags(text: str) -> tuple[tuple[str, str], ...]:
    pairs = (tag.split(":", 1) for tag in text.split(",") if tag)
    return tuple((k.replace(".", "_").replace("-", "_"), v) for k, v in pairs if v)


def parse_line(line: str) -> list[Event]:
    """One StatsD line: `name:value|type[|@rate][|#tags]`, or several samples `name:v1|c:v2|ms`."""
    name, sep, rest = line.partition(":")
    if not sep or not name or not rest:
        raise SampleError("malformed_line", line)
    if "|#" in rest:  # DogStatsD tags hold colons: one sample per line
        body, _, tag_text = rest.partition("|#")
        return [_parse_sample(name, body, _parse_tags(tag_text), line)]
    return [_parse_sample(name, sample, (), line) for sample in rest.split(":")]


@dataclass
class Series:
    """The state of one labelled series."""

    value: float = 0.0
    count: int = 0
    total: float = 0.0
    window: deque = field(default_factory=lambda: deque(maxlen=MAX_OBSERVATIONS))  # (time, value)
    updated: float = 0.0


@dataclass
class Family:
    """A Prometheus metric family: one type, the rule it came from (quantiles, ttl), its series."""

    type: str
    rule: Rule | None
    help: str
    series: dict[tuple[tuple[str, str], ...], Series] = field(default_factory=dict)


def quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile by rank (NaN for no data, as an empty Go summary reports)."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{text}}} {floatToGoString(value)}\n" if text else f"{name} {floatToGoString(value)}\n"


class Bridge:
    """Maps events and keeps every series; renders them in Prometheus' text format."""

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self.families: dict[str, Family] = {}
        self.lock = threading.Lock()
        # The bridge's own health, under the exporter's metric names.
        self.registry = CollectorRegistry()
        self.events = Counter("statsd_exporter_events", "Events received, by type.", ["type"], registry=self.registry)
        self.unmapped = Counter("statsd_exporter_events_unmapped", "Events with no mapping.", registry=self.registry)
        self.conflicts = Counter(
            "statsd_exporter_events_conflict",
            "Events dropped: the name is already used by another type.",
            ["type"],
            registry=self.registry,
        )
        self.errors = Counter(
            "statsd_exporter_sample_errors", "Lines or events rejected, by reason.", ["reason"], registry=self.registry
        )
        self.lines = Counter("statsd_exporter_lines", "StatsD lines received.", registry=self.registry)

    def handle_packet(self, packet: bytes) -> None:
        for line in packet.decode("utf-8", errors="replace").splitlines():
            if line.strip():
                self.handle_line(line.strip())

    def handle_line(self, line: str) -> None:
        self.lines.inc()
        try:
            events = parse_line(line)
        except SampleError as error:
            self.errors.labels(error.reason).inc()
            log.debug("rejected %s", error)
            return
        for event in events:
            self.handle_event(event)

    def handle_event(self, event: Event) -> None:
        self.events.labels(event.type).inc()
        mapped = self.mapper.map(event.name, event.type)
        if mapped.drop:
            return
        if mapped.rule is None:
            self.unmapped.inc()
        if event.type == "counter" and event.value < 0:
            self.errors.labels("illegal_negative_counter").inc()
            return
        labels = tuple(sorted({**dict(event.tags), **mapped.labels}.items()))
        now = time.time()
        with self.lock:
            family = self.families.get(mapped.name)
            if family is None:
                help_text = mapped.rule.help if mapped.rule else f"Metric autogenerated by statsd_bridge: {event.name}"
                family = self.families[mapped.name] = Family(event.type, mapped.rule, help_text)
            elif family.type != event.type:
                self.conflicts.labels(event.type).inc()
                log.warning("%s is a %s; dropped a %s sample for it", mapped.name, family.type, event.type)
                return
            series = family.series.setdefault(labels, Series())
            series.updated = now
            if event.type == "counter" or (event.type == "gauge" and event.relative):
                series.value += event.value
            elif event.type == "gauge":
                series.value = event.value
            else:
                series.count += event.repeat
                series.total += event.value * event.repeat
                series.window.extend([(now, event.value)] * min(event.repeat, MAX_OBSERVATIONS))

    def _ttl(self, family: Family) -> float:
        return family.rule.ttl if family.rule else self.mapper.default_ttl

    def exposition(self) -> bytes:
        """Every family as statsd-exporter exposes it (counters as named, summaries with quantiles), then the
        bridge's own counters."""
        now = time.time()
        out: list[str] = []
        with self.lock:
            for name, family in sorted(self.families.items()):
                ttl = self._ttl(family)
                if ttl:
                    family.series = {k: s for k, s in family.series.items() if now - s.updated <= ttl}
                kind = "summary" if family.type == "observer" else family.type
                help_text = family.help.replace("\\", r"\\").replace("\n", r"\n")
                out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
                for labels, series in sorted(family.series.items()):
                    if family.type == "observer":
                        out.extend(self._summary(name, family, dict(labels), series, now))
                    else:
                        out.append(_sample(name, dict(labels), series.value))
        return "".join(out).encode() + generate_latest(self.registry)

    def _summary(self, name: str, family: Family, labels: dict[str, str], series: Series, now: float) -> list[str]:
        rule = family.rule
        max_age = rule.max_age if rule else DEFAULT_SUMMARY_MAX_AGE
        while series.window and now - series.window[0][0] > max_age:
            series.window.popleft()
        values = sorted(v for _, v in series.window)
        quantiles = rule.quantiles if rule else self.mapper.default_quantiles
        lines = [_sample(name, {**labels, "quantile": floatToGoString(q)}, quantile(values, q)) for q, _ in quantiles]
        return [*lines, _sample(f"{name}_sum", labels, series.total), _sample(f"{name}_count", labels, series.count)]


def serve_udp(bridge: Bridge, host: str, port: int) -> socket.socket:
    """Bind the StatsD UDP socket and read it on a daemon thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))

    def loop() -> None:
        while True:
            try:
                packet = sock.recv(65535)
            except OSError:
                return
            bridge.handle_packet(packet)

    threading.Thread(target=loop, name="statsd-udp", daemon=True).start()
    return sock


def make_http_server(bridge: Bridge, host: str, port: int) -> ThreadingHTTPServer:
    """`/metrics` in the text format statsd-exporter serves (0.0.4, so counters need no `_total`), `/-/healthy`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, content_type = bridge.exposition(), CONTENT_TYPE_LATEST
            elif path in ("/-/healthy", "/-/ready"):
                body, content_type = b"OK\n", "text/plain"
            else:
                self.send_error(404, "try /metrics")
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def _address(value: str) -> tuple[str, int]:
    """statsd-exporter's `[host]:port`; an empty host is every interface, as there."""
    host, _, port = value.rpartition(":")
    return host or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> None:
    """Flags of its own, or statsd-exporter's (`--statsd.mapping-config=`, `--statsd.listen-udp=[host]:port`,
    `--web.listen-address=[host]:port`), so that the compose stack's command line runs it unchanged."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mapping", "--statsd.mapping-config", type=Path, required=True, help="the mapping file")
    parser.add_argument("--host", default="127.0.0.1", help="address for both sockets")
    parser.add_argument("--udp-port", type=int, default=9125)
    parser.add_argument("--http-port", type=int, default=9102)
    parser.add_argument("--statsd.listen-udp", dest="listen_udp", type=_address, help="overrides --host/--udp-port")
    parser.add_argument("--web.listen-address", dest="listen_http", type=_address, help="overrides --http-port")
    parser.add_argument("--statsd.listen-tcp", dest="listen_tcp", help="accepted; StatsD over TCP is not served")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    udp = args.listen_udp or (args.host, args.udp_port)
    http = args.listen_http or (args.host, args.http_port)
    if args.listen_tcp:
        log.warning("StatsD over TCP (%s) is not served by this bridge: send UDP", args.listen_tcp)
    bridge = Bridge(Mapper.from_file(args.mapping))
    serve_udp(bridge, *udp)
    server = make_http_server(bridge, *http)
    log.info("StatsD on udp://%s:%d, metrics on http://%s:%d/metrics", *udp, *server.server_address)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
