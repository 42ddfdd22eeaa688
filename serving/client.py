"""Send raw loan rows to a TF Serving REST (or gRPC) endpoint and print probability and label per row.

    python -m serving.client --file rows.json      # a JSON list of rows, one row, or {"instances": [...]}
    python -m serving.client --file batch.csv      # a CSV in the Kaggle layout (the label column is dropped)
    python -m serving.client --generate 5          # rows from data.generate
    python -m serving.client --grpc 127.0.0.1:8500 # over gRPC's PredictionService (serving/grpc_client.py)

Missing optional features are sent as the bare `NaN` token, which TF Serving's JSON parser accepts. The functions
here use the standard library only, so the deploy step can run them from the Airflow environment too.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from common import features
from common.config import MODEL_NAME, settings

Row = dict[str, Any]


class ServingError(Exception):
    """The server answered with an error (its `{"error": ...}` message) or not at all."""


def request(url: str, body: Any = None, timeout: float = 10.0) -> Any:
    """GET (no body) or POST JSON; returns the decoded answer or raises ServingError with the server's message."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise ServingError(f"HTTP {exc.code} from {url}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServingError(f"{url} unreachable: {exc}") from None


def predict(base_url: str, rows: list[Row], model: str = MODEL_NAME, version: int | None = None) -> list[Row]:
    """Predictions for raw rows (row format), as `[{"probability": p, "label": l}, ...]`."""
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "") + ":predict"
    return request(base_url.rstrip("/") + path, {"instances": instances(rows)})["predictions"]


def instances(rows: list[Row]) -> list[Row]:
    """Rows as sent: without the label, a missing optional feature as NaN (json.dumps writes the bare token)."""
    return [
        {k: math.nan if v is None and k in features.OPTIONAL else v for k, v in row.items() if k != features.LABEL}
        for row in rows
    ]


def example_row() -> Row:
    """One valid row from the feature spec (optional features missing), for smoke tests."""
    return {
        f.name: None
        if f.optional
        else f.vocabulary[0]
        if f.categorical
        else float(sum(f.clip) / 2 if f.clip else f.valid[0])  # type: ignore[index]
        for f in features.FEATURES
    }


def csv_value(name: str, text: str) -> Any:
    feature = features.BY_NAME[name]
    if feature.categorical:
        return text
    if text.strip() == "":
        return None
    return float(text)


def read_rows(path: Path) -> list[Row]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            return [{k: csv_value(k, v) for k, v in rec.items() if k in features.BY_NAME} for rec in csv.DictReader(fh)]
    doc = json.loads(path.read_text())
    if isinstance(doc, dict) and "instances" in doc:
        doc = doc["instances"]
    return doc if isinstance(doc, list) else [doc]


def generated_rows(n: int, seed: int) -> list[Row]:
    from data import generate  # pandas: only in the ML environment

    df = generate.generate(n, seed=seed).drop(columns=[features.LABEL])
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in df.to_dict("records")
    ]


def _grpc_predict(address: str, rows: list[Row], model: str, version: int | None) -> list[Row]:
    import grpc  # the ML environment only, as is tensorflow-serving-api

    from serving import grpc_client

    try:
        return grpc_client.predict(address, rows, model, version)
    except grpc.RpcError as exc:
        raise ServingError(f"{exc.code().name} from {address}: {exc.details()}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Send raw rows to the model server and print the predictions.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", type=Path, help="JSON (row, list of rows, or {'instances': [...]}) or CSV")
    source.add_argument("--generate", type=int, metavar="N", help="send N generated rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default=settings().serving_url)
    parser.add_argument("--model", default=MODEL_NAME)
    parser.add_argument("--version", type=int)
    parser.add_argument("--grpc", metavar="HOST:PORT", help="call gRPC's Predict at this address instead of REST")
    args = parser.parse_args(argv)
    if args.file:
        try:
            rows = read_rows(args.file)
        except (OSError, ValueError) as exc:  # a missing file, bad JSON or a bad number: a sentence, not a traceback
            parser.error(f"cannot read rows from {args.file}: {exc}")
    elif args.generate:
        rows = generated_rows(args.generate, args.seed)
    else:
        rows = [example_row()]
    try:
        if args.grpc:
            predictions = _grpc_predict(args.grpc, rows, args.model, args.version)
        else:
            predictions = predict(args.url, rows, args.model, args.version)
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'row':>5}  {'probability':>11}  label")
    for i, p in enumerate(predictions):
        print(f"{i:>5}  {p['probability']:>11.4f}  {p['label']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
