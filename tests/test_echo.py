"""The thin slice: one connection, streams echoed, on both backends."""

from __future__ import annotations

import anyio
import pytest

from aiopquic import QuicConfig, open_quic_connection

from .helpers import echo_handler, read_all, running_server

pytestmark = pytest.mark.anyio


async def test_echo_one_stream(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                assert conn.alpn_protocol == "test"
                stream = await conn.open_stream()
                await stream.send(b"ping")
                await stream.send_eof()
                assert await read_all(stream) == b"ping"


async def test_echo_large_stream(server_config: QuicConfig, client_config: QuicConfig) -> None:
    payload = bytes(range(256)) * 40000  # ~10 MB: much more than the windows
    with anyio.fail_after(30):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("127.0.0.1", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()

                async def sender() -> None:
                    await stream.send(payload)
                    await stream.send_eof()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    assert await read_all(stream) == payload


async def test_many_sequential_streams(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(20):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                for i in range(300):
                    stream = await conn.open_stream()
                    message = f"message {i}".encode()
                    await stream.send(message)
                    await stream.send_eof()
                    assert await read_all(stream) == message
