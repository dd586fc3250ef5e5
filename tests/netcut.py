"""A TCP forwarder whose link can be cut for a while: one client's network outage.

Point one client (a worker, through ``ORCH_DRIVE_ROOT_URL``) at :attr:`NetCut.url`
and the local Drive server stays reachable for everyone else. :meth:`NetCut.cut`
resets every open connection and, until the time is up, resets new ones as soon as
they are accepted (what a client sees when its network is gone). The Host header
passes unchanged, so resumable-upload session URLs come back through the forwarder.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class NetCut:
    """Forward 127.0.0.1:<port> to ``host:port``; :meth:`cut` it for some seconds."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._until = 0.0
        self.refused = 0  # connections reset while cut
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, seconds: float) -> None:
        """Reset every connection now and every new one for ``seconds``."""
        with self._lock:
            self._until = time.monotonic() + seconds
            conns, self._open = list(self._open), set()
        for conn in conns:
            _reset(conn)

    def is_cut(self) -> bool:
        return time.monotonic() < self._until

    def close(self) -> None:
        self.cut(0)
        with contextlib.suppress(OSError):
            self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.is_cut():
                self.refused += 1
                _reset(client)
                continue
            try:
                up = socket.create_connection(self.upstream, timeout=10)
                up.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open.update((client, up))
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._open.discard(src)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a lost network's peer would see it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
