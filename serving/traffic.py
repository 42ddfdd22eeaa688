"""Replay loan applications through the REST API at a steady rate, one instance per request (`make traffic`).

    python -m serving.traffic --rows batch.csv --rate 50 [--shift person_income=1.5] [--limit N]
    python -m serving.traffic --generate 1000 --rate 100 --shift loan_intent:VENTURE=3

A CSV's `application_id` column, when present, is sent as each instance's `application_id`; its `loan_status` column
is never sent. `--shift feature=factor` multiplies a numeric feature; `--shift feature:category=factor` multiplies
that category's share, relabelling randomly chosen other rows (seeded), so only that column changes. Prints a
summary line; exits 1 when a request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from common import features
from common.config import MODEL_NAME, settings
from serving import client
from serving.predict_exchange import ID_KEY

CONCURRENCY = 32


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV in the Kaggle layout: the features typed, `application_id` kept, anything else dropped."""
    with path.open(newline="") as handle:
        return [
            {
                k: v if k == ID_KEY else client.csv_value(k, v)
                for k, v in rec.items()
                if k in features.BY_NAME or k == ID_KEY
            }
            for rec in csv.DictReader(handle)
        ]


def shift(rows: list[dict[str, Any]], spec: str, seed: int = 0) -> list[dict[str, Any]]:
    """Apply one `feature=factor` or `feature:category=factor` change (see the module's doc)."""
    target, _, factor_text = spec.partition("=")
    name, _, category = target.partition(":")
    feature, factor = features.BY_NAME.get(name), float(factor_text or "nan")
    if feature is None or factor != factor or feature.categorical != bool(category):
        raise ValueError(f"bad shift {spec!r}: feature=factor (numeric) or feature:category=factor (categorical)")
    if not feature.categorical:
        scale = (lambda v: round(v * factor)) if feature.dtype is int else (lambda v: v * factor)
        return [{**r, name: None if r[name] is None else scale(r[name])} for r in rows]
    others = [i for i, r in enumerate(rows) if r[name] != category]
    wanted = min(len(rows), round((len(rows) - len(others)) * factor))
    change = set(random.Random(seed).sample(others, max(0, min(len(others), wanted - (len(rows) - len(others))))))
    return [{**r, name: category} if i in change else r for i, r in enumerate(rows)]


async def _send(url: str, rows: list[dict[str, Any]], rate: float) -> tuple[int, list[str]]:
    path = f"{url.rstrip('/')}/v1/models/{MODEL_NAME}:predict"
    gate, failures, ok = asyncio.Semaphore(CONCURRENCY), [], 0
    start = time.monotonic()

    async def one(http: httpx.AsyncClient, i: int, row: dict[str, Any]) -> None:
        nonlocal ok
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        body = json.dumps({"instances": client.instances([row])})
        async with gate:
            try:
                answer = await http.post(path, content=body, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                return
        if answer.status_code == 200:
            ok += 1
        else:
            failures.append(f"HTTP {answer.status_code}: {answer.text[:200]}")

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
        await asyncio.gather(*(one(http, i, row) for i, row in enumerate(rows)))
    return ok, failures


def replay(url: str, rows: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """Send every row at `rate` per second; returns what was sent, answered and how long it took."""
    started = time.monotonic()
    ok, failures = asyncio.run(_send(url, rows, rate))
    seconds = time.monotonic() - started
    return {"sent": len(rows), "ok": ok, "failed": len(failures), "failures": failures[:5], "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--rows", type=Path, help="a CSV of loan applications (Kaggle layout)")
    source.add_argument("--generate", type=int, default=500, metavar="N", help="N generated rows (default 500)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--shift", action="append", default=[], help="feature=factor or feature:category=factor")
    parser.add_argument("--limit", type=int, help="send at most this many rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", default=settings().serving_url)
    args = parser.parse_args(argv)
    try:
        rows = read_csv(args.rows) if args.rows else client.generated_rows(args.generate, args.seed)
        for spec in args.shift:
            rows = shift(rows, spec, args.seed)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    rows = rows[: args.limit] if args.limit else rows
    result = replay(args.url, rows, args.rate)
    print(
        f"sent {result['sent']} predictions to {args.url} in {result['seconds']:.1f} s "
        f"({result['sent'] / max(result['seconds'], 1e-9):.1f}/s): {result['ok']} ok, {result['failed']} failed"
    )
    for failure in result["failures"]:
        print(f"  {failure}", file=sys.stderr)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
