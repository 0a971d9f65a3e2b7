"""Datagrams: both ways, size limit, off by default, drop-oldest on a full queue."""

from __future__ import annotations

import dataclasses
import time

import anyio
import pytest

from aiopquic import QuicConfig, QuicConnection, QuicError, open_quic_connection

from .helpers import running_server

pytestmark = pytest.mark.anyio


async def _datagram_echo(conn: QuicConnection) -> None:
    async with conn:
        while True:
            try:
                data = await conn.receive_datagram()
            except Exception:
                return
            await conn.send_datagram(data[::-1])


async def test_datagrams_both_ways(server_config: QuicConfig, client_config: QuicConfig) -> None:
    server = dataclasses.replace(server_config, max_datagram_frame_size=1500)
    client = dataclasses.replace(client_config, max_datagram_frame_size=1500)
    with anyio.fail_after(10):
        async with running_server(_datagram_echo, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                assert 1000 <= conn.max_datagram_size <= 1500
                for size in (1, 100, conn.max_datagram_size):
                    payload = bytes(i % 251 for i in range(size))
                    # Unreliable by contract: resend until an answer comes (loopback rarely drops).
                    answer = None
                    while answer is None:
                        await conn.send_datagram(payload)
                        with anyio.move_on_after(0.5):
                            answer = await conn.receive_datagram()
                    assert answer == payload[::-1]
                assert conn.stats.datagrams_received >= 3


async def test_datagram_too_large(server_config: QuicConfig, client_config: QuicConfig) -> None:
    server = dataclasses.replace(server_config, max_datagram_frame_size=1500)
    client = dataclasses.replace(client_config, max_datagram_frame_size=1500)
    with anyio.fail_after(10):
        async with running_server(_datagram_echo, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                with pytest.raises(ValueError, match="max_datagram_size"):
                    await conn.send_datagram(b"x" * (conn.max_datagram_size + 1))


async def _hold(conn: QuicConnection) -> None:
    async with conn:
        await conn.wait_closed()


async def test_datagrams_off_by_default(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with running_server(_hold, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                assert conn.max_datagram_size == 0
                with pytest.raises(QuicError, match="max_datagram_frame_size"):
                    await conn.send_datagram(b"hello")
                # None can come: say so at once rather than wait forever.
                with pytest.raises(QuicError, match="max_datagram_frame_size"):
                    await conn.receive_datagram()


async def test_full_receive_queue_drops_oldest(server_config: QuicConfig, client_config: QuicConfig) -> None:
    server = dataclasses.replace(server_config, max_datagram_frame_size=1500)
    client = dataclasses.replace(client_config, max_datagram_frame_size=1500, datagram_queue_size=4)
    sent = anyio.Event()

    async def burst(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            for i in range(50):
                await conn.send_datagram(i.to_bytes(2, "big"))
            await stream.send(b"done")  # type: ignore[union-attr]
            await stream.send_eof()  # type: ignore[union-attr]
            sent.set()
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(burst, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                await stream.send(b"go")
                assert await stream.receive() == b"done"  # queued after every datagram
                await sent.wait()
                # A reader too slow to keep up: the network thread keeps receiving into
                # the bounded queue (4) while this thread is busy.
                time.sleep(0.3)
                received = [int.from_bytes(await conn.receive_datagram(), "big") for _ in range(4)]
                assert received == sorted(set(received))
                with anyio.move_on_after(0.2) as nothing_more:
                    await conn.receive_datagram()  # only 4 were kept
                assert nothing_more.cancelled_caught
                dropped = conn.stats.datagrams_dropped_on_receive
                assert dropped >= 1
                assert dropped + 4 <= 50
