"""Beam's portable services on this machine: a job service and an external SDK worker pool, on 127.0.0.1.

This is the protocol Flink, Spark and Dataflow runner v2 speak: the driver submits the pipeline to a job
endpoint (``--runner=PortableRunner --job_endpoint=...``), and the runner asks an external worker pool
(``--environment_type=EXTERNAL --environment_config=HOST:PORT``) to start SDK workers, separate processes that
run the DoFns and talk to the runner over gRPC. Here the job service is Beam's own ``LocalJobServicer`` (it
runs the job with Beam's FnApiRunner) and the pool is Beam's ``BeamFnExternalWorkerPoolServicer`` in
process mode; curating through them runs songcorpus's DoFns in processes that share nothing with the driver
but the files.

Run each in its own process (``--port 0`` picks a free port and ``--port-file`` records it):

  python -m songcorpus.pipelines.engines.beam_services job-service --port 8099
  python -m songcorpus.pipelines.engines.beam_services worker-pool --port 50000

or use :func:`portable_services` (tests do), which starts both, waits for their ports and stops them.

Why not Beam's own ``local_job_service_main`` / ``worker_pool_main``: both listen on every interface
(``[::]``), the job service's FnApiRunner also opens its control, data, state and logging servers there, and
the pool starts its workers as ``python`` from ``PATH`` (which may not be this environment's). These launchers
rewrite every listening address of their process to 127.0.0.1 and put this interpreter first on ``PATH``.
Limits (Beam 2.77): the local job service runs one SDK worker per job (its FnApiRunner is built without the
``direct_num_workers`` option), so this path checks the protocol and the process separation, not speed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOOPBACK = "127.0.0.1"


def _bind_loopback_only() -> None:
    """Every gRPC server this process makes listens on 127.0.0.1, whatever address Beam asks for."""
    import grpc

    make_server = grpc.server

    def loopback_server(*args, **kwargs):  # noqa: ANN002, ANN003 - grpc.server's own signature
        server = make_server(*args, **kwargs)
        add_port = server.add_insecure_port

        def add_insecure_port(address: str) -> int:
            port = address.rsplit(":", 1)[1]
            return add_port(f"{LOOPBACK}:{port}")

        server.add_insecure_port = add_insecure_port
        return server

    grpc.server = loopback_server


def _exit_on_sigterm() -> None:
    """SIGTERM ends the service through ``sys.exit``, so Beam's atexit hook stops the pool's worker processes."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def _write_port(port_file: str | None, port: int) -> None:
    if port_file:
        tmp = f"{port_file}.tmp"
        Path(tmp).write_text(str(port))
        os.replace(tmp, port_file)


def serve_job_service(port: int, port_file: str | None) -> None:
    """Beam's LocalJobServicer on 127.0.0.1:port, until killed."""
    _bind_loopback_only()
    _exit_on_sigterm()
    from apache_beam.runners.portability import local_job_service

    servicer = local_job_service.LocalJobServicer()
    bound = servicer.start_grpc_server(port)
    _write_port(port_file, bound)
    try:
        while True:
            time.sleep(3600)
    finally:
        servicer.stop()


def serve_worker_pool(port: int, port_file: str | None) -> None:
    """Beam's external worker pool (one SDK worker process per requested worker) on 127.0.0.1:port."""
    _bind_loopback_only()
    _exit_on_sigterm()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

    address, server = BeamFnExternalWorkerPoolServicer.start(use_process=True, port=port)
    _write_port(port_file, int(address.rsplit(":", 1)[1]))
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop(0)


def _start(kind: str, folder: Path, timeout_s: float) -> tuple[subprocess.Popen, int]:
    port_file = folder / f"{kind}.port"
    log = open(folder / f"{kind}.log", "wb")  # noqa: SIM115 - the child writes it for its whole life
    proc = subprocess.Popen([sys.executable, "-m", "songcorpus.pipelines.engines.beam_services", kind, "--port", "0",
                             "--port-file", str(port_file)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the Beam {kind} did not start; its log: {(folder / f'{kind}.log').read_text()[-2000:]}")
        time.sleep(0.2)
    return proc, int(port_file.read_text())


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def portable_services(folder: Path, timeout_s: float = 180.0) -> Iterator[list[str]]:
    """Start a job service and a worker pool (two processes, logs in ``folder``); yield the Beam options that
    send a pipeline through them; stop both (and so the pool's workers) at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    job, job_port = _start("job-service", folder, timeout_s)
    try:
        pool, pool_port = _start("worker-pool", folder, timeout_s)
        try:
            yield ["--runner=PortableRunner", f"--job_endpoint={LOOPBACK}:{job_port}",
                   "--environment_type=EXTERNAL", f"--environment_config={LOOPBACK}:{pool_port}"]
        finally:
            _stop(pool)
    finally:
        _stop(job)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service", choices=["job-service", "worker-pool"])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (see --port-file)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args(argv)
    serve = serve_job_service if args.service == "job-service" else serve_worker_pool
    serve(args.port, args.port_file)


if __name__ == "__main__":
    main()
