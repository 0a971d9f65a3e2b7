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
import threading
from typing import Any

from aiopquic.cli.certs import CertificateSet

#: Longest start or stop may take.
TIMEOUT = 10.0


class HypercornH3Server:
    def __init__(self, app: Any, certs: CertificateSet, *, host: str = "127.0.0.1", **config: Any) -> None:
        """``config``: extra hypercorn ``Config`` attributes (``graceful_timeout``...)."""
        self.app = app
        self.certs = certs
        self.host = host
        self.extra = config
        self.port = 0
        self.tcp_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hypercorn h3", daemon=True)

    def start(self) -> HypercornH3Server:
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            raise RuntimeError("hypercorn did not start")
        if self._error is not None:
            raise RuntimeError("hypercorn failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._shutdown is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._shutdown.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "hypercorn did not stop"
        if self._error is not None:
            raise RuntimeError("hypercorn failed") from self._error

    def __enter__(self) -> HypercornH3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start/stop
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
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

        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        self._loop.call_soon(self._ready.set)  # after serve() has started to set up
        await serve(self.app, config, shutdown_trigger=self._shutdown.wait)
