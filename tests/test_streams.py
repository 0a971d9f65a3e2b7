"""Streams: bidirectional and unidirectional from either side, FIN, reset, STOP_SENDING."""

from __future__ import annotations

import anyio
import pytest

from aiopquic import (
    QuicConfig,
    QuicConnection,
    QuicReceiveStream,
    QuicSendStream,
    QuicStream,
    StreamReset,
    open_quic_connection,
)

from .helpers import read_all, running_server

pytestmark = pytest.mark.anyio


async def test_server_opens_bidi_stream(server_config: QuicConfig, client_config: QuicConfig) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.open_stream()
            await stream.send(b"hello from the server")
            await stream.send_eof()
            assert await read_all(stream) == b"thanks"
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.accept_stream()
                assert isinstance(stream, QuicStream)
                assert stream.stream_id % 4 == 1  # server-initiated bidirectional
                assert await read_all(stream) == b"hello from the server"
                await stream.send(b"thanks")
                await stream.send_eof()


async def test_uni_streams_both_ways(server_config: QuicConfig, client_config: QuicConfig) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            incoming = await conn.accept_stream()
            assert isinstance(incoming, QuicReceiveStream)
            data = await read_all(incoming)
            reply = await conn.open_uni_stream()
            assert reply.stream_id % 4 == 3
            await reply.send(data.upper())
            await reply.send_eof()
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                out = await conn.open_uni_stream()
                assert isinstance(out, QuicSendStream)
                assert out.stream_id % 4 == 2
                await out.send(b"shout this")
                await out.send_eof()
                back = await conn.accept_stream()
                assert isinstance(back, QuicReceiveStream)
                assert await read_all(back) == b"SHOUT THIS"


async def test_reset_reaches_peer_with_code(server_config: QuicConfig, client_config: QuicConfig) -> None:
    seen = anyio.Event()
    codes: list[int] = []

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            assert await stream.receive() == b"partial"
            await stream.send(b"ok")
            with pytest.raises(StreamReset) as info:
                while True:
                    await stream.receive()
            codes.append(info.value.error_code)
            seen.set()
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"partial")
                assert await stream.receive() == b"ok"
                stream.reset(0x1234)
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.send(b"more")
                await seen.wait()
    assert codes == [0x1234]


async def test_stop_sending_reaches_peer_with_code(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            assert await stream.receive(5) == b"first"
            stream.stop_sending(0x77)
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"first")
                with pytest.raises(StreamReset) as info:
                    while True:  # keeps sending until the STOP_SENDING arrives
                        await stream.send(b"x" * 65536)
                assert info.value.error_code == 0x77
                assert "STOP_SENDING" in str(info.value)


async def test_receive_after_eof_keeps_raising(server_config: QuicConfig, client_config: QuicConfig) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.open_uni_stream()
            await stream.send(b"abc")
            await stream.send_eof()
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.accept_stream()
                assert await read_all(stream) == b"abc"
                for _ in range(2):
                    with pytest.raises(anyio.EndOfStream):
                        await stream.receive()


async def test_use_after_local_close_raises_closed_resource(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send_eof()
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.send(b"after eof")
                await stream.aclose()
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await conn.open_stream()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.send(b"after close")


async def test_byte_stream_wrappers_work(server_config: QuicConfig, client_config: QuicConfig) -> None:
    from anyio.streams.buffered import BufferedByteReceiveStream

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            for line in (b"one\r\n", b"two\r\nthr", b"ee\r\n"):
                await stream.send(line)
            await stream.send_eof()
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"go")
                buffered = BufferedByteReceiveStream(stream)
                lines = [await buffered.receive_until(b"\r\n", 100) for _ in range(3)]
                assert lines == [b"one", b"two", b"three"]


async def test_receive_nowait_takes_only_what_is_buffered(server_config: QuicConfig, client_config: QuicConfig) -> None:
    go = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            assert await read_all(stream) == b"ask"
            await go.wait()
            await stream.send(b"hello", eof=True)  # one hand-off: the bytes and the FIN arrive together
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"ask", eof=True)
                with pytest.raises(anyio.WouldBlock):
                    stream.receive_nowait()  # the server has sent nothing yet
                async with anyio.create_task_group() as tg:
                    first = []

                    async def receive_one() -> None:
                        first.append(await stream.receive(1))

                    tg.start_soon(receive_one)
                    await anyio.wait_all_tasks_blocked()
                    with pytest.raises(anyio.BusyResourceError):
                        stream.receive_nowait()  # a receive() waits: it must see the bytes first
                    go.set()
                assert first == [b"h"]
                assert stream.receive_nowait() == b"ello"
                with pytest.raises(anyio.EndOfStream):
                    stream.receive_nowait()


async def test_first_receive_on_an_arrived_stream_returns_bytes_without_yielding(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    """The first receive() on a stream the peer opened returns bytes already
    there without letting another task run first (its arrival started the
    handler); a cancelled scope still stops it."""
    seen: list[str] = []
    cancelled_first = anyio.Event()

    async def other() -> None:
        seen.append("other task")

    async def serve(stream: QuicStream) -> None:
        async with anyio.create_task_group() as tg:
            if stream.stream_id == 0:
                await anyio.sleep(0.2)  # the whole request is there by now
                tg.start_soon(other)
                seen.append(bytes(await stream.receive(5)).decode())
                tg.start_soon(other)
                seen.append(bytes(await stream.receive(5)).decode())
                await stream.send(b"done", eof=True)
            else:
                with anyio.CancelScope() as scope:
                    await anyio.sleep(0.2)
                    scope.cancel()
                    await stream.receive()
                if scope.cancelled_caught:
                    cancelled_first.set()
                await stream.send(b"", eof=True)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            await conn.serve_streams(serve)

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"firstlater", eof=True)
                assert await read_all(stream) == b"done"
                stream = await conn.open_stream()
                await stream.send(b"cancel me", eof=True)
                assert await read_all(stream) == b""
                await cancelled_first.wait()
    # No other task ran before the first receive() returned.  (The second
    # yields, but trio may then run its batch in either order.)
    assert seen[0] == "first"
    assert sorted(seen[1:]) == ["later", "other task", "other task"]
