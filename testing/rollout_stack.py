"""A local stack for rollouts (tests, bench/rollout.py): a live model server, the gateway, a challenger version
pushed beside the champion, steady traffic of distinct applicants, and the rollout controller as a process."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from common.config import MODEL_NAME, PROJECT_ROOT, settings
from serving import client, process
from testing.harness import free_port
from testing.loadgen import SteadyLoad

CHAMPION, CHALLENGER = 1, 2  # the versions the stack serves and rolls out
TRAIN_ROWS, TRAIN_SEED = 3000, 7  # as tests/conftest.py's trained_model: the same rows give a null-case challenger


def train_variant(home: Path, income_factor: float = 1.0, seed: int = TRAIN_SEED, train_seed: int = 0) -> Path:
    """The pipeline's pushed model dir after training on the session model's rows (another `seed`: a fresh sample
    of the same population; another `train_seed`: the same rows, the trees' own randomness), income rescaled (10:
    a unit ten times smaller, consistently in train and eval, so the model is blessed offline and skewed live)."""
    from data.generate import generate  # pandas: ML environment only
    from tfx_modules.data_gate import dataset

    frame = generate(TRAIN_ROWS, seed=seed)
    if income_factor != 1.0:
        frame["person_income"] = (frame["person_income"] * income_factor).round().clip(lower=1).astype(int)
    data = dataset.write_canonical(frame, home / "train.csv")
    env = {
        **process.server_env(),
        "CREDIT_RISK_HOME": str(home),
        "CREDIT_RISK_TRAIN_SEED": str(train_seed),
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [sys.executable, "-m", "tfx_modules.train", "--data", str(data)]
    result = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"training failed: {result.stderr[-3000:]}")
    return home / "models" / MODEL_NAME


@dataclass
class Traffic(SteadyLoad):
    """One applicant per request (the gateway names each), from one thread at about `rate` per second; counts
    answers by the version that gave them, and failures. `paused` holds it (a gateway being restarted)."""

    body: bytes = b""  # unused: each request carries the next generated row
    rate: float = 60.0
    versions: Counter[str] = field(default_factory=Counter)
    paused: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        rows = client.instances(client.generated_rows(2000, seed=11))
        path = f"/v1/models/{MODEL_NAME}:predict"
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for i in range(10**9):
                if self._stop.is_set():
                    return
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                body = json.dumps({"instances": [rows[i % len(rows)]]})
                try:
                    answer = http.post(path, content=body, headers={"Content-Type": "application/json"})
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if answer.status_code == 200:
                    self.ok += 1
                    self.versions[answer.headers.get("x-model-version", "?")] += 1
                else:
                    self.failures.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                time.sleep(1.0 / self.rate)


@dataclass
class Stack:
    home: Path
    gateway: str
    gateway_port: int
    gateway_proc: subprocess.Popen
    challenger_dir: Path

    def restart_gateway(self) -> None:
        """Start the gateway again on its port (after a kill -9)."""
        self.gateway_proc, _ = start_gateway(self.gateway_port, self.home)

    def controller(self, *args: str) -> subprocess.Popen[str]:
        """`python -m serving.rollout_controller <challenger> <args>`, its output piped."""
        cmd = [sys.executable, "-m", "serving.rollout_controller", str(self.challenger_dir), *args]
        return subprocess.Popen(
            cmd, env=process.server_env(), cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )


def start_gateway(port: int, home: Path) -> tuple[subprocess.Popen, str]:
    s = settings()
    upstream = s.model_server_url
    log = ("--prediction-log", str(home / "predictions"))
    return process.start_child("serving.gateway", "--upstream", upstream, "--reload-seconds", "0.1", *log, port=port)


@contextlib.contextmanager
def rollout_stack(home: Path, champion: Path, challenger: Path) -> Iterator[Stack]:
    """Champion (a Pusher-layout model dir or a SavedModel) live behind the gateway, challenger pushed as version
    CHALLENGER; the environment points every setting at `home` while the stack runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDIT_RISK_HOME", str(home))
        s = settings()
        model_dir = s.model_dir
        for version, source in ((CHAMPION, champion), (CHALLENGER, challenger)):
            shutil.copytree(process.saved_model_dir(source), model_dir / str(version))
        shutil.copytree(model_dir / str(CHAMPION), s.serving_dir / str(CHAMPION))
        server, server_url = process.start_child("serving.server", "--model-dir", str(s.serving_dir))
        port = free_port()
        patch.setenv("CREDIT_RISK_MODEL_SERVER_URL", server_url)
        patch.setenv("CREDIT_RISK_SERVING_URL", f"http://127.0.0.1:{port}")
        patch.setenv("CREDIT_RISK_PROMETHEUS_PORT", str(free_port()))  # none: no live-drift alert holds a stage
        stack = Stack(home, f"http://127.0.0.1:{port}", port, start_gateway(port, home)[0], model_dir / str(CHALLENGER))
        try:
            yield stack
        finally:
            process.stop_child(stack.gateway_proc)
            process.stop_child(server)
