"""Run the local TF Serving stand-in: `python -m serving.server --model-dir <dir> --port <port>`.

It binds the socket itself so `--port 0` works, and prints the address it listens on (tests read that line).
The newest version is loaded before the first request is accepted.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from common.config import MODEL_NAME, settings
from serving import metrics, process
from serving.app import build_app
from serving.model_store import ModelStore


def main(argv: list[str] | None = None) -> None:
    s = settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=s.serving_dir, help="holds <version>/saved_model.pb")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--poll-seconds", type=float, default=s.serving_poll_seconds)
    parser.add_argument("--max-body-bytes", type=int, default=s.serving_max_body_bytes)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    registry = metrics.Registry()
    store = ModelStore(args.model_name, args.model_dir.resolve(), registry, args.poll_seconds)
    store.poll_once()
    # TF Serving's --file_system_poll_wait_seconds=0: load once at start, never poll (the baked-in image's way).
    app = build_app(store, registry, args.max_body_bytes, poll=args.poll_seconds > 0)
    live = store.live
    version = live.version if live else "none"
    ready = f"{process.READY_PREFIX}{args.model_name} version {version} from {args.model_dir}"
    process.serve(app, args.host, args.port, ready)


if __name__ == "__main__":
    main()
