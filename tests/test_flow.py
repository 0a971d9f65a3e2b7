"""Backpressure, many concurrent streams, and cancellation safety."""

from __future__ import annotations

import dataclasses
import hashlib

import anyio
import pytest

from aiopquic import QuicConfig, QuicConnection, QuicStream, StreamReset, open_quic_connection
from aiopquic._core import Endpoint

from .helpers import assert_network_threads, echo_handler, read_all, running_server

pytestmark = pytest.mark.anyio

WINDOW = 64 * 1024
SEND_BUFFER = 64 * 1024


async def test_slow_reader_blocks_the_sender_without_loss(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    server = dataclasses.replace(server_config, max_stream_data=WINDOW)
    client = dataclasses.replace(client_config, send_buffer_size=SEND_BUFFER)
    total = 4 * 1024 * 1024
    chunk = bytes(range(256)) * 64  # 16 KiB
    start_reading = anyio.Event()
    digest: list[str] = []

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            await start_reading.wait()
            digest.append(hashlib.sha256(await read_all(stream)).hexdigest())
            await conn.wait_closed()

    sent = 0

    async def sender(stream: QuicStream) -> None:
        nonlocal sent
        while sent < total:
            await stream.send(chunk)
            sent += len(chunk)
        await stream.send_eof()

    with anyio.fail_after(30):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender, stream)
                    # Give the sender every chance to run ahead of the stalled reader.
                    await anyio.sleep(0.5)
                    # It is held back by the peer's window plus our send buffer (with
                    # ring rounding), never by the 4 MiB it wants to send.
                    assert sent <= 2 * WINDOW + 2 * SEND_BUFFER + len(chunk)
                    start_reading.set()
                expected = hashlib.sha256(chunk * (total // len(chunk))).hexdigest()
                while not digest:
                    await anyio.sleep(0.01)
                assert digest == [expected]


async def test_thousands_of_concurrent_streams(server_config: QuicConfig, client_config: QuicConfig) -> None:
    # The server allows only 100 streams at a time: the rest wait for credit.
    server = dataclasses.replace(server_config, max_streams_bidi=100)
    results: dict[int, bytes] = {}

    async def one(conn: QuicConnection, i: int) -> None:
        stream = await conn.open_stream()
        payload = i.to_bytes(4, "big") * 256
        await stream.send(payload)
        await stream.send_eof()
        results[i] = await read_all(stream)

    with anyio.fail_after(60):
        async with running_server(echo_handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                async with anyio.create_task_group() as tg:
                    for i in range(2000):
                        tg.start_soon(one, conn, i)
    assert len(results) == 2000
    assert all(results[i] == i.to_bytes(4, "big") * 256 for i in range(2000))


CHUNK = 16 * 1024  # about the bridge's buffer chunk (a little more: the bounds below hold)


async def test_buffers_hold_only_what_is_buffered(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # The window pinned (no autotuning): on loopback a 64 KiB window can drain
    # within two round trips, and this checks the bound of a window that stays.
    server = dataclasses.replace(server_config, max_stream_data=WINDOW, max_stream_window=WINDOW)
    client = dataclasses.replace(client_config, send_buffer_size=SEND_BUFFER)
    payload = bytes(range(256)) * 4096  # 1 MiB: 16 windows
    peaks: list[int] = []
    after: list[int] = []
    handler_done = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        core = conn._endpoint.core
        async with conn:
            stream = await conn.accept_stream()
            received = 0
            while True:
                try:
                    received += len(await stream.receive(1000))  # a slow, small reader
                except anyio.EndOfStream:
                    break
                peaks.append(core.buffer_chunks)
            assert received == len(payload)
            await stream.send_eof()
            del stream  # the last chunks go with the last reference
            await conn.wait_closed()
            after.append(core.buffer_chunks)
        handler_done.set()

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                core = conn._endpoint.core
                stream = await conn.open_stream()
                for offset in range(0, len(payload), 100_000):
                    await stream.send(payload[offset : offset + 100_000])
                    assert core.buffer_chunks <= SEND_BUFFER // CHUNK + 2
                await stream.send_eof()
                assert await read_all(stream) == b""
                assert core.buffer_chunks <= 2  # what is left of the finished stream's buffers
            await handler_done.wait()
    # The receiver never held more than its window (+ a partly read chunk and a spare).
    assert max(peaks) <= WINDOW // CHUNK + 2
    assert after == [0]


async def test_max_data_caps_what_a_connection_buffers(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # 8 streams with 128 KiB windows could buffer 1 MiB; the connection allows 256 KiB.
    cap, window, streams = 256 * 1024, 128 * 1024, 8
    server = dataclasses.replace(server_config, max_data=cap, max_stream_data=window)
    payload = bytes(range(256)) * 2048  # 512 KiB per stream
    peaks: list[int] = []
    received: dict[int, bytes] = {}

    async def slow_reader(stream: QuicStream, core: Endpoint) -> None:
        data = bytearray()
        while True:
            try:
                data += await stream.receive(4000)
            except anyio.EndOfStream:
                break
            peaks.append(core.buffer_chunks)
            await anyio.sleep(0)
        received[stream.stream_id] = bytes(data)
        await stream.send_eof()

    async def handler(conn: QuicConnection) -> None:
        async with conn, anyio.create_task_group() as tg:
            for _ in range(streams):
                stream = await conn.accept_stream()
                assert isinstance(stream, QuicStream)
                tg.start_soon(slow_reader, stream, conn._endpoint.core)

    async def send_one(conn: QuicConnection) -> None:
        stream = await conn.open_stream()
        await stream.send(payload)
        await stream.send_eof()
        assert await read_all(stream) == b""

    with anyio.fail_after(30):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                async with anyio.create_task_group() as tg:
                    for _ in range(streams):
                        tg.start_soon(send_one, conn)
    assert sorted(received) == [4 * i for i in range(streams)]
    assert all(data == payload for data in received.values())
    # At most the connection window, plus a partly read chunk and a spare per stream.
    assert max(peaks) <= cap // CHUNK + 2 * streams


async def test_reset_streams_give_their_share_of_max_data_back(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # Each abandoned stream sends most of the connection window; if what it sent were
    # not credited back when it is reset, the connection would stall on the second.
    server = dataclasses.replace(server_config, max_data=64 * 1024, max_stream_data=64 * 1024)
    chunk = bytes(40 * 1024)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            async for stream in conn:
                assert isinstance(stream, QuicStream)
                data = await stream.receive()
                await stream.send(b"g")  # bytes arrived: the client may now reset
                try:
                    data += await read_all(stream)
                except StreamReset:
                    continue
                await stream.send(len(data).to_bytes(8, "big"))
                await stream.send_eof()

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                for _ in range(10):
                    stream = await conn.open_stream()
                    await stream.send(chunk)
                    assert await stream.receive(1) == b"g"
                    stream.reset(7)
                stream = await conn.open_stream()
                await stream.send(chunk)
                await stream.send_eof()
                assert await read_all(stream) == b"g" + len(chunk).to_bytes(8, "big")


async def test_cancelled_receive_loses_no_bytes(server_config: QuicConfig, client_config: QuicConfig) -> None:
    go = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.open_uni_stream()
            await go.wait()
            await stream.send(b"after the cancel")
            await stream.send_eof()
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                with anyio.move_on_after(0.1) as scope:
                    await conn.accept_stream()  # nothing yet: the stream exists only once data flows
                assert scope.cancelled_caught
                go.set()
                stream = await conn.accept_stream()
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await stream.receive()  # cancelled before it could take anything
                assert await read_all(stream) == b"after the cancel"


async def test_cancelled_send_still_sends_everything(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    client = dataclasses.replace(client_config, send_buffer_size=16 * 1024)
    payload = bytes(range(256)) * 4096  # 1 MiB, far more than the send buffer
    with anyio.fail_after(20):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                with anyio.move_on_after(0.01):
                    await stream.send(payload)
                await stream.send(b"tail")
                await stream.send_eof()
                assert await read_all(stream) == payload + b"tail"


async def test_a_cancelled_send_keeps_the_bytes_it_was_given(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # send() borrows the caller's buffer while it runs; cancelled with bytes still
    # queued, it keeps a copy of them: changing the buffer afterwards changes nothing.
    client = dataclasses.replace(client_config, send_buffer_size=16 * 1024)
    original = bytes(range(256)) * 4096
    buffer = bytearray(original)
    go = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            await go.wait()  # read nothing until the client's send() was cancelled
            assert isinstance(stream, QuicStream)
            await stream.send(await read_all(stream))
            await stream.send_eof()

    server = dataclasses.replace(server_config, max_stream_data=64 * 1024)  # far less than the payload
    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                with anyio.move_on_after(0.2) as scope:
                    await stream.send(buffer)
                assert scope.cancelled_caught
                buffer[:] = bytes(len(buffer))
                buffer.extend(b"the buffer can grow again")
                go.set()
                await stream.send_eof()
                assert await read_all(stream) == original


async def test_send_cancelled_before_it_yields_sends_nothing(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await stream.send(b"never")
                assert scope.cancelled_caught
                with anyio.CancelScope() as scope:  # a last send hands over before it yields:
                    scope.cancel()  # not in a cancelled scope
                    await stream.send(b"never", eof=True)
                assert scope.cancelled_caught
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await stream.send_eof()
                assert scope.cancelled_caught
                await stream.send(b"sent")
                await stream.send_eof()
                assert await read_all(stream) == b"sent"


async def test_the_end_of_a_stream_is_raised_without_a_yield_unless_cancelled(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    """receive() at the end raises EndOfStream at once (as trio's channels do), on
    both backends; in a cancelled scope the cancellation wins."""
    ran: list[str] = []

    async def other_task() -> None:
        ran.append("other task")

    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"ping", eof=True)
                data = await read_all(stream)  # to the end: the FIN is in
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await stream.receive()
                assert scope.cancelled_caught
                async with anyio.create_task_group() as tg:
                    tg.start_soon(other_task)
                    with pytest.raises(anyio.EndOfStream):
                        await stream.receive()
                    assert ran == []  # it did not yield to the task above
    assert data == b"ping" and ran == ["other task"]


async def test_cancelled_connect_leaves_no_thread(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            with anyio.CancelScope() as scope:
                scope.cancel()
                async with open_quic_connection("localhost", listener.port, config=client_config):
                    pass
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send_eof()
                assert await read_all(stream) == b""
    await assert_network_threads(0)

