"""`make train`: run the TFX pipeline on a CSV file or a folder of CSVs and push the blessed model.

Exit status: 0 and the pushed version on the last line; 2 when the data is bad; 3 when the model is not blessed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from common import config, features, permissions
from common.metric_format import figure, figures
from tfx_modules.data_gate import dataset
from tfx_modules.reporting import model_card
from tfx_modules.reporting.model_report import write_model_report
from tfx_modules.reporting.run_result import RunResult, read_run_result

EXIT_BAD_DATA = 2
EXIT_NOT_BLESSED = 3


def prepare_inputs(source: Path, data_root: Path) -> int:
    """Type-check every input file and write it canonically (stable TFX type inference); returns the row count."""
    frame = dataset.read_many([source])
    data_root.mkdir(parents=True, exist_ok=True)
    dataset.write_canonical(frame, data_root / "data.csv")
    return len(frame)


def run_pipeline(data_root: Path, model_dir: Path, settings: config.Settings) -> RunResult:
    """Run the whole pipeline with TFX's BeamDagRunner and read back what it produced."""
    from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner

    from tfx_modules.pipeline import create_pipeline

    BeamDagRunner().run(create_pipeline(data_root, model_dir, settings))
    return read_run_result(settings)


def summary(outcome: RunResult) -> str:
    lines = [f"pipeline run {outcome.run_id}: {'blessed' if outcome.blessed else 'NOT blessed'}"]
    lines += [f"  {name:<26} {figure(value)}" for name, value in sorted(outcome.metrics.items())]
    for name, values in outcome.members.get("members", {}).items():
        lines.append(f"  member {name}: {figures(values)}")
    if features.RECOMPUTED in outcome.members:
        lines.append(f"  eval split, loan_percent_income recomputed: {figures(outcome.members[features.RECOMPUTED])}")
    if outcome.slices:
        by_slice = (f"{name} {figure(values.get('auc'), '.3f')}" for name, values in sorted(outcome.slices.items()))
        lines.append("  auc by slice: " + ", ".join(by_slice))
    for feature, diffs in outcome.fairness.get("differences", {}).items():
        lines.append(f"  fairness {feature}: " + ", ".join(f"{d['metric']}={d['value']:.4f}" for d in diffs))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a CSV file or a folder of CSV files")
    parser.add_argument("--model-dir", type=Path, help="push destination (default: the configured model dir)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    settings = config.settings()
    permissions.keep_private(settings.home)
    model_dir = (args.model_dir or settings.model_dir).resolve()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    data_root = settings.pipeline_root / "inputs" / stamp
    try:
        rows = prepare_inputs(args.data, data_root)
    except dataset.DataError as error:
        print(f"bad data: {error.reason}", file=sys.stderr)
        return EXIT_BAD_DATA
    print(f"training on {rows} rows from {args.data}", file=sys.stderr)
    started = time.monotonic()
    outcome = run_pipeline(data_root, model_dir, settings)
    print(f"pipeline took {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(json.dumps(outcome.to_dict()) if args.json else summary(outcome))
    print(f"report: {write_model_report(outcome, settings)}")
    if not outcome.blessed or outcome.version is None:
        print(f"not blessed: {outcome.reason}")
        return EXIT_NOT_BLESSED
    print(f"model card: {model_card.write(outcome.version, settings)}")
    print(f"pushed version={outcome.version} to {outcome.model_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
