"""One verified bulk transfer between our client and our server, through a
:class:`~tests.lossy_relay.LossyRelay`.  Shared by tests/test_lossy.py (short)
and benchmarks/lossy.py (long).

Protocol on one bidirectional stream: the client sends ``b"U"`` or ``b"D"``
and an 8-byte big-endian size.  Upload (``U``): the client then sends ``size``
bytes and FIN; the server answers with the SHA-256 of what it read and FIN.
Download (``D``): the client sends FIN; the server sends ``size`` bytes and
FIN, and the client hashes them.  The payload is ``payload(size)``, so both
ends know the expected digest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache

import anyio

from aiopquic import QuicConfig, QuicConnection, QuicConnectionStats, QuicStream, open_quic_connection

from .helpers import read_all, running_server
from .lossy_relay import Impairment, LossyRelay

ALPN = "lossy"
CHUNK = 256 * 1024


@lru_cache(maxsize=4)
def payload(size: int) -> bytes:
    """Deterministic incompressible bytes of ``size``."""
    return random.Random(size).randbytes(size)


async def _send_all(stream: QuicStream, data: bytes, midway: Callable[[], None] | None = None) -> None:
    """Send ``data`` and FIN; call ``midway()`` once half of it has been sent."""
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK):
        if midway is not None and offset >= len(view) // 2:
            midway()
            midway = None
        await stream.send(view[offset : offset + CHUNK])
    await stream.send_eof()


async def _hash_to_eof(
    stream: QuicStream, midway: Callable[[], None] | None = None, half: int = 0
) -> tuple[bytes, int]:
    """SHA-256 and size of what arrives until FIN; ``midway()`` is called once
    ``half`` bytes have arrived."""
    digest = hashlib.sha256()
    size = 0
    try:
        while True:
            chunk = await stream.receive(1 << 20)
            digest.update(chunk)
            size += len(chunk)
            if midway is not None and size >= half:
                midway()
                midway = None
    except anyio.EndOfStream:
        return digest.digest(), size


async def client_transfer(
    conn: QuicConnection, direction: str, size: int, midway: Callable[[], None] | None = None
) -> tuple[bytes, int]:
    """The client's side of one transfer on a new stream of ``conn``: returns the
    SHA-256 of the payload as the receiver saw it and how many bytes it got.
    ``midway()`` is called once half of the payload has been sent (up) or
    received (down)."""
    stream = await conn.open_stream()
    if direction == "up":
        await stream.send(b"U" + size.to_bytes(8, "big"))
        await _send_all(stream, payload(size), midway)
        return await read_all(stream), size  # the server's SHA-256 of what it read
    await stream.send(b"D" + size.to_bytes(8, "big"))
    await stream.send_eof()
    return await _hash_to_eof(stream, midway, size // 2)


def transfer_handler(
    closed: anyio.Event | None = None, stats: list[QuicConnectionStats] | None = None
) -> Callable[[QuicConnection], Awaitable[None]]:
    """A handler serving the upload/download protocol on every stream of a
    connection; it sets ``closed`` when the connection has ended, after
    appending the connection's final ``stats`` to that list."""

    async def handler(conn: QuicConnection) -> None:
        try:
            async with conn, anyio.create_task_group() as tg:
                async for stream in conn:
                    if isinstance(stream, QuicStream):
                        tg.start_soon(_serve_stream, stream)
        finally:
            if stats is not None:
                stats.append(conn.stats)
            if closed is not None:
                closed.set()

    return handler


async def _serve_stream(stream: QuicStream) -> None:
    head = b""
    while len(head) < 9:
        head += await stream.receive(9 - len(head))
    kind, size = head[:1], int.from_bytes(head[1:9], "big")
    if kind == b"U":
        digest, _ = await _hash_to_eof(stream)
        await stream.send(digest)
        await stream.send_eof()
    else:
        await _send_all(stream, payload(size))


@dataclass
class TransferResult:
    direction: str
    size: int
    seconds: float
    #: The receiver's connection statistics at the end (its receive window, say).
    receiver_stats: QuicConnectionStats | None = None
    #: The sender's (its congestion window, packets lost).
    sender_stats: QuicConnectionStats | None = None

    @property
    def goodput_mbps(self) -> float:
        return self.size * 8 / self.seconds / 1e6


def configs(
    server: QuicConfig, client: QuicConfig, congestion_control: str, idle_timeout: float
) -> tuple[QuicConfig, QuicConfig]:
    """Copies of the test configs speaking our ALPN with this congestion control."""
    return tuple(  # type: ignore[return-value]
        dataclasses.replace(
            config, alpn=[ALPN], congestion_control=congestion_control, idle_timeout=idle_timeout
        )
        for config in (server, client)
    )


async def transfer(
    server_config: QuicConfig,
    client_config: QuicConfig,
    *,
    direction: str,
    size: int,
    impairment: Impairment | None,
    seed: int,
    timeout: float,
    blackout: float = 0.0,
) -> TransferResult:
    """Move ``size`` verified bytes ``"up"`` or ``"down"`` through a lossy relay
    (``impairment=None``: straight to the server, no relay).

    Raises ``TimeoutError`` if it takes longer than ``timeout`` seconds, or
    ``AssertionError`` if the bytes differ; both say what the relay did.
    """
    expected = hashlib.sha256(payload(size)).digest()
    failure = ""
    server_closed = anyio.Event()
    server_stats: list[QuicConnectionStats] = []
    client_stats: QuicConnectionStats | None = None
    async with running_server(transfer_handler(server_closed, server_stats), server_config) as listener:
        relayed = (
            LossyRelay(
                ("127.0.0.1", listener.port), impairment, seed=seed,
                blackout=blackout, blackout_after=size // 2,
            )
            if impairment is not None else contextlib.nullcontext(None)
        )
        with relayed as relay:
            start = time.monotonic()
            port = relay.port if relay is not None else listener.port
            with anyio.move_on_after(timeout) as scope:
                async with open_quic_connection("127.0.0.1", port, config=client_config) as conn:
                    digest, got = await client_transfer(conn, direction, size)
                    client_stats = conn.stats
            seconds = time.monotonic() - start
            # Keep the relay up until the server has seen the client's CONNECTION_CLOSE
            # (else the server lingers for its close_timeout); it may be lost, so bounded.
            with anyio.move_on_after(1.0):
                await server_closed.wait()
            if scope.cancelled_caught:
                failure = f"{direction} {size} bytes not done in {timeout} s; relay: {relay}"
            elif relay is not None and relay.error is not None:
                failure = f"the relay failed: {relay.error!r}"
            elif digest != expected:
                failure = f"{direction}: the bytes differ ({got} of {size} bytes); relay: {relay}"
    # Raised here, out of the server's task group, so that it is not wrapped.
    if failure:
        raise (TimeoutError if "not done" in failure else AssertionError)(failure)
    server_side = server_stats[0] if server_stats else None
    if direction == "down":
        return TransferResult(direction, size, seconds, client_stats, server_side)
    return TransferResult(direction, size, seconds, server_side, client_stats)
