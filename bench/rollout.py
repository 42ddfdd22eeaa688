"""Rollout benchmark: what mirroring costs, how fast a broken challenger is rolled back, how often a sound one is not.

    python -m bench.rollout [--models DIR] [--seconds S] [--rate R]

- The gateway's added p99 at R requests/s (default 200), mirroring off against on (shadow at share 1.0): client
  latency through the gateway minus the model server's own, same rows, same rate.
- A challenger with income in a unit ten times smaller rolled back in shadow, and one refusing every call rolled
  back at its first canary step: seconds from its first request to the rollback, and the share of live requests
  it answered.
- The null case: 20 shadow stages, each on 300 distinct applicants scored by the champion and by models retrained
  on its rows with other train seeds (the retrain's own randomness), and the stricter null of models trained on
  fresh samples of the same population, judged with the configured limits (serving/rollout_analysis.py) every 10
  pairs from rollout_min_pairs on, as the gateway judges while pairs come in: how many pass. The same 20 stages
  against the income-unit model: how many are caught.
Trains the ten models (models.__doc__) under --models unless they are there.
Writes bench/results/rollout.json, each part with the load average at its end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common.config import MODEL_NAME, settings
from serving import client, process
from serving.rollout import read_state, update_state
from serving.rollout_analysis import Limits, breaches, compare_scores, percentile
from testing.rollout_stack import CHALLENGER, TRAIN_SEED, Traffic, rollout_stack, train_variant

RESULTS = Path(__file__).resolve().parent / "results" / "rollout.json"
ROLLOUTS, PAIRS = 20, 300  # shadow stages per case, distinct applicants in each (the default shadow_requests)
QUIET = {"requests": PAIRS, "errors": 0, "error_ratio": 0.0, "p99_ms": None}  # no operational signal
RETRAINS, FRESH = 5, 3  # challengers of the null case (same rows, other train seeds) and of the stricter null
UNIT_FACTOR = 10.0  # income in a unit ten times smaller: a model the clip at 4,000 cannot protect


def models(folder: Path) -> dict[str, Path]:
    """The champion (the session model's rows and seed), RETRAINS models retrained on its rows with train seeds 1..
    (the null case), FRESH models trained on fresh samples of the same population (the stricter null) and one with
    income in a unit ten times smaller (as tests/test_rollout.py's), trained once into `folder`."""
    specs = {"champion": (1.0, TRAIN_SEED, 0), "unit_error": (UNIT_FACTOR, TRAIN_SEED, 0)}
    specs |= {f"retrained-{k}": (1.0, TRAIN_SEED, k) for k in range(1, RETRAINS + 1)}
    specs |= {f"resampled-{k}": (1.0, TRAIN_SEED + k, 0) for k in range(1, FRESH + 1)}
    found = {}
    for name, (factor, seed, train_seed) in specs.items():
        home = folder / name
        pushed = home / "models" / MODEL_NAME
        if not process.versions(pushed):
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            train_variant(home, factor, seed, train_seed)
        found[name] = pushed
    return found


async def _paced(url: str, bodies: list[bytes], rate: float) -> list[float]:
    """Send each body at `rate` per second; the latency (ms) of each answer, which must be a 200."""
    path = f"{url}/v1/models/{MODEL_NAME}:predict"
    start, latencies = time.monotonic(), []

    async def one(http: httpx.AsyncClient, i: int, body: bytes) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        sent = time.perf_counter()
        answer = await http.post(path, content=body, headers={"Content-Type": "application/json"})
        answer.raise_for_status()
        latencies.append((time.perf_counter() - sent) * 1e3)

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as http:
        await asyncio.gather(*(one(http, i, b) for i, b in enumerate(bodies)))
    return latencies


def _rollout(stage: str, weight: int, challenger: str) -> dict[str, Any]:
    return {
        "id": f"bench-{time.time_ns()}",
        "version": CHALLENGER,
        "challenger": challenger,
        "stage": stage,
        "weight": weight,
        "shadow_share": 1.0,
        "controller": {"pid": os.getpid(), "host": os.uname().nodename},
        "history": [],
    }


def mirroring_cost(champion: Path, seconds: float, rate: float, home: Path) -> dict[str, Any]:
    """p99 through the gateway with and without a shadow rollout, each against the model server alone."""
    rows = client.instances(client.generated_rows(int(seconds * rate), seed=3))
    bodies = [json.dumps({"instances": [r]}).encode() for r in rows]
    with rollout_stack(home, champion, champion) as stack:
        s = settings()
        challenger_proc, challenger = process.start_child("serving.server", "--model-dir", str(s.model_dir))
        try:
            asyncio.run(_paced(stack.gateway, bodies[:200], rate))  # warm-up
            figures = {}
            for mode in ("off", "on"):
                if mode == "on":
                    update_state(s.rollout_state, lambda _: _rollout("shadow", 0, challenger))
                    time.sleep(0.5)
                direct = percentile(asyncio.run(_paced(s.model_server_url, bodies, rate)), 0.99)
                through = percentile(asyncio.run(_paced(stack.gateway, bodies, rate)), 0.99)
                figures[mode] = {"direct_p99_ms": direct, "gateway_p99_ms": through, "added_p99_ms": through - direct}
        finally:
            process.stop_child(challenger_proc)
    return {"rate_per_s": rate, "requests": len(bodies), **figures}


def time_to_rollback(champion: Path, challenger: Path, stages: str, home: Path, refuse: bool) -> dict[str, Any]:
    """A rollout of a bad challenger under steady traffic: seconds from its first request to the rollback, and the
    share of client answers it gave."""
    with contextlib.ExitStack() as running:
        stack = running.enter_context(rollout_stack(home, champion, challenger))
        traffic = running.enter_context(Traffic(stack.gateway, rate=80))
        extra: list[str] = []
        if refuse:  # a real model server that refuses every predict call (its body limit is below any request)
            refusing = process.local_server(stack.challenger_dir.parent, "--max-body-bytes", "64")
            extra = ["--challenger-url", running.enter_context(refusing)]
        controller = stack.controller("--stages", stages, "--stage-seconds", "90", *extra)
        first = None
        rolled = None
        while controller.poll() is None and rolled is None:
            judged = httpx.get(f"{stack.gateway}/gateway/rollout", timeout=10).json()
            if first is None and judged["numbers"]["challenger"]["requests"] > 0:
                first = time.monotonic()
            if judged["state"].get("stage") == "rolled_back":
                rolled = time.monotonic()
            time.sleep(0.02)
        out, _ = controller.communicate(timeout=120)
        state = read_state(settings().rollout_state)
    answered = traffic.versions.get(str(CHALLENGER), 0)
    return {
        "stages": stages,
        "verdict": out.strip().splitlines()[-1],
        "stage": state.get("history", [{}])[-1].get("stage"),
        "seconds_first_request_to_rollback": None if first is None or rolled is None else round(rolled - first, 3),
        "client_answers": traffic.ok,
        "failed_client_requests": len(traffic.failures),
        "share_answered_by_challenger": answered / max(traffic.ok, 1),
    }


def shadow_verdicts(champion: Path, challengers: list[Path]) -> dict[str, Any]:
    """ROLLOUTS shadow stages on distinct applicants, the challengers taking turns, judged with the configured limits
    as the gateway judges while pairs come in (every 10 pairs from rollout_min_pairs on); how many passed, and the
    spread of each figure at the stage's end."""
    limits = Limits.of(settings())
    verdicts = []
    with contextlib.ExitStack() as running:
        urls = []
        for i, model in enumerate([champion, *challengers]):
            folder = Path(running.enter_context(tempfile.TemporaryDirectory()))
            shutil.copytree(process.saved_model_dir(model), folder / str(i + 1))
            urls.append(running.enter_context(process.local_server(folder)))
        for i in range(ROLLOUTS):
            rows = client.generated_rows(PAIRS, seed=1000 + i)
            mine, theirs = client.predict(urls[0], rows), client.predict(urls[1 + i % len(challengers)], rows)
            pairs = [
                (float(p["probability"]), float(q["probability"]), int(p["label"]), int(q["label"]))
                for p, q in zip(mine, theirs, strict=True)
            ]
            found: list[str] = []
            for size in range(limits.min_pairs, len(pairs) + 1, 10):
                numbers = {"pairs": size, "champion": QUIET, "challenger": QUIET, **compare_scores(pairs[:size])}
                found = found or breaches(numbers, limits)
            verdicts.append({"breaches": found, **compare_scores(pairs)})
    spread = {
        k: [round(min(v[k] for v in verdicts), 4), round(max(v[k] for v in verdicts), 4)]
        for k in ("psi", "flip_share", "mean_abs_diff")
    }
    return {
        "rollouts": ROLLOUTS,
        "challengers": len(challengers),
        "pairs_each": PAIRS,
        "passed": sum(not v["breaches"] for v in verdicts),
        "min_max_at_the_end": spread,
        "first_breach": next((v["breaches"][0] for v in verdicts if v["breaches"]), None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "credit-risk-rollout-models")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parts = ("null_case_retrained", "null_case_fresh_sample", "unit_error_caught", "mirroring")
    parser.add_argument("--parts", default=",".join((*parts, "unit_error_in_shadow", "errors_in_canary")))
    args = parser.parse_args(argv)
    trained = models(args.models)
    retrained = [trained[f"retrained-{k}"] for k in range(1, RETRAINS + 1)]
    resampled = [trained[f"resampled-{k}"] for k in range(1, FRESH + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        measures = {
            "null_case_retrained": lambda: shadow_verdicts(trained["champion"], retrained),
            "null_case_fresh_sample": lambda: shadow_verdicts(trained["champion"], resampled),
            "unit_error_caught": lambda: shadow_verdicts(trained["champion"], [trained["unit_error"]]),
            "mirroring": lambda: mirroring_cost(trained["champion"], args.seconds, args.rate, work / "mirror"),
            "unit_error_in_shadow": lambda: time_to_rollback(
                trained["champion"], trained["unit_error"], "shadow,canary", work / "unit", refuse=False
            ),
            "errors_in_canary": lambda: time_to_rollback(
                trained["champion"], trained["champion"], "canary", work / "errors", refuse=True
            ),
        }
        # Each part is written as it ends, beside the figures of parts not run this time (their latest).
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        for name in args.parts.split(","):
            results[name] = {**measures[name](), "load_average_at_end": round(os.getloadavg()[0], 1)}
            results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps({name: results[name]}, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
