"""Server side: ``serve_quic`` and ``QuicListener``."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from .._core import Endpoint
from .config import QuicConfig
from .connection import ERROR_CODE_ON_EXCEPTION, QuicConnection
from .endpoint import QuicEndpoint, close_core
from .errors import ConnectionClosed

__all__ = ["QuicListener", "serve_quic"]

logger = logging.getLogger("aiopquic.quic.server")

Handler = Callable[[QuicConnection], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class QuicListener:
    """Where a running :func:`serve_quic` listens."""

    #: The bound UDP port (useful when asking for port 0).
    port: int
    #: ``(host, port)`` of the bound socket.
    address: tuple[str, int]


async def _bind_address(host: str | None) -> str:
    """The numeric address to bind: "" (both families) for ``None`` or ""."""
    if host is None or host == "":
        return ""
    if not isinstance(host, str):
        raise TypeError(f"host must be a str or None, got {host!r}")
    try:
        ipaddress.ip_address(host)  # scoped IPv6 addresses (fe80::1%eth0) too
        return host
    except ValueError:
        pass
    infos = await anyio.getaddrinfo(host, 0, type=socket.SOCK_DGRAM)
    return str(infos[0][4][0])


def _start(config: QuicConfig, bind: str, port: int) -> tuple[Endpoint, str]:
    """Check the certificate and key, bind, start the network thread: blocking work
    (file reads, waiting for the thread to open its socket) for a worker thread.
    Return the started core and the address it bound.

    "" binds any address of both families (an IPv6 and an IPv4 socket on one
    port), reported as "::"; IPv4 alone where no IPv6 socket can be had.
    """
    config._check_certificate_and_key()
    if bind:
        return _start_core(config, bind, port), bind
    try:
        return _start_core(config, "", port), "::"
    except OSError as exc:
        logger.info("serve_quic: no IPv6 socket (%s); serving IPv4 only", exc)
        return _start_core(config, "0.0.0.0", port), "0.0.0.0"


def _start_core(config: QuicConfig, bind: str, port: int) -> Endpoint:
    core = Endpoint(**config.endpoint_options(is_server=True))
    try:
        core.start(bind, port)
    except BaseException:
        core.close()
        raise
    return core


async def _run_handler(handler: Handler, conn: QuicConnection) -> None:
    try:
        await handler(conn)
    except ConnectionClosed as exc:
        logger.debug("handler of %r ended with %s", conn, exc)
    except Exception as exc:
        logger.exception("handler of %r raised; closing that connection", conn)
        conn.close(ERROR_CODE_ON_EXCEPTION, f"{type(exc).__name__} in the server")
    finally:
        with anyio.CancelScope(shield=True):
            await conn.aclose()


async def serve_quic(
    handler: Handler,
    host: str | None,
    port: int,
    config: QuicConfig,
    *,
    task_status: TaskStatus[QuicListener] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Accept QUIC connections on ``host``:``port`` until cancelled.

    Each connection runs ``handler(conn)`` in its own task. A handler that raises
    closes only its connection (the error is logged and the peer gets error code
    1). Start it with ``listener = await task_group.start(serve_quic, ...)`` to
    learn the bound port. Cancelling it closes every connection (the peers see a
    CONNECTION_CLOSE), stops the network thread and frees the port.

    ``host`` is a numeric address (an IPv6 one may name its interface:
    ``fe80::1%eth0``), a host name (its first address), or ``None`` for every
    address of both families (IPv4 alone where the host has no IPv6).
    """
    if not isinstance(config, QuicConfig):
        raise TypeError("config must be a QuicConfig")
    if config.certfile is None:
        raise ValueError("serving needs a certificate: QuicConfig(certfile=..., keyfile=...)")
    if not 0 <= port < 65536:
        raise ValueError(f"port must be from 0 to 65535, got {port!r}")
    bind = await _bind_address(host)
    # Shielded: a start cancelled half-way would leave a running thread and a bound
    # socket behind.  Cancellation takes effect at the next checkpoint, below,
    # where the core is closed.
    with anyio.CancelScope(shield=True):
        core, bind = await anyio.to_thread.run_sync(_start, config, bind, port)
    try:
        bound_port = core.port
        endpoint = QuicEndpoint(core, config)
        logger.info("serving QUIC on %s port %d (ALPN %s)", bind, bound_port, ", ".join(config.alpn))
        async with anyio.create_task_group() as dispatch_group:
            # Not task_group.start(): the dispatcher is immune to cancellation, so a
            # start cancelled while waiting for it would wait for ever.  Events that
            # come before it runs wait in the core.
            dispatch_group.start_soon(endpoint.run, name="aiopquic dispatcher")
            try:
                async with anyio.create_task_group() as handlers:
                    endpoint.on_connection = lambda conn: handlers.start_soon(
                        _run_handler, handler, conn, name=f"aiopquic handler {conn.remote_address}"
                    )
                    task_status.started(QuicListener(port=bound_port, address=(bind, bound_port)))
                    try:
                        await anyio.sleep_forever()
                    finally:
                        # From here on the handler group takes no new task.
                        endpoint.on_connection = None
            finally:
                await endpoint.aclose()
    finally:
        await close_core(core)
