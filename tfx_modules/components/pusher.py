"""TFX's Pusher, leaving nothing half-written in the model folder.

The stock Pusher copies a version into `<base_directory>/<version>` in place, saved_model.pb last, so that a model
server takes the folder as whole once that file exists. When the copy fails part way (a full disk), the folder
stays with a truncated saved_model.pb: a version to every reader (serving/process.versions, TF Serving) that cannot
load. This executor removes whatever a failed push created under the base directory, then fails as before.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tfx.components.pusher import executor
from tfx.proto import pusher_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


class Executor(executor.Executor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        base = Path(destination.filesystem.base_directory)
        before = _entries(base)
        try:
            super().Do(input_dict, output_dict, exec_properties)
        except Exception:
            for name in sorted(_entries(base) - before):
                shutil.rmtree(base / name, ignore_errors=True)
            raise
