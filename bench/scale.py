"""How the pipeline's and the drift gate's cost grows with data: 32k, 320k and 3.2M generated rows.

    python -m bench.scale [--sizes 32581,325810,3258100]

Per size, each in a fresh process with its peak memory (the whole process tree): the drift gate (a batch of N rows
against a baseline of N rows: read, TFDV statistics and anomalies, drift, report) and the whole pipeline
(ExampleGen .. Pusher, `make train`'s code) on N seeded generated rows. Before that, whether the generator still
produces realistic rows at that size: the drift gate's own distances between the generated rows and the real data.
Targets: growth no worse than linear; 3.2M rows through the pipeline <= 20 min with peak memory <= 8 GB; the gate
on 3.2M rows <= 60 s. Writes bench/results/scale.json after each size, and bench/results/scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.pipeline_process import peak, run_measured, standalone
from common import config
from data.fetch import fetch
from data.generate import REAL_ROWS, generate
from tfx_modules.data_gate import dataset

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
PLOT = RESULTS.with_suffix(".png")
SIZES = (REAL_ROWS, 10 * REAL_ROWS, 100 * REAL_ROWS)
PIPELINE_TARGET_S = 20 * 60
PIPELINE_TARGET_MB = 8 * 1024
GATE_TARGET_S = 60.0
GATE = """
import json, sys, tempfile
from pathlib import Path
from bench.drift_gate import gate
with tempfile.TemporaryDirectory(prefix="bench_scale_gate_") as folder:
    print(json.dumps(gate(Path(folder), int(sys.argv[1]))))
"""


def realism(generated, real) -> dict:
    """The drift gate's distances (JSD numeric, L-infinity categorical) of generated rows from the real data, with
    the default thresholds: a generator that drifts from reality at some size would show here."""
    from tfx_modules.data_gate import validation

    found = validation.drift(
        validation.drift_statistics(generated),
        validation.drift_statistics(real),
        config.default_drift_thresholds(),
    )
    return {
        "max_distance": round(max(d["value"] for d in found.values()), 4),
        "features_over_threshold": sorted(name for name, d in found.items() if d["drifted"]),
        "default_rate": round(float(generated["loan_status"].mean()), 4),
        "real_default_rate": round(float(real["loan_status"].mean()), 4),
    }


def one_size(rows: int, folder: Path, real, pipeline: bool) -> dict:
    frame = generate(rows, seed=7)
    data = dataset.write_canonical(frame, folder / f"rows_{rows}.csv")
    result = {"rows": rows, "realism": realism(frame, real) if real is not None else None}
    del frame
    stdout, seconds, samples = run_measured(["-c", GATE, str(rows)])
    result["gate"] = {**json.loads(stdout.strip().splitlines()[-1]), "peak_memory_mb": round(peak(samples) / 2**20)}
    result["gate"]["process_seconds"] = round(seconds, 1)
    result["pipeline"] = standalone(folder / f"home_{rows}", data) if pipeline else None
    return result


def growth(points: list[dict], key: str) -> list[float]:
    """Cost per row relative to the smallest size (1.0 everywhere = linear; above 1 = super-linear)."""
    first = points[0]
    return [round((p[key] / p["rows"]) / (first[key] / first["rows"]), 2) for p in points]


def summarize(results: dict) -> None:
    sizes = results["sizes"]
    piped = [{"rows": s["rows"], "seconds": s["pipeline"]["seconds"]} for s in sizes if s["pipeline"]]
    gated = [{"rows": s["rows"], "seconds": s["gate"]["seconds"]} for s in sizes]
    results["growth_per_row"] = {"pipeline": growth(piped, "seconds"), "gate": growth(gated, "seconds")}
    largest = next(s for s in reversed(sizes) if s["pipeline"])
    results["targets"] = {
        "pipeline_rows": largest["rows"],
        "pipeline_seconds": largest["pipeline"]["seconds"],
        "pipeline_target_seconds": PIPELINE_TARGET_S,
        "pipeline_peak_memory_mb": largest["pipeline"]["peak_memory_mb"],
        "pipeline_target_memory_mb": PIPELINE_TARGET_MB,
        "gate_rows": sizes[-1]["rows"],
        "gate_seconds": sizes[-1]["gate"]["seconds"],
        "gate_target_seconds": GATE_TARGET_S,
    }


def plot(results: dict) -> None:
    """Wall time and peak memory against rows, log-log, with a linear line through the smallest size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = results["sizes"]
    piped = [s for s in sizes if s["pipeline"]]
    figure, (times, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for label, chosen, values in (
        ("pipeline", piped, [s["pipeline"]["seconds"] for s in piped]),
        ("drift gate", sizes, [s["gate"]["seconds"] for s in sizes]),
    ):
        rows = [s["rows"] for s in chosen]
        times.plot(rows, values, "o-", label=label)
        times.plot(rows, [values[0] * r / rows[0] for r in rows], ":", color="grey")
    times.set(xscale="log", yscale="log", xlabel="rows", ylabel="wall time (s)", title="time (dotted: linear)")
    times.legend()
    for label, chosen, values in (
        ("pipeline", piped, [s["pipeline"]["peak_memory_mb"] for s in piped]),
        ("drift gate", sizes, [s["gate"]["peak_memory_mb"] for s in sizes]),
    ):
        memory.plot([s["rows"] for s in chosen], values, "o-", label=label)
    memory.set(xscale="log", xlabel="rows", ylabel="peak memory (MB)", title="peak memory (process tree)")
    memory.legend()
    figure.suptitle(f"{results['machine']['cpus']} cores, load average {results['machine']['load_average_1min']}")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated row counts")
    parser.add_argument("--pipeline-max-rows", type=int, help="above this size, time the drift gate only")
    args = parser.parse_args()
    source = fetch(None, config.PROJECT_ROOT / "data" / "raw", or_generate=True)
    real = dataset.read_batch(source) if source.name == "credit_risk_dataset.csv" else None
    results = {
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 1)},
        "time": time.time(),
        "pipeline_max_rows": args.pipeline_max_rows,
        "sizes": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as folder:
        for rows in sorted(int(size) for size in args.sizes.split(",")):
            pipeline = args.pipeline_max_rows is None or rows <= args.pipeline_max_rows
            results["sizes"].append(one_size(rows, Path(folder), real, pipeline))
            results["machine"]["load_average_1min_now"] = round(os.getloadavg()[0], 1)
            summarize(results)
            RESULTS.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(results["sizes"][-1]), flush=True)
    plot(results)
    print(json.dumps({k: results[k] for k in ("growth_per_row", "targets")}, indent=2))


if __name__ == "__main__":
    main()
