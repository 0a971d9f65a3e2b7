"""A UDP relay between a client and a server that can move to a new source port
mid-connection, as a NAT rebinding does: the server sees its peer's address change."""

from __future__ import annotations

import select
import socket
import threading
from types import TracebackType


class RebindingRelay:
    """Forward datagrams from a local port to ``server``; :meth:`rebind` sends the
    client's next datagrams from a fresh source port."""

    def __init__(self, server: tuple[str, int]) -> None:
        self._server = server
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(("127.0.0.1", 0))
        self._upstreams = [self._new_upstream()]
        self._client: tuple[str, int] | None = None
        self._stop_r, self._stop_w = socket.socketpair()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rebinding relay", daemon=True)

    @property
    def port(self) -> int:
        """Where the client sends."""
        return int(self._front.getsockname()[1])

    @property
    def upstream_port(self) -> int:
        """The source port the server sees now."""
        return int(self._upstreams[-1].getsockname()[1])

    def rebind(self) -> None:
        """From now on, reach the server from a new source port."""
        with self._lock:
            self._upstreams.append(self._new_upstream())

    @staticmethod
    def _new_upstream() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        return sock

    def _run(self) -> None:
        while True:
            with self._lock:
                upstreams = list(self._upstreams)
            ready, _, _ = select.select([self._front, self._stop_r, *upstreams], [], [], 0.05)
            if self._stop_r in ready:
                return
            for sock in ready:
                data, address = sock.recvfrom(65536)
                if sock is self._front:
                    self._client = address
                    upstreams[-1].sendto(data, self._server)
                elif self._client is not None:
                    self._front.sendto(data, self._client)

    def __enter__(self) -> RebindingRelay:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_w.send(b"x")
        self._thread.join()
        for sock in (self._front, *self._upstreams, self._stop_r, self._stop_w):
            sock.close()
