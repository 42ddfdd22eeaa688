"""The whole local stack: `up` (monitoring, model server, Airflow), `down`, and `run` (the README's main job).

    python scripts/stack.py up      # prints every URL and the Airflow login
    python scripts/stack.py down
    python scripts/stack.py run DATA.csv   # up, feed DATA as a batch, trigger the DAG by its REST API, follow it
                                           # task by task, replay some of DATA through the REST API and run the
                                           # live monitor, draw the dashboards, then the URLs, a summary and the
                                           # two runs' outcomes (the live monitor's last)

Runs with the Airflow environment's Python (standard library + PyYAML); each service runs in its own environment.
Where Docker is available, `docker compose up -d` runs the same services from docker-compose.yml instead (with
Grafana, which needs Docker: here `monitoring.dashboard_page` draws its dashboards from Prometheus).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import features, permissions
from common.config import settings
from common.metric_format import figures
from common.records.deploy_record import read_record
from monitoring import dashboard_page, local_stack
from scripts import airflow_local
from serving import client, local_service, traffic
from tfx_modules.ml_worker import client as ml_client
from tfx_modules.ml_worker.protocol import log_path

# Two applicants to show the served model at work (the README's example request and a safer profile).
APPLICANTS = {
    "risky applicant": {
        "person_age": 22,
        "person_income": 59000,
        "person_home_ownership": "RENT",
        "person_emp_length": None,
        "loan_intent": "PERSONAL",
        "loan_grade": "D",
        "loan_amnt": 35000,
        "loan_int_rate": 16.02,
        "loan_percent_income": 0.59,
        "cb_person_default_on_file": "Y",
        "cb_person_cred_hist_length": 3,
    },
    "safer applicant": {
        "person_age": 38,
        "person_income": 85000,
        "person_home_ownership": "MORTGAGE",
        "person_emp_length": 8,
        "loan_intent": "HOMEIMPROVEMENT",
        "loan_grade": "A",
        "loan_amnt": 8000,
        "loan_int_rate": 7.5,
        "loan_percent_income": 0.09,
        "cb_person_default_on_file": "N",
        "cb_person_cred_hist_length": 12,
    },
}


def up() -> list[str]:
    """Start monitoring first (so nothing's first metrics are lost), then serving, the warm ML worker (kept while the
    stack runs: scheduled runs find it ready), then Airflow; returns the URLs and the login."""
    urls = local_stack.start()
    pages = local_stack.prometheus_pages(urls["prometheus"])
    lines = [
        *(f"{name}: {url}" for name, url in urls.items()),
        f"Prometheus alerts: {pages['alerts']}, targets: {pages['targets']}",
        f"Grafana: needs Docker (make compose-up); without it `make dashboards` draws its dashboards from "
        f"Prometheus into {dashboard_page.pages_dir()}",
        f"model server: {local_service.start(grpc=True)}, gRPC {local_service.grpc_address(settings())}",
    ]
    ml_client.start(idle_seconds=0)
    lines.append(f"ML worker: log {log_path(settings().home)}")
    lines.append(airflow_local.start())
    return lines


def down() -> None:
    airflow_local.stop()  # and the ML worker
    local_service.stop()
    local_stack.stop()


def summary() -> list[str]:
    """The evaluation summary of the live model and the two applicants scored through the REST API."""
    config = settings()
    live = read_record(config)["live"]
    if live is None:
        return ["no model is being served yet"]
    report = config.model_report(live["version"])
    written = json.loads(report.with_suffix(".json").read_text())
    recomputed = written.get("members", {}).get(features.RECOMPUTED)
    predictions = client.predict(config.serving_url, list(APPLICANTS.values()))
    return [
        f"serving version {live['version']} at {config.serving_url}/v1/models/credit_risk",
        "evaluation (eval split, loan_percent_income recomputed from amount and income): "
        + (figures(recomputed, separator=" ") if recomputed else "not recorded by this version's Trainer"),
        "evaluation (eval split, loan_percent_income as recorded): " + figures(written["metrics"], separator=" "),
        f"report: {report}",
        *(
            f"{name}: {json.dumps(row)} -> {json.dumps(prediction)}"
            for (name, row), prediction in zip(APPLICANTS.items(), predictions, strict=True)
        ),
    ]


def live_traffic(data: Path, count: int = 600, rate: float = 100.0) -> None:
    """Replay `count` rows of `data` through the gateway, which logs them for the live monitor."""
    rows = traffic.read_csv(data)
    sent = traffic.replay(settings().serving_url, random.Random(0).sample(rows, min(count, len(rows))), rate)
    print(f"live traffic: {sent['ok']} of {sent['sent']} predictions answered in {sent['seconds']:.1f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up")
    commands.add_parser("down")
    run = commands.add_parser("run")
    run.add_argument("data", type=Path, help="a CSV batch of loan applications")
    args = parser.parse_args()
    permissions.keep_private(settings().home)
    if args.command == "down":
        down()
        print("stack stopped")
        return 0
    stack = up()
    print("\n".join(stack), flush=True)
    if args.command == "run":
        print(f"triggering {airflow_local.DAG_ID} on {args.data} through Airflow's REST API ...", flush=True)
        report = functools.partial(print, flush=True)
        outcome = airflow_local.trigger(args.data, {}, report=report)
        print(f"running {airflow_local.MONITOR_DAG_ID} on live traffic ...", flush=True)
        live = airflow_local.trigger(
            None, {}, report=report, dag_id=airflow_local.MONITOR_DAG_ID, before_run=lambda: live_traffic(args.data)
        )
        time.sleep(dashboard_page.SCRAPE_SECONDS + 5)  # one more scrape: the scheduler's metrics of the runs' end
        pages = dashboard_page.write_pages(dashboard_page.local_prometheus(), dashboard_page.pages_dir())
        print("\nThe stack keeps running (`make down` stops it):", *stack, sep="\n")
        print(*(f"{name} dashboard (drawn now): {page}" for name, page in pages.items()), sep="\n")
        print("\n".join(summary()))
        print(outcome)
        print(live)
    return 0


if __name__ == "__main__":
    sys.exit(main())
