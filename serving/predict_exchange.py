"""A predict call as the gateway sees it: application ids taken out of the request, echoed in the answer.

A client may add `application_id` to an instance (row format) or as a column (`inputs` format). It is not a model
input: the gateway removes it before forwarding (the model server would reject an unknown input), and puts it into
each prediction of the answer so outcomes can be joined with predictions later. An instance without one gets
`<request id>-<index>`. A body the gateway cannot read as a predict request is forwarded untouched, so the model
server answers it with its own error. Standard library only.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:predict", re.IGNORECASE)
ID_KEY = "application_id"
GRPC_ID_METADATA = "application-id"  # gRPC: the request metadata key of the ids (comma-separated, one per row)


@dataclass
class Exchange:
    request_id: str
    model: str
    version: int | None  # the version the URL asks for, if any
    body: bytes  # what to forward
    instances: list[dict[str, Any]]  # features as sent, one dict per instance
    ids: list[str]
    columnar: bool

    def answer(self, content: bytes) -> tuple[bytes, list[Any]] | None:
        """The model server's answer with the ids echoed, and one prediction per instance; None if it has another
        shape (then it is passed on unchanged and nothing is logged)."""
        try:
            doc = json.loads(content)
            if self.columnar:
                outputs = doc["outputs"]
                columns = outputs if isinstance(outputs, dict) else {"probability": outputs}
                predictions = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
                if isinstance(outputs, dict):
                    outputs[ID_KEY] = self.ids
            else:
                predictions = doc["predictions"]
                for prediction, app_id in zip(predictions, self.ids, strict=True):
                    if isinstance(prediction, dict):
                        prediction[ID_KEY] = app_id
        except (ValueError, KeyError, TypeError):
            return None
        if len(predictions) != len(self.ids):
            return None
        return json.dumps(doc).encode(), predictions


def _rows(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any], bool] | None:
    """(instances without ids, the ids given or None, columnar) of a predict body; None when it is malformed."""
    if "instances" in doc and "inputs" not in doc:
        instances = doc["instances"]
        if not isinstance(instances, list) or not all(isinstance(row, dict) for row in instances):
            return None
        return instances, [row.pop(ID_KEY, None) for row in instances], False
    if "inputs" in doc and "instances" not in doc and isinstance(doc["inputs"], dict):
        columns = doc["inputs"]
        given = columns.pop(ID_KEY, None)
        if not all(isinstance(values, list) for values in columns.values()) or not columns:
            return None
        size = len(next(iter(columns.values())))
        if given is not None and (not isinstance(given, list) or len(given) != size):
            return None
        try:
            rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        except ValueError:
            return None
        return rows, given if given is not None else [None] * size, True
    return None


def parse(path: str, body: bytes) -> Exchange | None:
    """The exchange of a predict request to `path`, or None when it is not one the gateway can read."""
    match = PREDICT_PATH.fullmatch(path)
    if match is None:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    parsed = _rows(doc) if isinstance(doc, dict) else None
    if parsed is None:
        return None
    instances, given, columnar = parsed
    request_id = uuid.uuid4().hex
    ids = [f"{request_id}-{i}" if g is None else str(g) for i, g in enumerate(given)]
    body = json.dumps(doc).encode() if any(g is not None for g in given) else body
    version = int(match[2]) if match[2] else None
    return Exchange(request_id, match[1], version, body, instances, ids, columnar)
