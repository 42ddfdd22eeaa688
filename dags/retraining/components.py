"""The TFX component ids, in topological order, without importing TFX (the Airflow environment cannot).

`tfx_modules.node_runner` owns the list but imports TFX at module level, so its literal is read from the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tfx_modules.config import PROJECT_ROOT

NODE_RUNNER = PROJECT_ROOT / "tfx_modules" / "node_runner.py"


def component_ids(source: Path = NODE_RUNNER) -> tuple[str, ...]:
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMPONENT_IDS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise LookupError(f"{source} defines no COMPONENT_IDS")
