"""Streams that end early or carelessly: closed before the peer allows them, dropped
without aclose(), reset by the peer and abandoned.  None may stall the connection
or keep memory for its lifetime."""

from __future__ import annotations

import dataclasses
import gc
import os

import anyio
import pytest

from aiopquic import QuicConfig, QuicConnection, StreamReset, open_quic_connection

from .helpers import assert_network_threads, read_all, running_server

pytestmark = pytest.mark.anyio


async def drain_handler(conn: QuicConnection) -> None:
    """Read every stream to its end (or reset) and close it."""

    async def drain(stream: object) -> None:
        assert hasattr(stream, "aclose")
        try:
            await read_all(stream)  # type: ignore[arg-type]
        except StreamReset:
            pass
        await stream.aclose()

    async with conn, anyio.create_task_group() as tg:
        async for stream in conn:
            tg.start_soon(drain, stream)


async def test_closing_streams_beyond_the_peers_stream_limit_sends_nothing_early(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # aclose() and stop_sending() on streams the peer has not allowed yet must wait
    # for its MAX_STREAMS: a STOP_SENDING for them now is a STREAM_LIMIT_ERROR.
    server = dataclasses.replace(server_config, max_streams_bidi=2)
    with anyio.fail_after(10):
        async with running_server(drain_handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                streams = [await conn.open_stream() for _ in range(10)]
                for index, stream in enumerate(streams):
                    await stream.send(b"x")
                    if index % 2:
                        await stream.aclose()
                    else:
                        stream.stop_sending(3)
                        await stream.send_eof()
                for stream in streams:
                    with pytest.raises((anyio.EndOfStream, anyio.ClosedResourceError, StreamReset)):
                        await stream.receive()
                del streams, stream
                gc.collect()
                # The connection lives on, and the stream credit came back.
                for _ in range(4):
                    await echo_once_drained(conn)
                assert not conn.closed


async def echo_once_drained(conn: QuicConnection) -> None:
    stream = await conn.open_stream()
    await stream.send(b"ping")
    await stream.send_eof()
    assert await read_all(stream) == b""


async def test_streams_dropped_without_aclose_give_their_credit_back(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    server = dataclasses.replace(server_config, max_streams_bidi=4)
    with anyio.fail_after(20):
        async with running_server(drain_handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                for index in range(40):  # ten times the peer's stream limit
                    stream = await conn.open_stream()
                    if index % 2:
                        await stream.send(b"half a message")  # no FIN, never read
                    with pytest.warns(ResourceWarning, match="unclosed"):
                        del stream
                        gc.collect()
                await echo_once_drained(conn)
                assert len(conn._streams) <= 1


async def test_a_handler_that_abandons_reset_streams_keeps_no_memory(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # A peer resetting request after request, at a handler that returns on StreamReset
    # without aclose(): each stream must go, with its buffers and its credit.
    server = dataclasses.replace(server_config, max_streams_bidi=8)
    server_conns: list[QuicConnection] = []

    async def handler(conn: QuicConnection) -> None:
        server_conns.append(conn)

        async def serve(stream: object) -> None:
            try:
                await read_all(stream)  # type: ignore[arg-type]
            except StreamReset:
                return  # abandoned: no aclose()

        async with conn, anyio.create_task_group() as tg:
            async for stream in conn:
                tg.start_soon(serve, stream)

    with anyio.fail_after(30), pytest.warns(ResourceWarning):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                for _ in range(200):  # 25 times the stream limit: credit must come back
                    stream = await conn.open_stream()
                    await stream.send(bytes(4096))
                    stream.reset(5)
                    await stream.aclose()
                # Our streams only queue their bytes: the server has to take all 200
                # before credit for the last ones can come back.
                while not server_conns or server_conns[0].stats.streams_accepted < 200:
                    await anyio.sleep(0.01)
                server_conn = server_conns[0]
                while len(server_conn._streams) > 8:
                    await anyio.sleep(0.01)
                    gc.collect()
                assert server_conn._endpoint.core.buffer_chunks <= 8 * 2 + 2


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_closed_connection_holds_no_file_descriptor(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    kept: list[QuicConnection] = []
    with anyio.fail_after(10):
        async with running_server(drain_handler, server_config) as listener:
            before = open_fds()
            for _ in range(5):
                async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                    await echo_once_drained(conn)
                kept.append(conn)  # still referenced: its socket and wake fd must be gone
            assert open_fds() == before


async def test_a_send_cancelled_then_aclosed_is_forgotten(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    client = dataclasses.replace(client_config, send_buffer_size=64 * 1024)
    server = dataclasses.replace(server_config, max_stream_data=64 * 1024)
    with anyio.fail_after(20):
        async with running_server(drain_handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                core = conn._endpoint.core
                for _ in range(50):
                    stream = await conn.open_stream()
                    with anyio.move_on_after(0.005):
                        await stream.send(bytes(512 * 1024))
                    await stream.aclose()
                assert len(conn._streams) == 0
                with anyio.fail_after(10):
                    while core.buffer_chunks > 2:  # the peer read them all
                        await anyio.sleep(0.01)


async def test_aclose_of_an_awaited_connection_never_entered(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(drain_handler, server_config) as listener:
            conn = await open_quic_connection("localhost", listener.port, config=client_config)
            with anyio.fail_after(1):  # not the 3 s of a close nobody dispatches
                await conn.aclose()
            await assert_network_threads(1)  # the server's alone
            assert conn.closed
            await conn.aclose()  # again: nothing to do


async def test_peer_streams_the_application_has_not_taken_hold_their_credit(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # A peer's uni stream gives its MAX_STREAMS credit back when the application
    # took it, not when its FIN reached our buffers: unaccepted streams stay bounded.
    server = dataclasses.replace(server_config, max_streams_uni=8)
    total = 200
    queued: list[int] = []
    chunks: list[int] = []
    received: list[bytes] = []
    ready = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            await ready.wait()
            await anyio.sleep(0.3)  # the client has sent every stream it could by now
            queued.append(len(conn._incoming))
            chunks.append(conn._endpoint.core.buffer_chunks)
            for _ in range(total):
                stream = await conn.accept_stream()
                received.append(await read_all(stream))

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                for index in range(total):
                    stream = await conn.open_uni_stream()
                    await stream.send(index.to_bytes(2, "big"))
                    await stream.aclose()
                ready.set()
                while len(received) < total:
                    await anyio.sleep(0.01)
    assert queued[0] <= 8
    assert chunks[0] <= 8 + 2
    assert sorted(int.from_bytes(data, "big") for data in received) == list(range(total))


async def test_finished_streams_kept_by_the_application_hold_no_send_buffer(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(20):
        async with running_server(drain_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                core = conn._endpoint.core
                kept = []
                for _ in range(1000):
                    stream = await conn.open_uni_stream()
                    await stream.send(b"x")
                    await stream.send_eof()
                    kept.append(stream)
                with anyio.fail_after(10):
                    while core.buffer_chunks > 2:  # not 1000 chunks of 16 KiB
                        await anyio.sleep(0.01)
                assert len(kept) == 1000
