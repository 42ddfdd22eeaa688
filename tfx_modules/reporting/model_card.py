"""A model card per pushed version, for model-risk review: HTML and a JSON twin beside the model report.

    python -m tfx_modules.reporting.model_card VERSION     # (re)writes reports/card-<VERSION>.{html,json}

Written when a version is pushed (`make train`) and again after each deploy (the DAG), so the deployment record is
current. Its evaluation, calibration and fairness numbers are the model report's own (its JSON twin is read, not
recomputed); training data and lineage come from ML Metadata and the batch ledger; features, preprocessing, the
baseline applicant and the reason table from the feature spec. TFX's model-card toolkit is archived: this is plain
HTML like the report.
"""

from __future__ import annotations

import datetime
import html
import json
import sys
from pathlib import Path

from common import config, features
from common.config import Settings
from common.records import batch_ledger
from common.records.deploy_record import read_record
from tfx_modules import model
from tfx_modules.reporting.model_report import (
    MEMBER_COLUMNS,
    MEMBER_NAMES,
    OVERALL_COLUMNS,
    SLICE_COLUMNS,
    fairness_section,
)
from tfx_modules.reporting.model_report import metrics_table as table
from tfx_modules.reporting.run_result import PIPELINE_RUN_CONTEXT, open_store

SECTIONS = {
    "model": "Model",
    "intended_use": "Intended use",
    "training_data": "Training data",
    "features": "Features and preprocessing",
    "evaluation": "Evaluation",
    "calibration": "Calibration",
    "fairness": "Fairness",
    "reasons": "Reason codes",
    "limitations": "Known limitations",
    "deployment": "Deployment record",
}
INTENDED_USE = {
    "use": "Estimate the probability that an applicant for a personal loan defaults, as one input to a credit "
    "officer's decision, with the top reasons towards default for adverse-action notices.",
    "users": "Credit officers and the lender's automated pre-screening, within the lender's credit policy.",
    "out_of_scope": [
        "Deciding an application without human review or outside the lender's credit policy.",
        "Applicants or products unlike the training data: business loans, mortgages, loans above 35,000, "
        "applicants outside the ages 18-80 the model clips to.",
        "Setting interest rates or credit limits (the model scores default, not loss).",
        "Any use of the age input to refuse credit on grounds of age; the fairness gate bounds its effect.",
    ],
}
LIMITATIONS = [
    "Trained on one public dataset of US-style loan applications; no macro-economic inputs, so a downturn shifts "
    "default rates the model cannot see (the drift gate watches inputs, not outcomes).",
    "The label is default as recorded in the data; loans that were refused have no outcome (reject bias).",
    "Small slices (for example grade G, home ownership OTHER, ages 50+) have few eval rows: their metrics are noisy "
    "and groups under the gate's minimum size are reported but not gated.",
    "Reason codes are exact Shapley values against one baseline applicant: they explain the difference from that "
    "applicant, and a feature can push towards default through its interaction with others.",
    "person_age is an input (see the README for quality and fairness with and without it).",
    "The public dataset's recording artifact: in 421 rows the declared loan_percent_income is 0.006-0.093 below "
    "loan amount / income, and every one of them defaulted. An intake system computes the ratio, so on real traffic "
    "that gap is ~0. The model's gap input that exploits it is off by default (CREDIT_RISK_DERIVED_INPUTS=on brings "
    "it back, and with it a lead that does not hold on real traffic and a loss of monotonicity in "
    "loan_percent_income); headline figures are measured with the ratio recomputed as round(amount / income, 2).",
    "Monotone by construction only in the features the spec gives a direction (loan_percent_income, loan_int_rate, "
    "loan_grade, cb_person_default_on_file): the score can move either way with the others.",
]


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _lineage(settings: Settings, run_id: str) -> tuple[list[dict], str | None]:
    """The run's components in ML Metadata and what each produced; and ExampleGen's input folder."""
    store = open_store(settings)
    context = store.get_context_by_type_and_name(PIPELINE_RUN_CONTEXT, run_id)
    types = {t.id: t.name for t in store.get_artifact_types()}
    node_type = store.get_context_type("node").id
    produced, input_base = [], None
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
        node = next(c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type)
        if "input_base" in execution.custom_properties:  # TFX keeps exec properties as custom properties
            input_base = execution.custom_properties["input_base"].string_value
        outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id]) if e.type == e.OUTPUT]
        for artifact in store.get_artifacts_by_id(outputs):
            produced.append(
                {
                    "component": node.split(".")[-1],
                    "execution_id": execution.id,
                    "artifact": types[artifact.type_id],
                    "artifact_id": artifact.id,
                    "uri": artifact.uri,
                }
            )
    return produced, input_base


def _csv_rows(path: Path) -> int:
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def training_data(settings: Settings, version: int, run_id: str) -> dict:
    """Batches (name, sha256, rows, arrival), total rows and date range: from the batch ledger when the DAG trained
    the version, else from the files the pipeline read; plus the run's lineage in ML Metadata."""
    produced, input_base = _lineage(settings, run_id)
    recorded = next((m for m in batch_ledger.lineage()["models"] if m["version"] == version), None)
    if recorded:
        ledger = batch_ledger.ledger()
        files = [
            {"name": ledger[sha]["name"], "sha256": sha, "arrived": _iso(ledger[sha]["time"])}
            for sha in recorded["batches"]
        ]
        rows, fingerprint = recorded["rows"], recorded["fingerprint"]
    else:
        paths = sorted(Path(input_base).glob("*.csv")) if input_base else []
        files = [
            {"name": p.name, "sha256": batch_ledger.sha256(p), "rows": _csv_rows(p), "arrived": _iso(p.stat().st_mtime)}
            for p in paths
        ]
        rows, fingerprint = sum(f["rows"] for f in files), batch_ledger.fingerprint([f["sha256"] for f in files])
    arrivals = sorted(f["arrived"] for f in files if f["arrived"])
    return {
        "batches": files,
        "rows": rows,
        "fingerprint": fingerprint,
        "date_range": [arrivals[0], arrivals[-1]] if arrivals else None,
        "split": "hash of each row: 4 parts train, 1 part eval (CsvExampleGen)",
        "lineage": produced,
    }


def _features() -> dict:
    spec = [
        {
            "name": f.name,
            "type": f.dtype.__name__,
            "missing_allowed": f.optional,
            "imputed_with": f.default,
            "valid": list(f.valid) if f.valid else None,
            "clipped_to": list(f.clip) if f.clip else None,
            "log": f.log,
            "vocabulary": list(f.vocabulary),
            "monotone": f.monotone,
        }
        for f in features.FEATURES
    ]
    return {"inputs": spec, "preprocessing_and_model": (model.__doc__ or "").strip()}


def deployment(settings: Settings, version: int) -> dict:
    """This version's events in the deploy record: when it went live, what it replaced, rollbacks."""

    record = read_record(settings)
    mine = [e for e in record.get("history", []) if version in (e.get("version"), e.get("live"), e.get("previous"))]
    live = [e for e in mine if e.get("status") == "deployed" and e.get("version") == version]
    return {
        "live_now": bool(record.get("live")) and record["live"]["version"] == version,
        "went_live": live[0]["at"] if live else None,
        "replaced": live[0].get("previous") if live else None,
        "rollbacks": [e for e in mine if e.get("status") == "rolled_back"],
        "events": mine,
    }


def build(version: int, settings: Settings) -> dict:
    report_json = settings.model_report(version).with_suffix(".json")
    report = json.loads(report_json.read_text())
    members = report.get("members", {})
    return {
        "model": {
            "name": config.MODEL_NAME,
            "version": version,
            "pipeline_run": report["run_id"],
            "path": report["model_path"],
            "report": str(settings.model_report(version)),
            "decision_threshold": settings.decision_threshold,
            "written": _iso(datetime.datetime.now(datetime.timezone.utc).timestamp()),
        },
        "intended_use": INTENDED_USE,
        "training_data": training_data(settings, version, report["run_id"]),
        "features": _features(),
        "evaluation": {"overall": report["metrics"], "slices": report["slices"], "members": members.get("members")},
        "calibration": {
            "expected_calibration_error": report["metrics"].get("expected_calibration_error"),
            "platt_scaling": members.get("calibration"),
        },
        "fairness": report.get("fairness", {}),
        "reasons": {
            "method": "exact baseline Shapley values over the raw features (tfx_modules/evaluation/explain.py)",
            "baseline_applicant": features.BASELINE,
            "reasons_per_score": features.REASON_COUNT,
            "table": {name: vars(reason) for name, reason in features.REASONS.items()},
        },
        "limitations": LIMITATIONS,
        "deployment": deployment(settings, version),
    }


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>"


def _rows(rows: list[dict], columns: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render(card: dict) -> str:
    m, data, ev, cal, dep = (card[k] for k in ("model", "training_data", "evaluation", "calibration", "deployment"))
    platt = cal["platt_scaling"] or {}
    reasons = [
        {"feature": name, "baseline": card["reasons"]["baseline_applicant"][name], **r}
        for name, r in card["reasons"]["table"].items()
    ]
    body = {
        "model": _list([f"{k}: {v}" for k, v in m.items()]),
        "intended_use": f"<p>{html.escape(card['intended_use']['use'])}</p><p>Users: "
        f"{html.escape(card['intended_use']['users'])}</p><p>Out of scope:</p>"
        + _list(card["intended_use"]["out_of_scope"]),
        "training_data": f"<p>{data['rows']} rows from {len(data['batches'])} batch(es), arriving "
        f"{html.escape(' to '.join(data['date_range'] or ['?']))}; fingerprint <code>{data['fingerprint']}</code>; "
        f"split: {html.escape(data['split'])}</p>"
        + _rows(data["batches"], ("name", "sha256", "rows", "arrived"))
        + "<p>Lineage (ML Metadata):</p>"
        + _rows(data["lineage"], ("component", "execution_id", "artifact", "artifact_id", "uri")),
        "features": _rows(card["features"]["inputs"], tuple(card["features"]["inputs"][0]))
        + f"<pre>{html.escape(card['features']['preprocessing_and_model'])}</pre>",
        "evaluation": table("slice", OVERALL_COLUMNS, {"overall": ev["overall"]})
        + table("slice", SLICE_COLUMNS, dict(sorted(ev["slices"].items())))
        + table("member", MEMBER_COLUMNS, {MEMBER_NAMES.get(k, k): v for k, v in (ev["members"] or {}).items()}),
        "calibration": f"<p>expected calibration error (eval split): {cal['expected_calibration_error']}; "
        f"Platt scaling of the trees' average logit: slope {platt.get('slope')}, "
        f"slope above 0 {platt.get('upper_slope')} more, intercept {platt.get('intercept')}</p>",
        "fairness": fairness_section(card["fairness"]),
        "reasons": f"<p>{html.escape(card['reasons']['method'])}; the top {card['reasons']['reasons_per_score']} "
        "features pushing towards default are returned with every explained score.</p>"
        + _rows(reasons, ("feature", "baseline", "code", "high", "low", "missing")),
        "limitations": _list(card["limitations"]),
        "deployment": _list(
            [
                f"live now: {dep['live_now']}",
                f"went live: {dep['went_live'] or 'not yet deployed'}",
                f"replaced: {dep['replaced'] if dep['replaced'] is not None else 'none'}",
                f"rollbacks: {len(dep['rollbacks'])}",
            ]
        )
        + _rows(dep["events"], ("at", "status", "version", "live", "previous", "message")),
    }
    sections = "".join(f'<h2 id="{key}">{html.escape(title)}</h2>{body[key]}' for key, title in SECTIONS.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>credit_risk model card {m["version"]}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}</style></head><body>
<h1>Model card: {config.MODEL_NAME} version {m["version"]}</h1>{sections}</body></html>"""


def write(version: int, settings: Settings | None = None) -> str:
    """Write the card of a pushed version (HTML + JSON); returns the HTML's path."""
    settings = settings or config.settings()
    card = build(version, settings)
    path = settings.model_card(version)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, default=str))
    path.write_text(render(card))
    return str(path)


if __name__ == "__main__":
    print(write(int(sys.argv[1])))
