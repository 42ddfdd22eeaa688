"""Run the local TF Serving stand-in: `python -m serving.server --model-dir <dir> --port <port>`.

It binds the socket itself so `--port 0` works, and prints the address it listens on (tests read that line).
The newest version is loaded before the first request is accepted. `--grpc-port` adds TF Serving's gRPC API on the
same models (serving/grpc_server.py); `--enable-batching` merges concurrent predict calls of both protocols as
TF Serving's `--enable_batching` does, with the parameters of `--batching-parameters-file` (serving/batching.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from common.config import MODEL_NAME, settings
from serving import batching, grpc_server, metrics, process
from serving.app import build_app
from serving.model_store import ModelStore

BATCHING_CONFIG = Path(__file__).with_name("batching.config")


def main(argv: list[str] | None = None) -> None:
    s = settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=s.serving_dir, help="holds <version>/saved_model.pb")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--poll-seconds", type=float, default=s.serving_poll_seconds)
    parser.add_argument("--max-body-bytes", type=int, default=s.serving_max_body_bytes, help="REST and gRPC")
    parser.add_argument("--grpc-port", type=int, default=None, help="serve gRPC too (0: any free port)")
    parser.add_argument("--enable-batching", action="store_true")
    parser.add_argument("--batching-parameters-file", type=Path, default=BATCHING_CONFIG)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    registry = metrics.Registry()
    store = ModelStore(args.model_name, args.model_dir.resolve(), registry, args.poll_seconds)
    store.poll_once()
    # TF Serving's --file_system_poll_wait_seconds=0: load once at start, never poll (the baked-in image's way).
    batcher = None
    if args.enable_batching:
        batcher = batching.Batcher(batching.Parameters.read(args.batching_parameters_file), registry)
    app = build_app(store, registry, args.max_body_bytes, poll=args.poll_seconds > 0, batcher=batcher)
    live = store.live
    version = live.version if live else "none"
    ready = f"{process.READY_PREFIX}{args.model_name} version {version} from {args.model_dir}"
    grpc = None
    if args.grpc_port is not None:
        address = f"{args.host}:{args.grpc_port}"
        grpc, port = grpc_server.start(store, registry, batcher, address, args.max_body_bytes)
        ready += f" grpc {args.host}:{port}"
    try:
        process.serve(app, args.host, args.port, ready)
    finally:
        if grpc is not None:
            grpc.stop(grace=5).wait()
        if batcher is not None:
            batcher.stop()


if __name__ == "__main__":
    main()
