"""The pipeline's component ids in topological order.

Standard library only, so the Airflow DAG can lay out one task per component without importing TFX;
a test checks it against the pipeline that `pipeline.py` builds.
"""

COMPONENT_IDS = (
    "CsvExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "ExampleValidator",
    "Transform",
    "Trainer",
    "latest_blessed_model_resolver",
    "Evaluator",
    "FairnessGate",
    "Pusher",
)
