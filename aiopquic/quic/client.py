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
from .errors import PICOQUIC_ERROR_HANDSHAKE_TIMEOUT, PICOQUIC_ERROR_IDLE_TIMEOUT, HandshakeError
from .endpoint import QuicEndpoint

__all__ = ["open_quic_connection"]


#: RFC 8305's "Connection Attempt Delay": how long one address gets before the next starts.
ATTEMPT_DELAY = 0.25


async def _resolve(host: str, port: int) -> list[tuple[int, str]]:
    """``(family, numeric address)`` of every UDP address of ``host``, the families
    interleaved as RFC 8305 asks (first family first)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [(socket.AF_INET6 if ":" in host else socket.AF_INET, host)]
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from exc
    by_family: dict[int, list[tuple[int, str]]] = {}
    for family, _, _, _, sockaddr in infos:
        target = (int(family), str(sockaddr[0]))
        if target not in by_family.setdefault(int(family), []):
            by_family[int(family)].append(target)
    queues = list(by_family.values())
    targets: list[tuple[int, str]] = []
    while any(queues):
        for queue in queues:
            if queue:
                targets.append(queue.pop(0))
    return targets


async def _connect(host: str, port: int, config: QuicConfig) -> QuicConnection:
    if not isinstance(config, QuicConfig):
        raise TypeError("config must be a QuicConfig")
    if not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, got {port!r}")
    targets = await _resolve(host, port)
    server_name = config.server_name or host
    if len(targets) == 1:
        return await _attempt(targets[0], port, config, server_name, f"{host}:{port}")
    return await _race(targets, port, config, server_name, host)


async def _attempt(
    target: tuple[int, str], port: int, config: QuicConfig, server_name: str, label: str
) -> QuicConnection:
    """Connect to one address and complete the handshake."""
    family, address = target
    core = Endpoint(**config.endpoint_options(is_server=False))
    try:
        # Don't wait for the socket: a failure shows up as a failed handshake.
        core.start("::" if family == socket.AF_INET6 else "0.0.0.0", 0, timeout_ms=0)
        alpn = config.alpn[0] if len(config.alpn) == 1 else None
        endpoint = QuicEndpoint(core, config, server_name=server_name, peer_label=label)
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


async def _race(
    targets: list[tuple[int, str]], port: int, config: QuicConfig, server_name: str, host: str
) -> QuicConnection:
    """Happy eyeballs (RFC 8305): try the addresses one after the other, each
    ``ATTEMPT_DELAY`` after the last (at once when it fails); the first handshake
    to complete wins and the other attempts are cancelled."""
    won: list[QuicConnection] = []
    failures: list[tuple[str, Exception]] = []

    async def attempt(target: tuple[int, str], failed: anyio.Event) -> None:
        label = f"{host} ({target[1]}) port {port}"
        try:
            conn = await _attempt(target, port, config, server_name, label)
        except Exception as exc:
            failures.append((target[1], exc))
            failed.set()
            return
        if won:  # another address answered first
            with anyio.CancelScope(shield=True):
                async with conn:
                    conn.close(0, "another address answered first")
            return
        won.append(conn)
        task_group.cancel_scope.cancel()

    async with anyio.create_task_group() as task_group:
        for target in targets:
            failed = anyio.Event()
            task_group.start_soon(attempt, target, failed)
            with anyio.move_on_after(ATTEMPT_DELAY):
                await failed.wait()
    if won:
        return won[0]
    # Every address failed: raise the most telling error (from a server that
    # answered, if any) and note the others.
    _, error = next(((a, e) for a, e in failures if _answered(e)), failures[-1])
    for address, other in failures:
        if other is not error:
            error.add_note(f"also tried {address}: {other}")
    raise error


def _answered(error: Exception) -> bool:
    """Whether a failed attempt reached a QUIC server (not a timeout or a local error)."""
    return isinstance(error, HandshakeError) and error.transport_error not in (
        PICOQUIC_ERROR_HANDSHAKE_TIMEOUT,
        PICOQUIC_ERROR_IDLE_TIMEOUT,
    )


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
    When ``host`` has several addresses they are tried as RFC 8305 describes
    (IPv6 and IPv4 interleaved, the next one 250 ms after the last, or at once
    when it fails); the first handshake to complete wins.

    Raises :class:`HandshakeError` if the server's certificate is not trusted or
    does not match ``config.server_name`` (default: ``host``), if the server
    accepts none of ``config.alpn``, or if nobody answers in time.
    """
    return _OpenConnection(host, port, config)
