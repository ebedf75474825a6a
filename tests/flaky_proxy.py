"""A TCP proxy on 127.0.0.1 that can drop connections: the object store that fails mid-upload, for fault tests.

``FlakyProxy(upstream_port)`` forwards every connection to the local S3 server. While ``drop`` is set to a byte
string, a connection whose client sends an HTTP request line containing it (e.g. ``b"PUT /bucket/out/shards/"``)
is reset at once, after part of the request has gone through: to the client, the store vanished mid-upload.
Only addresses on this machine are used; the threads stop with :meth:`close`.
"""

from __future__ import annotations

import socket
import struct
import threading


class FlakyProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.drop: bytes | None = None
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="flaky-proxy")
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client and self.drop is not None and self.drop in data:
                    self.dropped += 1
                    dst.sendall(data[: len(data) // 2])  # part of the upload got through
                    for s in (src, dst):  # then both ends see a reset, as when a store drops the connection
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)
