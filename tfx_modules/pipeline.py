"""The TFX pipeline definition: ExampleGen .. Evaluator, the fairness gate, Pusher; shared by the CLI run and the
per-component Airflow tasks."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import tensorflow_decision_forests  # noqa: F401  (registers TF-DF's ops: the Evaluator loads models whose trees use them)
import tensorflow_model_analysis as tfma
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from tfx import v1 as tfx
from tfx.components import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.utils import dependency_utils

from common import features
from common.config import Settings
from tfx_modules.components import csv_example_gen
from tfx_modules.components.fairness_gate import FairnessGate, GateConfig, GatedModelStrategy
from tfx_modules.components.pusher import Executor as PusherExecutor
from tfx_modules.model import DECISION_THRESHOLD_KEY, DERIVED_INPUTS_KEY, SEED_KEY

PIPELINE_NAME = "credit_risk"
EVAL_SIGNATURE = "serving_examples"
# Allowed drop of the overall AUC against the serving model before a candidate is refused.
MAX_AUC_REGRESSION = 0.01
# The eval split: a fifth of the rows, or past EVAL_BUCKETS * EVAL_ROWS rows about EVAL_ROWS of them (an AUC's
# standard error there is ~0.001; TFMA's cost is per eval row and slice, so a larger share buys only time).
EVAL_BUCKETS = 5
EVAL_ROWS = 1 << 17
IN_MEMORY = "--direct_running_mode=in_memory"
MULTI_PROCESSING = "--direct_running_mode=multi_processing"
METRICS = (
    "ExampleCount",
    "MeanLabel",  # 0 or 1 in a slice: AUC is undefined there (outcome.py reports it as n/a)
    "AUC",
    "AUCPrecisionRecall",
    "BinaryAccuracy",
    "Precision",
    "Recall",
    "Calibration",
    "CalibrationPlot",
    "ConfusionMatrixPlot",
)


def eval_config(settings: Settings) -> tfma.EvalConfig:
    """Metrics overall and per slice; thresholds on the overall slice only (tiny slices such as grade G are noisy)."""
    overall = [tfma.SlicingSpec()]
    thresholds = {
        "AUC": tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": settings.min_auc}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -MAX_AUC_REGRESSION}
            ),
        ),
        "BinaryAccuracy": tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": settings.min_accuracy})
        ),
    }

    def metric(class_name: str) -> tfma.MetricConfig:
        if class_name not in thresholds:
            return tfma.MetricConfig(class_name=class_name)
        per_slice = tfma.PerSliceMetricThreshold(slicing_specs=overall, threshold=thresholds[class_name])
        return tfma.MetricConfig(class_name=class_name, per_slice_thresholds=[per_slice])

    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=EVAL_SIGNATURE,
                label_key=features.LABEL,
                prediction_key="probability",
                model_type=tfma.TF_GENERIC,  # a plain SavedModel: spares TFMA trying to load it as Keras first
            )
        ],
        options=tfma.Options(include_default_metrics={"value": False}),
        slicing_specs=overall + [tfma.SlicingSpec(feature_keys=[name]) for name in features.SLICE_FEATURES],
        metrics_specs=[tfma.MetricsSpec(metrics=[metric(name) for name in METRICS])],
    )


def _is_local(beam_args: list[str]) -> bool:
    runner = PipelineOptions(beam_args).view_as(StandardOptions).runner or "DirectRunner"
    return runner.lower().removesuffix("runner").endswith("direct")


def input_rows(data_root: Path) -> int:
    """The input's rows, counted as lines (a quoted line break counts twice: close enough to choose by)."""
    return sum(max(0, path.read_bytes().count(b"\n") - 1) for path in data_root.rglob("*.csv"))


def beam_args(rows: int, settings: Settings) -> list[str]:
    """The settings' Beam args. A DirectRunner with no running mode named gets one by the input's size: in memory,
    or past settings.beam_multiprocess_rows a worker process per core, which pays off only on large inputs (each
    worker imports TensorFlow, ~10 s). Every task of a DAG run sees the same input, so all of them choose alike."""
    args = list(settings.beam_args)
    if not _is_local(args) or any(arg.startswith("--direct_running_mode") for arg in args):
        return args
    if rows <= settings.beam_multiprocess_rows:
        return [*args, IN_MEMORY]
    return [*args, MULTI_PROCESSING, f"--direct_num_workers={os.cpu_count()}"]


def example_gen_beam_args(pipeline_args: list[str], settings: Settings) -> list[str]:
    """ExampleGen's own Beam args: in memory when the input's size chose multi-processing. TFX reshuffles every
    record before writing it, and in that mode each record is held by the runner's process as well as a worker's:
    at 3.2M rows the process tree's peak was 8.6 GB in ExampleGen, over the 8 GB budget."""
    return [IN_MEMORY] if MULTI_PROCESSING in pipeline_args and MULTI_PROCESSING not in settings.beam_args else []


def split_config(rows: int) -> tfx.proto.SplitConfig:
    """Train and eval splits by hash: one bucket in EVAL_BUCKETS is eval, or past EVAL_ROWS of them one in as many as
    keep it near EVAL_ROWS. The rest trains; no row is left out."""
    buckets = max(EVAL_BUCKETS, math.ceil(rows / EVAL_ROWS))
    return tfx.proto.SplitConfig(
        splits=[
            tfx.proto.SplitConfig.Split(name="train", hash_buckets=buckets - 1),
            tfx.proto.SplitConfig.Split(name="eval", hash_buckets=1),
        ]
    )


def _package_tfx_for_remote_runners_only() -> None:
    """Unless the Beam args name a dependency, TFX's Beam executors package TFX itself for remote Beam workers: a copy
    of its install and an sdist build in a new temporary folder per component (~49 MB and ~3 s each), never removed.
    The DirectRunner runs in this process and needs no package, so its args pass unchanged."""
    package = dependency_utils.make_beam_dependency_flags
    if getattr(package, "remote_only", False):
        return

    def remote_only(beam_args: list[str]) -> list[str]:
        return list(beam_args) if _is_local(beam_args) else package(beam_args)

    remote_only.remote_only = True
    dependency_utils.make_beam_dependency_flags = remote_only


def create_pipeline(data_root: Path, model_dir: Path, settings: Settings) -> tfx.dsl.Pipeline:
    """The pipeline over the CSV files in `data_root`, pushing blessed models to `model_dir/<version>/`.

    Its executors run in the process that builds it (BeamDagRunner, or node_runner's Launcher), so this is also
    where TFX is told not to package itself for the local Beam runner."""
    _package_tfx_for_remote_runners_only()
    rows = input_rows(data_root)
    pipeline_args = beam_args(rows, settings)
    # CsvExampleGen's outputs from a bulk executor (tfx_modules/components/csv_example_gen.py), under CsvExampleGen's id
    example_gen = FileBasedExampleGen(
        input_base=str(data_root),
        custom_executor_spec=executor_spec.BeamExecutorSpec(csv_example_gen.Executor),
        output_config=tfx.proto.Output(split_config=split_config(rows)),
    ).with_id("CsvExampleGen")
    example_gen.with_beam_pipeline_args(example_gen_beam_args(pipeline_args, settings))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="tfx_modules.model.preprocessing_fn",
        custom_config={DERIVED_INPUTS_KEY: settings.derived_inputs},
        disable_statistics=True,  # StatisticsGen has the raw data's; nothing reads pre-/post-transform statistics
        materialize=False,  # the Trainer applies the graph as it reads (tfx_modules/model.py: _dataset)
    )
    trainer = tfx.components.Trainer(
        run_fn="tfx_modules.model.run_fn",
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"]),
        eval_args=tfx.proto.EvalArgs(splits=["eval"]),
        custom_config={DECISION_THRESHOLD_KEY: settings.decision_threshold, SEED_KEY: settings.train_seed},
    )
    model_resolver = tfx.dsl.Resolver(
        strategy_class=GatedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=eval_config(settings),
    )
    fairness_gate = FairnessGate(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        evaluator_blessing=evaluator.outputs["blessing"],
        gate_config=json.dumps(asdict(GateConfig.from_settings(settings))),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=fairness_gate.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=str(model_dir))
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(PusherExecutor),  # a failed push leaves nothing
    )
    settings.metadata_path.parent.mkdir(parents=True, exist_ok=True)  # ML Metadata's SQLite file lives there
    return tfx.dsl.Pipeline(
        pipeline_name=PIPELINE_NAME,
        pipeline_root=str(settings.pipeline_root),
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            example_validator,
            transform,
            trainer,
            model_resolver,
            evaluator,
            fairness_gate,
            pusher,
        ],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(settings.metadata_path)
        ),
        beam_pipeline_args=pipeline_args,
    )
