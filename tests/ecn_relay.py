"""A UDP relay between one client and a server that records the ECN bits of every
datagram (IP_RECVTOS / IPV6_RECVTCLASS) and forwards each with the same bits, so
both ends see what the other marked."""

from __future__ import annotations

import select
import socket
import struct
import threading
from types import TracebackType

#: The ECN field: the two low bits of the IPv4 TOS / IPv6 traffic class.
NOT_ECT, ECT_1, ECT_0, CE = 0, 1, 2, 3


class EcnRelay:
    """Forward datagrams from a local port to ``server`` and back; ``to_server`` and
    ``to_client`` list the ECN codepoint of each datagram, in arrival order."""

    def __init__(self, server: tuple[str, int]) -> None:
        self._server = server
        self._family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        if self._family == socket.AF_INET:
            self._level, self._recv_opt, self._opt = socket.IPPROTO_IP, socket.IP_RECVTOS, socket.IP_TOS
        else:
            self._level, self._recv_opt, self._opt = socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, socket.IPV6_TCLASS
        self._front = self._socket()
        self._back = self._socket()
        self._client: object = None
        self.to_server: list[int] = []
        self.to_client: list[int] = []
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="ECN relay", daemon=True)

    def _socket(self) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        sock.setsockopt(self._level, self._recv_opt, 1)
        sock.bind((self._server[0], 0))
        return sock

    @property
    def port(self) -> int:
        """Where the client sends."""
        return int(self._front.getsockname()[1])

    def _ecn(self, ancdata: list[tuple[int, int, bytes]]) -> int:
        for level, kind, data in ancdata:
            if level == self._level and kind == self._opt and data:
                return data[0] & 3  # one byte (IP_TOS) or a native int (IPV6_TCLASS)
        return -1  # the kernel reported none: the tests' assertions show it

    def _run(self) -> None:
        space = socket.CMSG_SPACE(4)
        while True:
            ready, _, _ = select.select([self._front, self._back, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            for sock in ready:
                data, ancdata, _, address = sock.recvmsg(65536, space)
                ecn = self._ecn(ancdata)
                tos = [(self._level, self._opt, struct.pack("i", max(ecn, 0)))]
                if sock is self._front:
                    self._client = address
                    self.to_server.append(ecn)
                    self._back.sendmsg([data], tos, 0, self._server)
                elif self._client is not None:
                    self.to_client.append(ecn)
                    self._front.sendmsg([data], tos, 0, self._client)

    def __enter__(self) -> EcnRelay:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_w.send(b"x")
        self._thread.join()
        for sock in (self._front, self._back, self._stop_r, self._stop_w):
            sock.close()
