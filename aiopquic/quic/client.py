"""Client side: ``open_quic_connection``."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Generator
from types import TracebackType
from typing import Any

import anyio

from .._core import Endpoint
from .config import QuicConfig
from .connection import QuicConnection
from .endpoint import QuicEndpoint

__all__ = ["open_quic_connection"]


async def _resolve(host: str, port: int) -> tuple[int, str, int]:
    """Return ``(family, numeric host, port)`` for the first UDP address of ``host``."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, host, port
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from exc
    family, _, _, _, sockaddr = infos[0]
    return int(family), str(sockaddr[0]), int(sockaddr[1])


async def _connect(host: str, port: int, config: QuicConfig) -> QuicConnection:
    if not isinstance(config, QuicConfig):
        raise TypeError("config must be a QuicConfig")
    if not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, got {port!r}")
    family, address, port = await _resolve(host, port)
    core = Endpoint(**config.endpoint_options(is_server=False))
    try:
        # Don't wait for the socket: a failure shows up as a failed handshake.
        core.start("::" if family == socket.AF_INET6 else "0.0.0.0", 0, timeout_ms=0)
        server_name = config.server_name or host
        alpn = config.alpn[0] if len(config.alpn) == 1 else None
        endpoint = QuicEndpoint(core, config, server_name=server_name, peer_label=f"{host}:{port}")
        endpoint.owns_connection = True
        conn = QuicConnection(core.connect(address, port, server_name, alpn), endpoint, config)
        endpoint.add_connection(conn)
        await endpoint.drive_until(conn._handshake_done.is_set)
    except BaseException:
        core.close()
        raise
    if not conn._ready:
        assert conn._closed_exc is not None
        core.close()
        raise conn._closed_exc
    # Ready, perhaps already closed again by the peer: the first use will say so.
    return conn


class _OpenConnection:
    """What :func:`open_quic_connection` returns: awaitable, and an async context manager."""

    def __init__(self, host: str, port: int, config: QuicConfig) -> None:
        self._args = (host, port, config)
        self._conn: QuicConnection | None = None

    def __await__(self) -> Generator[Any, None, QuicConnection]:
        return _connect(*self._args).__await__()

    async def __aenter__(self) -> QuicConnection:
        conn = await _connect(*self._args)
        self._conn = conn
        return await conn.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        await self._conn.__aexit__(exc_type, exc, tb)


def open_quic_connection(host: str, port: int, *, config: QuicConfig) -> _OpenConnection:
    """Connect to a QUIC server and complete the handshake.

    Use it as ``async with open_quic_connection(...) as conn:``, or as
    ``conn = await open_quic_connection(...)`` followed by ``async with conn:``.
    The connection has its own UDP socket and network thread; leaving the
    ``async with`` closes the connection, stops the thread and frees the socket.

    Raises :class:`HandshakeError` if the server's certificate is not trusted or
    does not match ``config.server_name`` (default: ``host``), if the server
    accepts none of ``config.alpn``, or if nobody answers in time.
    """
    return _OpenConnection(host, port, config)
