"""A Beam job server for the portable runner whose jobs run each stage on `--direct_num_workers` SDK workers, as
Flink's and Spark's job servers spread a stage over `--parallelism` task slots.

    python -m testing.beam_job_server --port=8099

Beam's own local job service (`local_job_service_main`, and `--job_endpoint=embed`) always asks the environment for
one worker: its FnApiRunner takes the worker count from the options only when it runs a Pipeline object itself, not
a job's proto. This server is that service with the job type it accepts for the purpose (`beam_job_type`), not a
patch: the count comes from the job's own options, and each stage's bundles are split over that many workers.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import local_job_service
from apache_beam.runners.portability.fn_api_runner import fn_runner


class ParallelJob(local_job_service.BeamJob):
    """A job whose stages run on as many SDK workers as its `--direct_num_workers` asks (1 when unset)."""

    def _invoke_runner(self) -> fn_runner.RunnerResult:
        self.set_state(beam_job_api_pb2.JobState.RUNNING)
        options = self.pipeline_options()
        runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
        # the attribute FnApiRunner.run_pipeline sets from the same option (which reaches a job server as text)
        runner._num_workers = max(int(options.view_as(DirectOptions).direct_num_workers or 1), 1)
        return runner.run_via_runner_api(self._pipeline_proto, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the Job API's port on localhost")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    servicer = local_job_service.LocalJobServicer(beam_job_type=ParallelJob)
    servicer.start_grpc_server(args.port)
    try:
        threading.Event().wait()
    finally:
        servicer.stop()


if __name__ == "__main__":
    main()
