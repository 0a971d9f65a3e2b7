"""hypercorn serving an ASGI app over HTTP/3 (its QUIC side is aioquic), in a
thread with its own asyncio loop, on 127.0.0.1 and an ephemeral port.

    server = HypercornH3Server(app, certs).start()   # or: with HypercornH3Server(...) as server:
    server.port                                      # the UDP (HTTP/3) port
    server.stop()

The UDP socket is bound before ``start`` returns (hypercorn adopts it through
``quic_bind = "fd://N"``), so a client may send its first packet at once: the
kernel queues it until hypercorn reads. hypercorn also insists on a TCP
listener; it gets an ephemeral one on 127.0.0.1 too (``tcp_port``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aiopquic.cli.certs import CertificateSet

from .loop_thread import LoopThread

#: Longest start or stop may take.
TIMEOUT = 10.0


class HypercornH3Server(LoopThread):
    """hypercorn serving ``app`` over HTTP/3 in a thread with its own asyncio loop."""

    def __init__(self, app: Any, certs: CertificateSet, *, host: str = "127.0.0.1", **config: Any) -> None:
        """``config``: extra hypercorn ``Config`` attributes (``graceful_timeout``...)."""
        super().__init__("hypercorn", TIMEOUT)
        self.app = app
        self.certs = certs
        self.host = host
        self.extra = config
        self.port = 0
        self.tcp_port = 0

    async def _serve_until(self, stop: asyncio.Event) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((self.host, 0))
            tcp.bind((self.host, 0))
        except OSError:
            udp.close()
            tcp.close()
            raise
        self.port = udp.getsockname()[1]
        self.tcp_port = tcp.getsockname()[1]

        config = Config()
        config.certfile = str(self.certs.certfile)
        config.keyfile = str(self.certs.keyfile)
        config.quic_bind = [f"fd://{udp.detach()}"]  # hypercorn owns (and closes) them now
        config.bind = [f"fd://{tcp.detach()}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.h3peer")
        config.graceful_timeout = 0.2
        for key, value in self.extra.items():
            setattr(config, key, value)

        asyncio.get_running_loop().call_soon(self._ready.set)  # after serve() has started to set up
        await serve(self.app, config, shutdown_trigger=stop.wait)
