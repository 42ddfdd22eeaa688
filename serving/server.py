"""Run the local TF Serving stand-in: `python -m serving.server --model-dir <dir> --port <port>`.

It binds the socket itself so `--port 0` works, and prints the address it listens on (tests read that line).
The newest version is loaded before the first request is accepted.
"""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

import uvicorn

from serving import metrics
from serving.app import build_app
from serving.model_store import ModelStore
from tfx_modules.config import MODEL_NAME, settings


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
    app = build_app(store, registry, args.max_body_bytes)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on such sockets; without it keep-alive requests wait
    # ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    # Listen before announcing the address: the kernel queues connections until uvicorn accepts them, so a client
    # that reads the line and connects at once is never refused.
    sock.listen(config.backlog)
    host, port = sock.getsockname()[:2]
    live = store.live
    print(
        f"serving {args.model_name} version {live.version if live else 'none'} from {args.model_dir} "
        f"on http://{host}:{port}",
        flush=True,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
