"""A real TCP server that counts the connections it accepts and never answers one.

It runs in a thread, not in the test's event loop, so it counts a connection even when the
code under test blocks the loop (a synchronous fetch would)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class SilentServer:
    port: int
    accepted: int = 0
    _held: list[socket.socket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/schema.json"


@contextmanager
def silent_server() -> Iterator[SilentServer]:
    """Listen on 127.0.0.1:0; accept, count and hold every connection, answer nothing."""
    listener = socket.create_server(("127.0.0.1", 0))
    # A short accept timeout lets the thread see the stop flag; it is not a readiness wait
    # (the socket listens before this function yields).
    listener.settimeout(0.05)
    server = SilentServer(port=listener.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            server.accepted += 1
            server._held.append(conn)

    thread = threading.Thread(target=serve, name="silent-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in server._held:
            conn.close()
        listener.close()
