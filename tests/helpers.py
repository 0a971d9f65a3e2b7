"""Helpers shared by the tests: run a server in a task group, read a whole stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.abc import ByteReceiveStream

from aiopquic import AnyQuicStream, QuicConfig, QuicConnection, QuicListener, QuicStream, serve_quic

Handler = Callable[[QuicConnection], Awaitable[None]]


@asynccontextmanager
async def running_server(
    handler: Handler, config: QuicConfig, host: str = "127.0.0.1"
) -> AsyncIterator[QuicListener]:
    """Run ``serve_quic`` for the duration of the block."""
    async with anyio.create_task_group() as tg:
        listener = await tg.start(serve_quic, handler, host, 0, config)
        yield listener
        tg.cancel_scope.cancel()


async def read_all(stream: ByteReceiveStream) -> bytes:
    """Receive until FIN."""
    data = bytearray()
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return bytes(data)


async def echo_handler(conn: QuicConnection) -> None:
    """Echo every bidirectional stream back, then FIN."""
    async with conn, anyio.create_task_group() as tg:
        async for stream in conn:
            tg.start_soon(_echo_stream, stream)


async def _echo_stream(stream: AnyQuicStream) -> None:
    data = await read_all(stream)
    if isinstance(stream, QuicStream):  # a unidirectional stream is only drained
        await stream.send(data)
        await stream.send_eof()
