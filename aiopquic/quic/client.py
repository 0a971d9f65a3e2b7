"""Client side: ``open_quic_connection`` and ``QuicClient``."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Generator
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._core import Endpoint
from .config import QuicConfig
from .connection import QuicConnection
from .endpoint import QuicEndpoint, close_core
from .errors import (
    PICOQUIC_ERROR_HANDSHAKE_TIMEOUT,
    PICOQUIC_ERROR_IDLE_TIMEOUT,
    HandshakeError,
)

__all__ = ["QuicClient", "open_quic_connection"]

logger = logging.getLogger("aiopquic.quic")


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


async def _connect(host: str, port: int, config: QuicConfig, client: QuicClient | None = None) -> QuicConnection:
    if not isinstance(config, QuicConfig):
        raise TypeError("config must be a QuicConfig")
    if not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, got {port!r}")
    targets = await _resolve(host, port)
    await config._load_trust()
    if client is not None:
        targets = client._reachable(targets, host)
    # An address's interface (fe80::1%eth0) is no part of the name in the certificate.
    server_name = config.server_name or host.partition("%")[0]
    if len(targets) == 1:
        # 0-RTT only here: returning before the handshake would end a race at once.
        early = config.early_data
        return await _attempt(targets[0], port, config, server_name, f"{host}:{port}", client, early=early)
    return await _race(targets, port, config, server_name, host, client)


async def _attempt(
    target: tuple[int, str],
    port: int,
    config: QuicConfig,
    server_name: str,
    label: str,
    client: QuicClient | None,
    *,
    early: bool = False,
) -> QuicConnection:
    """Connect to one address and complete the handshake: from an endpoint of its
    own, or from ``client``'s.  With ``early``, return as soon as 0-RTT data can
    be sent, when resuming with a ticket that allows it."""
    family, address = target
    alpn = config.alpn[0] if len(config.alpn) == 1 else None
    if client is not None:
        return await client._handshake(address, port, server_name, alpn, label, early=early)
    core = Endpoint(**config.endpoint_options(is_server=False))
    try:
        # Don't wait for the socket: a failure shows up as a failed handshake.
        core.start("::" if family == socket.AF_INET6 else "0.0.0.0", 0, timeout_ms=0)
        endpoint = QuicEndpoint(core, config)
        endpoint.owns_connection = True
        handle = core.connect(address, port, server_name, alpn)
        conn = QuicConnection(handle, endpoint, config, server_name=server_name, peer_label=label)
        endpoint.add_connection(conn)
        await endpoint.drive_until(conn._usable.is_set if early else conn._handshake_done.is_set)
    except BaseException:
        await close_core(core)
        raise
    if not conn._ready and conn._closed_exc is not None:
        await close_core(core)
        raise conn._closed_exc
    # Ready (or sending 0-RTT), perhaps already closed again by the peer: the
    # first use will say so.
    return conn


async def _race(
    targets: list[tuple[int, str]],
    port: int,
    config: QuicConfig,
    server_name: str,
    host: str,
    client: QuicClient | None,
) -> QuicConnection:
    """Happy eyeballs (RFC 8305): try the addresses one after the other, each
    ``ATTEMPT_DELAY`` after the last (at once when it fails); the first handshake
    to complete wins and the other attempts are cancelled."""
    won: list[QuicConnection] = []
    failures: list[tuple[str, Exception]] = []

    async def attempt(target: tuple[int, str], failed: anyio.Event) -> None:
        label = f"{host} ({target[1]}) port {port}"
        try:
            conn = await _attempt(target, port, config, server_name, label, client)
        except Exception as exc:
            failures.append((target[1], exc))
            failed.set()
            return
        if won:  # another address answered first
            await _discard(conn, "another address answered first")
            return
        won.append(conn)
        task_group.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as task_group:
            for target in targets:
                failed = anyio.Event()
                task_group.start_soon(attempt, target, failed)
                with anyio.move_on_after(ATTEMPT_DELAY):
                    await failed.wait()
    except BaseException:
        if won:  # cancelled (or failed) just as an attempt won: nobody will use it
            await _discard(won[0], "the connecting task was cancelled")
        raise
    if won:
        return won[0]
    # Every address failed: raise the most telling error (from a server that
    # answered, if any) and note the others.
    _, error = next(((a, e) for a, e in failures if _answered(e)), failures[-1])
    for address, other in failures:
        if other is not error:
            error.add_note(f"also tried {address}: {other}")
    raise error


async def _discard(conn: QuicConnection, reason: str) -> None:
    """Close a connection nobody will use, and free its endpoint if it has one."""
    with anyio.CancelScope(shield=True):
        conn.close(0, reason)
        await conn.aclose()


def _answered(error: Exception) -> bool:
    """Whether a failed attempt reached a QUIC server (not a timeout or a local error)."""
    return isinstance(error, HandshakeError) and error.transport_error not in (
        PICOQUIC_ERROR_HANDSHAKE_TIMEOUT,
        PICOQUIC_ERROR_IDLE_TIMEOUT,
    )


class _OpenConnection:
    """What :func:`open_quic_connection` and :meth:`QuicClient.connect` return:
    awaitable, and an async context manager."""

    def __init__(self, host: str, port: int, config: QuicConfig, client: QuicClient | None = None) -> None:
        self._args = (host, port, config, client)
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
    (:class:`QuicClient` shares one socket and thread among many connections.)
    When ``host`` has several addresses they are tried as RFC 8305 describes
    (IPv6 and IPv4 interleaved, the next one 250 ms after the last, or at once
    when it fails); the first handshake to complete wins.

    Raises :class:`HandshakeError` if the server's certificate is not trusted or
    does not match ``config.server_name`` (default: ``host``), if the server
    accepts none of ``config.alpn``, or if nobody answers in time.
    """
    return _OpenConnection(host, port, config)


class QuicClient:
    """A client endpoint: one UDP socket and one network thread that every
    connection it opens shares.

    :func:`open_quic_connection` gives each connection a socket and a thread of
    its own; a program that connects often, or to many servers, saves both (and
    their start-up, a few hundred microseconds per connection) with one client::

        async with aiopquic.QuicClient(config) as client:
            async with client.connect("example.com", 4433) as conn:
                ...

    Its connections use ``config``; they resume TLS sessions from one another as
    the config says (``resume_sessions``). Leaving the ``async with`` closes the
    connections still open (the peers get a CONNECTION_CLOSE), stops the thread
    and frees the socket.

    By default it binds any address of both families, so it reaches IPv4 and
    IPv6 servers (IPv4 alone where no IPv6 socket can be had); ``local_host``
    binds one address (and then reaches only that address's family),
    ``local_port`` a port.
    """

    def __init__(self, config: QuicConfig, *, local_host: str | None = None, local_port: int = 0) -> None:
        if not isinstance(config, QuicConfig):
            raise TypeError("config must be a QuicConfig")
        if not 0 <= local_port < 65536:
            raise ValueError(f"local_port must be from 0 to 65535, got {local_port!r}")
        if local_host is not None:
            try:
                ipaddress.ip_address(local_host)
            except ValueError:
                raise ValueError(f"local_host must be a numeric IP address, got {local_host!r}") from None
        self.config = config
        self._local = (local_host, local_port)
        self._endpoint: QuicEndpoint | None = None
        self._bound = ""  # the address bound: "" for both families
        self._closed = False

    @property
    def port(self) -> int:
        """The bound UDP port (0 before the ``async with``)."""
        return self._endpoint.port if self._endpoint is not None else 0

    def connect(self, host: str, port: int) -> _OpenConnection:
        """Connect to a QUIC server through this client, as :func:`open_quic_connection`
        does (same forms, same errors), sharing the client's socket and thread."""
        return _OpenConnection(host, port, self.config, self)

    async def __aenter__(self) -> QuicClient:
        if self._endpoint is not None or self._closed:
            raise RuntimeError("a QuicClient can be entered only once")
        await self.config._load_trust()
        # Binding waits for the network thread to open its socket: in a worker
        # thread, shielded so that a cancelled entry leaves no thread or socket
        # behind (the core is closed below, at the next checkpoint).
        with anyio.CancelScope(shield=True):
            core = await anyio.to_thread.run_sync(self._start_core)
        try:
            endpoint = QuicEndpoint(core, self.config)
            await endpoint.start_client_dispatch()
        except BaseException:
            await close_core(core)
            raise
        self._endpoint = endpoint
        return self

    def _start_core(self) -> Endpoint:
        """Bind and start the core endpoint: both families unless ``local_host`` says
        which; IPv4 alone where the IPv6 socket cannot be had (no IPv6 on the host,
        or its port taken by another IPv6 socket)."""
        host, port = self._local
        if host is not None:
            return self._bind(host, port)
        try:
            return self._bind("", port)
        except OSError as exc:
            logger.info("QuicClient: no IPv6 socket (%s); reaching IPv4 servers only", exc)
            return self._bind("0.0.0.0", port)

    def _bind(self, host: str, port: int) -> Endpoint:
        """A started core endpoint bound to ``host`` ("": both families) and ``port``."""
        core = Endpoint(**self.config.endpoint_options(is_server=False))
        try:
            core.start(host, port)
        except OSError:
            core.close()
            raise
        self._bound = host
        return core

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close every connection of this client, stop its thread, free its socket.

        (No public ``aclose()``: on trio the dispatcher task lives in a task group
        that only the task which entered the client may leave.)
        """
        if self._closed:
            return
        self._closed = True
        if self._endpoint is not None:
            await self._endpoint.aclose()

    def _running(self) -> QuicEndpoint:
        if self._closed:
            raise anyio.ClosedResourceError("this QuicClient is closed")
        if self._endpoint is None:
            raise RuntimeError("use the client inside `async with QuicClient(config) as client:`")
        return self._endpoint

    def _reachable(self, targets: list[tuple[int, str]], host: str) -> list[tuple[int, str]]:
        """The addresses this client's socket can send to."""
        self._running()
        if not self._bound:
            return targets
        family = socket.AF_INET6 if ":" in self._bound else socket.AF_INET
        reachable = [t for t in targets if t[0] == family]
        if not reachable:
            hint = "bind no local_host to reach both" if self._local[0] is not None else "no IPv6 socket could be had"
            raise OSError(
                f"{host!r} has no {'IPv6' if family == socket.AF_INET6 else 'IPv4'} address, the only "
                f"family this client reaches (bound to {self._bound}; {hint})"
            )
        return reachable

    async def _handshake(
        self, address: str, port: int, server_name: str, alpn: str | None, label: str, *, early: bool = False
    ) -> QuicConnection:
        endpoint = self._running()
        handle = endpoint.core.connect(address, port, server_name, alpn)
        conn = QuicConnection(handle, endpoint, self.config, server_name=server_name, peer_label=label)
        endpoint.add_connection(conn)
        try:
            await (conn._usable if early else conn._handshake_done).wait()
        except BaseException:
            conn.close(0, "connection attempt abandoned")
            raise
        if not conn._ready and conn._closed_exc is not None:
            raise conn._closed_exc
        return conn


async def enter_with_task_group(client: QuicClient) -> TaskGroup:
    """Enter ``client`` and then a task group for the work done through it (for
    objects built on a QuicClient, such as the HTTP/3 and WebTransport clients);
    if the task group cannot start, the client is left again. The caller exits
    the task group before the client."""
    await client.__aenter__()
    try:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
    except BaseException as exc:
        await client.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    return task_group
