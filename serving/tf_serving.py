"""`tensorflow_model_server` for air-gapped images: TF Serving's flags and config files, the project's server.

Where the TF Serving binary cannot be had (it is in no Debian or PyPI package), the air-gapped serving base image
installs this as /usr/bin/tensorflow_model_server, so serving/Dockerfile's command line runs unchanged. The config
files are parsed with TF Serving's own protos (tensorflow-serving-api), so a config TF Serving would reject fails
here too (the monitoring and batching messages from serving/tf_serving_config.py). The REST API is served on
--rest_api_port, gRPC on --port and metrics at the monitoring config's path, which must be the server's;
--enable_batching merges concurrent requests with the parameters of --batching_parameters_file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import app, server, tf_serving_config

log = logging.getLogger("tensorflow_model_server")


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def _text_proto(path: Path, message: Any) -> Any:
    try:
        return text_format.Parse(path.read_text(), message)
    except (OSError, text_format.ParseError) as exc:
        raise SystemExit(f"tensorflow_model_server: cannot read {path}: {exc}") from None


def parse(argv: list[str]) -> tuple[argparse.Namespace, str, Path]:
    """TF Serving's flags; returns them with the one model's name and base path."""
    parser = argparse.ArgumentParser(prog="tensorflow_model_server", allow_abbrev=False)
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest_api_port", type=int, default=0)
    parser.add_argument("--model_config_file", type=Path)
    parser.add_argument("--model_name", default="default")
    parser.add_argument("--model_base_path", type=Path)
    parser.add_argument("--monitoring_config_file", type=Path)
    parser.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    parser.add_argument("--batching_parameters_file", type=Path)
    parser.add_argument("--file_system_poll_wait_seconds", type=int, default=1)
    args = parser.parse_args(argv)
    if not args.rest_api_port:
        parser.error("--rest_api_port is required: this server always serves the REST API")
    if args.batching_parameters_file:
        _text_proto(args.batching_parameters_file, tf_serving_config.BatchingParameters())
    if args.monitoring_config_file:
        monitoring = _text_proto(args.monitoring_config_file, tf_serving_config.MonitoringConfig())
        if monitoring.prometheus_config.path not in ("", app.METRICS_PATH):
            parser.error(f"prometheus_config.path must be {app.METRICS_PATH} here")
    if args.model_config_file:
        config = _text_proto(args.model_config_file, model_server_config_pb2.ModelServerConfig())
        models = list(config.model_config_list.config)
        if len(models) != 1:
            parser.error(f"{args.model_config_file} must name exactly one model, it names {len(models)}")
        return args, models[0].name, Path(models[0].base_path)
    if args.model_base_path is None:
        parser.error("either --model_config_file or --model_base_path is required")
    return args, args.model_name, args.model_base_path


def main(argv: list[str] | None = None) -> None:
    args, name, base_path = parse(sys.argv[1:] if argv is None else argv)
    server.main(
        [
            *("--host", "0.0.0.0", "--port", str(args.rest_api_port)),  # all interfaces: inside a container
            *("--model-name", name, "--model-dir", str(base_path)),
            *("--poll-seconds", str(args.file_system_poll_wait_seconds)),
            *("--grpc-port", str(args.port)),
            *(("--enable-batching",) if args.enable_batching else ()),
            *(
                ("--batching-parameters-file", str(args.batching_parameters_file))
                if args.batching_parameters_file
                else ()
            ),
        ]
    )


if __name__ == "__main__":
    main()
