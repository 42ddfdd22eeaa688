"""Which SavedModel version answers, with TF Serving's "latest" policy and its load-then-swap behaviour.

A poller watches `<base_dir>/<version>/saved_model.pb`. The newest version is loaded and warmed up beside the live
one and swapped in only once it answers; a version that fails to load leaves the live one serving and is not
retried until its files change (a copy still under way). Statuses mirror TF Serving's GetModelStatus (`LOADING`,
`AVAILABLE`, `END`).
Every signature that takes the raw features by name is served (`serving_default`, `explain`); `serving_examples`
(serialized tf.Examples, for TFMA) is not.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from common import features
from serving import metrics, process
from serving.inputs import BadRequest
from tfx_modules.evaluation import saved_model

log = logging.getLogger(__name__)
SIGNATURE = "serving_default"


class NotFound(Exception):
    """Unknown model name or version (TF Serving's NOT_FOUND, HTTP 404)."""


@dataclass(frozen=True)
class Signature:
    fn: Any  # the ConcreteFunction
    inputs: dict[str, tf.DType]

    def __call__(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: t.numpy() for name, t in self.fn(**columns).items()}


@dataclass(frozen=True)
class LoadedModel:
    version: int
    path: Path
    signatures: dict[str, Signature]  # by name; the default one under SIGNATURE
    signature_defs: dict[str, Any]  # SignatureDefMap as TF Serving prints it
    owner: Any  # the loaded object: the signatures' variables live as long as it does

    def signature(self, name: str) -> Signature:
        """A signature by its REST name ("" or absent means the default), or BadRequest with TF Serving's message."""
        try:
            return self.signatures[name or SIGNATURE]
        except KeyError:
            raise BadRequest(f'Serving signature name: "{name}" not found in signature def') from None

    def unsupported(self, name: str, method: str) -> BadRequest:
        """TF Serving's error for a `method` ("classify", "regress") call on signature `name`: only predict
        signatures are served here, and TF Serving answers a classify or regress call on one so."""
        signature_def = self.signature_defs.get(name or SIGNATURE)
        if signature_def is None:
            return BadRequest(f'Serving signature name: "{name}" not found in signature def')
        kind = {"classify": "classification", "regress": "regression"}.get(method, method)
        was = signature_def.get("method_name", "")
        if was == f"tensorflow/serving/{method}":
            return BadRequest(f"{kind} signatures (tensorflow/serving/{method}) are not served by this server")
        return BadRequest(f"Expected {kind} signature method_name to be tensorflow/serving/{method}. Was: {was}")


@dataclass
class VersionState:
    state: str
    error_code: str = "OK"
    error_message: str = ""

    def as_json(self, version: int) -> dict[str, Any]:
        return {
            "version": str(version),
            "state": self.state,
            "status": {"error_code": self.error_code, "error_message": self.error_message},
        }


def _fingerprint(path: Path) -> tuple[int, int, int]:
    """Number of files, newest change, total size of a version's tree: a version that failed to load while it was
    still being copied (saved_model.pb there, variables not yet whole) is tried again once the copy goes on."""
    stats = [p.stat() for p in path.rglob("*") if p.is_file()]
    return len(stats), max(s.st_mtime_ns for s in stats), sum(s.st_size for s in stats)


def _signature_defs(path: Path) -> dict[str, Any]:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    graph = next(g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags)
    return {
        name: json_format.MessageToDict(sig, including_default_value_fields=True, preserving_proto_field_name=True)
        for name, sig in graph.signature_def.items()
    }


def _warmup_columns(inputs: dict[str, tf.DType]) -> dict[str, np.ndarray]:
    return {
        name: np.array([""], object) if dtype == tf.string else np.zeros([1], dtype.as_numpy_dtype)
        for name, dtype in inputs.items()
    }


def load(path: Path, version: int) -> LoadedModel:
    """Load and warm up one version; raises on any problem so the caller can keep the live one."""
    obj = saved_model.load(path)
    if SIGNATURE not in obj.signatures:
        raise ValueError(f"SavedModel at {path} has no '{SIGNATURE}' signature")
    signatures = {}
    for name, fn in obj.signatures.items():
        signature = Signature(fn, {key: spec.dtype for key, spec in fn.structured_input_signature[1].items()})
        if set(signature.inputs) <= set(features.FEATURE_NAMES):  # raw JSON features (not tf.Examples)
            signature(_warmup_columns(signature.inputs))
            signatures[name] = signature
    return LoadedModel(version, path, signatures, _signature_defs(path), obj)


@dataclass
class ModelStore:
    name: str
    base_dir: Path
    registry: metrics.Registry
    poll_seconds: float = 1.0
    _live: LoadedModel | None = None
    _states: dict[int, VersionState] = field(default_factory=dict)
    _failed: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def live(self) -> LoadedModel | None:
        return self._live

    def get(self, name: str, version: int | None) -> LoadedModel:
        """The servable for a request, or NotFound with TF Serving's message."""
        live = self._live
        if name != self.name or live is None or (version is not None and version != live.version):
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise NotFound(f"Servable not found for request: {spec}")
        return live

    def status(self, name: str, version: int | None) -> list[dict[str, Any]]:
        states = dict(self._states)
        if name != self.name or not states:
            raise NotFound(f"Could not find any versions of model {name}")
        if version is not None:
            if version not in states:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [states[version].as_json(version)]
        return [states[v].as_json(v) for v in sorted(states, reverse=True)]

    def poll_once(self) -> None:
        """Serve the newest loadable version; called by the poller, and once before serving starts.

        A live version whose folder disappears keeps answering until another one has loaded (a rollback has no
        gap), and is unloaded when none can be.
        """
        found = process.versions(self.base_dir)
        live = self._live
        if live is not None and live.version not in found:
            self._states[live.version] = VersionState("END")
        for version in sorted(found, reverse=True):
            if live is not None and version == live.version:
                return  # nothing newer loads: keep it
            if self._try_version(version, found[version]):
                return
        if live is not None and live.version not in found:
            self._live = None
            self.registry.set(metrics.MODEL_VERSION, {"model_name": self.name}, 0)

    def _try_version(self, version: int, path: Path) -> bool:
        try:
            fingerprint = _fingerprint(path)
        except OSError:
            return False  # vanished between listing and stat
        if self._failed.get(version) == fingerprint:
            return False  # failed before and unchanged since
        return self._try_load(version, path, fingerprint)

    def _try_load(self, version: int, path: Path, fingerprint: tuple[int, int, int]) -> bool:
        self._states[version] = VersionState("LOADING")
        start = time.perf_counter()
        try:
            model = load(path, version)
        except Exception as exc:  # any load failure keeps the live version, as TF Serving does
            log.warning("version %s of %s failed to load: %s", version, self.name, exc)
            self._failed[version] = fingerprint
            self._states[version] = VersionState("END", "UNKNOWN", f"Failed to load version {version}: {exc}")
            self.registry.inc(metrics.LOAD_ATTEMPT_COUNT, {"model_path": str(path), "status": "fail"})
            return False
        self.registry.inc(metrics.LOAD_ATTEMPT_COUNT, {"model_path": str(path), "status": "success"})
        self.registry.inc(metrics.LOAD_LATENCY, {"model_path": str(path)}, round((time.perf_counter() - start) * 1e6))
        previous, self._live = self._live, model
        self._failed.pop(version, None)
        self._states[version] = VersionState("AVAILABLE")
        if previous is not None and previous.version != version:
            self._states[previous.version] = VersionState("END")
        self.registry.set(metrics.MODEL_VERSION, {"model_name": self.name}, version)
        log.info("serving version %s of %s", version, self.name)
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must outlive a bad directory listing
                log.exception("model poll failed")
