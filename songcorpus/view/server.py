"""Serving the view: bind the port (127.0.0.1 unless told), say the URL in one line, run uvicorn until Ctrl-C.

Reads nothing itself (the app reads the corpus); writes one line to stdout with the URL, and one line to stderr when
the host is not loopback (the corpus becomes visible to the network). The socket is bound here, before uvicorn
starts, so a busy port is one clear line (:class:`ViewError`, exit 2) and ``--port 0`` takes a free port that is
then printed. uvicorn's own access log stays off; Ctrl-C stops the server cleanly and the corpus is closed.
:func:`running` serves the same app from a thread, for tests and benchmarks.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from songcorpus.view import DEFAULT_HOST, DEFAULT_PORT
from songcorpus.view.app import create_app
from songcorpus.view.corpus import Corpus
from songcorpus.view.errors import ViewError
from songcorpus.view.evaluations import Evaluation


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ViewError(f"port {port} on {host} is in use (another `songcorpus view`?); choose another with "
                            f"--port N, or --port 0 for any free port") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES) or isinstance(exc, socket.gaierror):
            raise ViewError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); give a host address of this "
                            f"machine with --host, and a port above 1023 with --port") from None
        raise
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(corpus: Corpus, evals: list[Evaluation], host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          announce: Callable[[str], None] = print) -> None:
    """Serve until interrupted; the socket is bound before anything is announced."""
    import uvicorn

    loopback = is_loopback(host)
    sock = bind(host, port)
    if not loopback:
        print(f"songcorpus view: listening on {host}: the corpus {corpus.name} is visible to the network, to "
              f"anyone who can reach this machine", file=sys.stderr)
    app = create_app(corpus, evals, loopback=loopback)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    server = uvicorn.Server(config)
    announce(f"songcorpus view: {corpus.name} at {url_of(sock)} (read-only; Ctrl-C stops it)")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def running(corpus: Corpus, evals: list[Evaluation], host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """The app served from a thread of this process while the block runs (tests, benchmarks, notebooks); yields its
    base URL (no trailing slash) once it accepts connections, and stops it on exit."""
    import threading
    import time

    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(create_app(corpus, evals, loopback=is_loopback(host)), log_level="warning",
                                           access_log=False, lifespan="off", server_header=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="songcorpus-view")
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError("the view's server did not start within 60 s")
        yield url_of(sock).rstrip("/")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
