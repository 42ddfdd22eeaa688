"""Run one TFX component of the pipeline for a given pipeline run: the unit of work of an Airflow task.

TFX's own Airflow runner showed each component as a task but requires Airflow < 3. This does what TFX's
BeamDagRunner does for each node (compile to IR, fix the run id, launch the node with TFX's Launcher against ML
Metadata), one node per call, so the DAG can run the components as separate tasks that share a pipeline run.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tfx.dsl.compiler import compiler, constants
from tfx.orchestration import metadata
from tfx.orchestration.local import runner_utils
from tfx.orchestration.portable import launcher, runtime_parameter_utils
from tfx.proto.orchestration import pipeline_pb2

from common import config
from tfx_modules.component_ids import COMPONENT_IDS
from tfx_modules.pipeline import create_pipeline


def pipeline_run_id(run_id: str) -> str:
    """A TFX-safe pipeline run id from, e.g., an Airflow run id (`manual__2026-01-01T00:00:00+00:00`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def compile_pipeline(data_root: Path, run_id: str, settings: config.Settings) -> pipeline_pb2.Pipeline:
    ir = compiler.Compiler().compile(create_pipeline(data_root, settings.model_dir, settings))
    runtime_parameter_utils.substitute_runtime_parameter(
        ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: pipeline_run_id(run_id)}
    )
    return ir


def run_node(node_id: str, run_id: str, data_root: str) -> None:
    """Launch component `node_id` of pipeline run `run_id`; its inputs come from earlier nodes of the same run."""
    settings = config.settings()
    ir = compile_pipeline(Path(data_root), run_id, settings)
    deployment = runner_utils.extract_local_deployment_config(ir)
    connection = getattr(
        deployment.metadata_connection_config, deployment.metadata_connection_config.WhichOneof("connection_config")
    )
    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    if node_id not in nodes:
        raise KeyError(f"unknown component {node_id!r}; the pipeline has {', '.join(nodes)}")
    launcher.Launcher(
        pipeline_node=nodes[node_id],
        mlmd_connection=metadata.Metadata(connection),
        pipeline_info=ir.pipeline_info,
        pipeline_runtime_spec=ir.runtime_spec,
        executor_spec=runner_utils.extract_executor_spec(deployment, node_id),
        custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment, node_id),
    ).launch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, choices=COMPONENT_IDS)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--data-root", required=True)
    args = parser.parse_args()
    run_node(args.node, args.run_id, args.data_root)


if __name__ == "__main__":
    main()
