"""What a pipeline run produced, read back from ML Metadata: blessed or not, pushed version, evaluation metrics
(None where a metric is undefined), the expected calibration error, the Trainer's per-member metrics and the
fairness gate's table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tensorflow_model_analysis as tfma
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from common import features
from common.config import Settings
from tfx_modules.components.fairness_gate import FAIRNESS_FILE, GATE_PROPERTY
from tfx_modules.evaluation import calibration
from tfx_modules.model import MEMBERS_FILE

PIPELINE_RUN_CONTEXT = "pipeline_run"
NODE_CONTEXT = "node"
OVERALL = "overall"
EVALUATOR, GATE = "evaluator", "fairness_gate"  # which component wrote a ModelBlessing
CANDIDATE = ("", "candidate")  # TFMA's model name for the new model (empty when there is no baseline)


@dataclass
class RunResult:
    run_id: str
    blessed: bool
    version: int | None
    model_path: str | None
    metrics: dict[str, float | None] = field(default_factory=dict)
    slices: dict[str, dict[str, float | None]] = field(default_factory=dict)
    members: dict = field(default_factory=dict)  # the Trainer's MEMBERS_FILE: each member's metrics, the blend
    evaluation_uri: str | None = None
    fairness: dict = field(default_factory=dict)  # the fairness gate's FAIRNESS_FILE: groups, differences, limits
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def open_store(settings: Settings) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(settings.metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _latest_run_id(store: metadata_store.MetadataStore) -> str:
    runs = store.get_contexts_by_type(PIPELINE_RUN_CONTEXT)
    if not runs:
        raise LookupError("no pipeline run recorded in ML Metadata yet")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)).name


def _slice_name(slice_key: tuple) -> str:
    return "&".join(f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in slice_key) or OVERALL


def _undefined(values: dict[str, float]) -> tuple[str, ...]:
    """Metrics that a slice holding one class does not define (TFMA writes 0 for them)."""
    if values.get("mean_label") == 0:
        return ("auc", "auc_precision_recall", "recall")
    if values.get("mean_label") == 1:
        return ("auc",)
    return ()


def defined_metrics(values: dict[str, float]) -> dict[str, float | None]:
    """None for each undefined metric: those of a one-class slice, and NaN (TFMA's precision of a slice without a
    predicted positive), which JSON cannot carry (Airflow refuses such an XCom, failing the task)."""
    undefined = _undefined(values)
    return {name: None if name in undefined or not math.isfinite(v) else v for name, v in values.items()}


def read_metrics(evaluation_uri: str) -> dict[str, dict[str, float | None]]:
    """Scalar metrics of an Evaluator output by slice name (`overall`, `loan_grade=A`, ...), None where undefined."""
    result = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        slice_key = tfma.slicer.deserialize_slice_key(metrics.slice_key)
        values = {
            kv.key.name: kv.value.double_value.value
            for kv in metrics.metric_keys_and_values
            if kv.key.model_name in CANDIDATE and not kv.key.is_diff and kv.value.HasField("double_value")
        }
        result[_slice_name(slice_key)] = defined_metrics(values)
    return result


def overall_plot(evaluation_uri: str):
    """The candidate's plots on the overall slice (confusion matrices at thresholds, calibration histogram)."""
    for plots in tfma.load_plots(evaluation_uri):
        if not plots.slice_key.single_slice_keys:
            for kv in plots.plot_keys_and_values:
                if kv.key.model_name in CANDIDATE:
                    return kv.value
    return None


def reliability(plot) -> calibration.Reliability:
    """TFMA's calibration histogram (10,000 fine buckets) in the coarse reliability bins."""
    buckets = [b for b in plot.calibration_histogram_buckets.buckets if b.num_weighted_examples.value > 0]
    return calibration.reliability(
        [b.total_weighted_refined_prediction.value / b.num_weighted_examples.value for b in buckets],
        [b.total_weighted_label.value for b in buckets],
        [b.num_weighted_examples.value for b in buckets],
    )


def read_run_result(settings: Settings, run_id: str | None = None) -> RunResult:
    """The outcome of pipeline run `run_id` (the latest run when None)."""
    store = open_store(settings)
    run_id = run_id or _latest_run_id(store)
    context = store.get_context_by_type_and_name(PIPELINE_RUN_CONTEXT, run_id)
    if context is None:
        raise LookupError(f"pipeline run {run_id!r} is not in ML Metadata")
    types = {t.id: t.name for t in store.get_artifact_types()}
    found = store.get_artifacts_by_context(context.id)
    artifacts = {types[a.type_id]: a for a in found if types[a.type_id] != "ModelBlessing"}
    blessings = {_blessing_kind(a): a for a in found if types[a.type_id] == "ModelBlessing"}
    outcome = RunResult(run_id=run_id, blessed=False, version=None, model_path=None)
    evaluation, pushed = artifacts.get("ModelEvaluation"), artifacts.get("PushedModel")
    evaluator_blessing, blessing = blessings.get(EVALUATOR), blessings.get(GATE)
    if "ModelRun" in artifacts and (Path(artifacts["ModelRun"].uri) / MEMBERS_FILE).is_file():
        outcome.members = json.loads((Path(artifacts["ModelRun"].uri) / MEMBERS_FILE).read_text())
    if evaluation is not None:
        outcome.evaluation_uri = evaluation.uri
        by_slice = read_metrics(evaluation.uri)
        outcome.metrics = by_slice.pop(OVERALL, {})
        outcome.slices = {k: v for k, v in by_slice.items() if k.split("=")[0] in features.SLICE_FEATURES}
        plot = overall_plot(evaluation.uri)
        if plot is not None:
            outcome.metrics["expected_calibration_error"] = reliability(plot).expected_calibration_error()
    if blessing is not None and (Path(blessing.uri) / FAIRNESS_FILE).is_file():
        outcome.fairness = json.loads((Path(blessing.uri) / FAIRNESS_FILE).read_text())
    if evaluator_blessing is None:
        outcome.reason = "the pipeline did not reach the Evaluator"
        return outcome
    if evaluator_blessing.custom_properties["blessed"].int_value != 1:
        outcome.reason = refusal_reason(evaluation.uri)
        return outcome
    if blessing is None:
        outcome.reason = "the pipeline did not reach the fairness gate"
        return outcome
    outcome.blessed = blessing.custom_properties["blessed"].int_value == 1
    if not outcome.blessed:
        outcome.reason = fairness_reason(outcome.fairness)
        return outcome
    if pushed is None or pushed.custom_properties["pushed"].int_value != 1:
        outcome.reason = "blessed but not pushed"
        return outcome
    outcome.version = int(pushed.custom_properties["pushed_version"].string_value)
    outcome.model_path = pushed.custom_properties["pushed_destination"].string_value
    return outcome


def component_windows(settings: Settings, run_id: str) -> dict[str, tuple[float, float]]:
    """When each component execution of a run began and ended (epoch seconds), from ML Metadata's timestamps."""
    store = open_store(settings)
    context = store.get_context_by_type_and_name(PIPELINE_RUN_CONTEXT, run_id)
    node_type = store.get_context_type(NODE_CONTEXT).id
    windows = {}
    for execution in store.get_executions_by_context(context.id):
        node = next(c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type)
        windows[node.split(".")[-1]] = (
            execution.create_time_since_epoch / 1000,
            execution.last_update_time_since_epoch / 1000,
        )
    return windows


def component_seconds(settings: Settings, run_id: str) -> dict[str, float]:
    """Wall time of each component execution of a run."""
    return {node: end - start for node, (start, end) in component_windows(settings, run_id).items()}


def _blessing_kind(blessing: metadata_store_pb2.Artifact) -> str:
    return GATE if blessing.custom_properties[GATE_PROPERTY].int_value == 1 else EVALUATOR


def fairness_reason(fairness: dict) -> str:
    """`fairness: <metric> <feature>=<group> <value> > <limit>` for each limit the candidate is over."""
    lines = [f"fairness: {v['line']}" for v in fairness.get("violations", [])]
    return "; ".join(lines) or "the fairness gate did not bless the model"


def refusal_reason(evaluation_uri: str) -> str:
    """Why the Evaluator refused the model, from TFMA's validation result (threshold, value, slice)."""
    result = tfma.load_validation_result(evaluation_uri)
    reasons = []
    for per_slice in result.metric_validations_per_slice:
        where = _slice_name(tfma.slicer.deserialize_slice_key(per_slice.slice_key))
        for failure in per_slice.failures:
            detail = (
                failure.message.strip()
                or f"{failure.metric_value.double_value.value:.4f} fails {failure.metric_threshold}"
            )
            # a change threshold compares with the serving model: say so, a floor failure reads differently
            metric = (
                f"{failure.metric_key.name} change against the serving model"
                if failure.metric_key.is_diff
                else failure.metric_key.name
            )
            reasons.append(f"{metric} on {where}: {' '.join(detail.split())}")
    return "; ".join(reasons) or "the Evaluator did not bless the model"
