"""Fault drills, measured: how long each part takes to do its job again after kill -9, and what an alert costs when
its channels are down or hang.

    python -m bench.faults [--model-dir DIR] [--repeat N]

1. kill -9 of the model server, and of the gateway, while a new version is being swapped in under steady load
   (testing/fault_drills.py); restarted at once on the same port: seconds until answers flow again, requests
   failed meanwhile and how.
2. kill -9 of the StatsD bridge and of Prometheus in the local monitoring stack: seconds until a new value reaches
   Prometheus; samples Prometheus still has after its restart.
3. One alert with the default limits (CREDIT_RISK_ALERT_ATTEMPTS, CREDIT_RISK_ALERT_TIMEOUT_SECONDS) with both
   channels refusing connections, and with both accepting and never answering: seconds the send took.
The model is the newest under --model-dir (default: the configured model dir). Writes bench/results/faults.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from common.config import settings
from serving import process
from testing import fault_drills
from testing.harness import SlackSink, free_port, running_stack

RESULTS = Path(__file__).resolve().parent / "results" / "faults.json"
TIMINGS = ("answering_again_seconds", "metrics_flowing_again_seconds", "scraping_again_seconds", "restart_seconds")


def repeated(drill: Callable[[Path], dict], repeat: int) -> dict:
    """`drill` `repeat` times, each in a fresh folder: every run, and min/median/max of its timings."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
            runs.append(drill(Path(tmp)))
    spread = {
        key: {"min": min(v), "median": statistics.median(v), "max": max(v)}
        for key in TIMINGS
        if (v := [run[key] for run in runs if key in run])
    }
    return {**spread, "runs": runs}


def alert_costs() -> dict:
    config = settings()
    limits = {"attempts": config.alert_attempts, "timeout_seconds": config.alert_timeout_seconds}
    found: dict[str, object] = {"limits": limits}
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp:
        closed = free_port()
        used, seconds, _ = fault_drills.send_alert(
            Path(tmp), limits["timeout_seconds"], limits["attempts"], closed, f"http://127.0.0.1:{closed}/x"
        )
        found["both_down"] = {"channels_reached": used, "seconds": round(seconds, 2)}
        with fault_drills.silent_port() as hung, SlackSink(delay=limits["timeout_seconds"] + 5) as webhook:
            used, seconds, _ = fault_drills.send_alert(
                Path(tmp), limits["timeout_seconds"], limits["attempts"], hung, webhook.url
            )
        found["both_hung"] = {
            "channels_reached": used,
            "seconds": round(seconds, 2),
            "webhook_tries": len(webhook.received),
        }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=settings().model_dir, help="a SavedModel or Pusher dir")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    source = process.saved_model_dir(args.model_dir)
    bounds = fault_drills.BOUNDS
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count()},
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "bounds_seconds": bounds,
        "model_server_kill_during_swap": repeated(
            lambda w: fault_drills.kill_model_server_during_swap(source, w, bounds["model_server"]), args.repeat
        ),
        "gateway_kill_during_swap": repeated(
            lambda w: fault_drills.kill_gateway_during_swap(source, w, bounds["gateway"]), args.repeat
        ),
    }
    with tempfile.TemporaryDirectory(prefix="fault-drill-") as tmp, running_stack(Path(tmp), "http://127.0.0.1:9") as s:
        results["statsd_bridge_kill"] = repeated(
            lambda _: fault_drills.kill_statsd_bridge(s, bounds["statsd_bridge"]), args.repeat
        )
        results["prometheus_kill"] = repeated(
            lambda _: fault_drills.kill_prometheus(s, bounds["prometheus"]), args.repeat
        )
    results["alert_with_channels_down_or_hung"] = alert_costs()
    results["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
