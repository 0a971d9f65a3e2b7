"""The send path under cancellation, concurrency and resets, and closing with
bytes in flight: nothing is lost silently, nothing is sent that was refused."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import traceback
from collections.abc import Awaitable, Callable

import anyio
import pytest

from aiopquic import ConnectionClosed, QuicConfig, QuicConnection, QuicStream, StreamReset, open_quic_connection
from aiopquic.quic.connection import ERROR_CODE_ON_CLOSE_TIMEOUT, MAX_REASON_BYTES

from .helpers import echo_handler, read_all, running_server

pytestmark = pytest.mark.anyio

CHUNK = 16 * 1024  # about the bridge's buffer chunk (a little more: the bounds below hold)
SEND_BUFFER = 64 * 1024
WINDOW = 64 * 1024
PAYLOAD = bytes(range(256)) * 4096 * 2  # 2 MiB: far more than a window or a send buffer


def blocking_configs(server_config: QuicConfig, client_config: QuicConfig) -> tuple[QuicConfig, QuicConfig]:
    """``(server, client)`` with a small receive window and send buffer: a send of
    PAYLOAD waits for room as long as the server does not read."""
    return (
        dataclasses.replace(server_config, max_stream_data=WINDOW),
        dataclasses.replace(client_config, send_buffer_size=SEND_BUFFER),
    )


def holding_handler(hold: anyio.Event) -> Callable[[QuicConnection], Awaitable[None]]:
    """A server handler that takes the first stream and reads nothing until ``hold``."""

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            held = await conn.accept_stream()  # never read
            await hold.wait()
            await held.aclose()

    return handler


def reading_after(go: anyio.Event, received: list[bytes], done: anyio.Event) -> Callable[[QuicConnection], Awaitable[None]]:
    """A server handler that takes the first stream, reads nothing until ``go``,
    then reads it to its end into ``received`` and sets ``done``."""

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            await go.wait()
            received.append(await read_all(stream))
            done.set()

    return handler


async def test_cancelled_send_then_eof_and_graceful_close_delivers_everything(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # The bytes a cancelled send() still owes must reach the peer, then the FIN,
    # before a graceful close: not a clean close with the bytes lost.
    server, client = blocking_configs(server_config, client_config)
    go, done = anyio.Event(), anyio.Event()
    received: list[bytes] = []
    handler = reading_after(go, received, done)  # reads nothing until the client gave up waiting

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                with anyio.move_on_after(0.1) as scope:
                    await stream.send(PAYLOAD)
                assert scope.cancelled_caught
                await stream.send_eof()
                go.set()
            # Leaving the block closed gracefully: it waited for every byte and the FIN.
            with anyio.fail_after(10):
                await done.wait()
    assert hashlib.sha256(received[0]).digest() == hashlib.sha256(PAYLOAD).digest()


async def test_close_timeout_with_bytes_unacknowledged_is_not_a_clean_close(
    server_config: QuicConfig, client_config: QuicConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server, client = blocking_configs(server_config, dataclasses.replace(client_config, close_timeout=0.2))
    seen: list[ConnectionClosed] = []
    hold = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            held = await conn.accept_stream()  # and never read it: the client stays blocked
            try:
                await conn.accept_stream()
            except ConnectionClosed as exc:
                seen.append(exc)
            await hold.wait()
            await held.aclose()

    with anyio.fail_after(20), caplog.at_level(logging.WARNING, logger="aiopquic"):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                with anyio.move_on_after(0.1):
                    await stream.send(PAYLOAD)
                await stream.send_eof()
            with anyio.fail_after(5):
                while not seen:
                    await anyio.sleep(0.01)
            hold.set()
    assert seen[0].by_peer
    assert seen[0].error_code == ERROR_CODE_ON_CLOSE_TIMEOUT
    assert any("close_timeout" in record.getMessage() for record in caplog.records)


async def test_graceful_close_in_time_is_clean(
    server_config: QuicConfig, client_config: QuicConfig, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[BaseException] = []

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert await read_all(stream) == PAYLOAD
            try:
                await conn.accept_stream()
            except BaseException as exc:  # noqa: BLE001 - the test looks at what it is
                seen.append(exc)
                raise

    with anyio.fail_after(20), caplog.at_level(logging.WARNING, logger="aiopquic"):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(PAYLOAD)
                await stream.send_eof()
            with anyio.fail_after(5):
                while not seen:
                    await anyio.sleep(0.01)
    assert isinstance(seen[0], ConnectionClosed) and seen[0].error_code == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_second_concurrent_send_raises_busy_and_sends_nothing(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    server, client = blocking_configs(server_config, client_config)
    go = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            await go.wait()
            await stream.send(await read_all(stream))
            await stream.send_eof()

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                async with anyio.create_task_group() as tg:

                    async def send_then_eof() -> None:
                        await stream.send(PAYLOAD)
                        await stream.send_eof()

                    tg.start_soon(send_then_eof)
                    await anyio.sleep(0.05)  # the first send now waits for room
                    with pytest.raises(anyio.BusyResourceError):
                        await stream.send(b"INTRUDER")
                    go.set()
                    echoed = await read_all(stream)
                assert echoed == PAYLOAD
                assert conn.stats.bytes_sent == len(PAYLOAD)


async def test_reset_while_a_send_waits_makes_that_send_raise(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    server, client = blocking_configs(server_config, client_config)
    hold = anyio.Event()
    outcome: list[BaseException | None] = []
    with anyio.fail_after(20):
        async with running_server(holding_handler(hold), server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()

                async def sender() -> None:
                    try:
                        await stream.send(PAYLOAD)
                    except anyio.ClosedResourceError as exc:
                        outcome.append(exc)
                    else:
                        outcome.append(None)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    await anyio.sleep(0.05)
                    stream.reset(7)
                assert isinstance(outcome[0], anyio.ClosedResourceError)
                assert conn.stats.bytes_sent < len(PAYLOAD)  # what was dropped is not counted
                hold.set()


async def test_repeatedly_cancelled_sends_keep_memory_bounded(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    server, client = blocking_configs(server_config, client_config)
    hold = anyio.Event()
    one_send = 256 * 1024

    with anyio.fail_after(30):
        async with running_server(holding_handler(hold), server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                core = conn._endpoint.core
                stream = await conn.open_stream()
                for _ in range(40):
                    with anyio.move_on_after(0.01):
                        await stream.send(bytes(one_send))
                # The window, the send buffer and one cancelled send's rest, never 40 of them.
                assert core.buffer_chunks <= (SEND_BUFFER + one_send) // CHUNK + 4
                stream.reset(0)
                hold.set()


async def test_close_arguments_are_checked_before_anything_changes(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                for bad_code in (-1, 1 << 62):
                    with pytest.raises(ValueError, match="error_code"):
                        stream.reset(bad_code)
                    with pytest.raises(ValueError, match="error_code"):
                        stream.stop_sending(bad_code)
                    with pytest.raises(ValueError, match="error_code"):
                        conn.close(bad_code)
                with pytest.raises(TypeError, match="reason"):
                    conn.close(0, None)  # type: ignore[arg-type]
                assert not conn.closed
                await stream.send(b"still open")  # nothing above changed the stream
                await stream.send_eof()
                assert await read_all(stream) == b"still open"


async def test_a_long_close_reason_is_cut_and_the_close_still_goes_out(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    server = dataclasses.replace(server_config, idle_timeout=30.0)
    seen: list[ConnectionClosed] = []

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            try:
                while True:
                    await conn.accept_stream()
            except ConnectionClosed as exc:
                seen.append(exc)

    reason = "a" + "é" * 3000  # 6001 bytes of UTF-8: the cut falls inside a character
    with anyio.fail_after(10):  # far below the idle timeout the peer would otherwise wait for
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"x")
                conn.close(5, reason)
            while not seen:
                await anyio.sleep(0.01)
    assert seen[0].error_code == 5
    assert seen[0].reason == "a" + "é" * (MAX_REASON_BYTES // 2 - 1)


async def test_every_raise_of_a_closed_connection_is_a_fresh_exception(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        conn.close(9, "bye")

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                await conn.wait_closed()
                raised: list[ConnectionClosed] = []
                for _ in range(50):
                    try:
                        await conn.open_stream()
                    except ConnectionClosed as exc:
                        raised.append(exc)
                assert len({id(exc) for exc in raised}) == 50
                assert all(exc.error_code == 9 and exc.by_peer for exc in raised)
                assert len(traceback.extract_tb(raised[-1].__traceback__)) < 10


async def test_eof_and_aclose_while_another_task_sends(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # A FIN must never follow part of a message: send_eof() is busy while a send
    # waits, and aclose() resets the stream (the waiting send raises).
    server, client = blocking_configs(server_config, client_config)
    hold = anyio.Event()
    outcome: list[BaseException] = []

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            held = await conn.accept_stream()
            await hold.wait()
            with pytest.raises(StreamReset):
                await read_all(held)

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()

                async def sender() -> None:
                    try:
                        await stream.send(PAYLOAD)
                    except anyio.ClosedResourceError as exc:
                        outcome.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sender)
                    await anyio.sleep(0.05)
                    with pytest.raises(anyio.BusyResourceError):
                        await stream.send_eof()
                    await stream.aclose()
                assert isinstance(outcome[0], anyio.ClosedResourceError)
                hold.set()


async def test_the_connection_send_cap_bounds_all_streams_together(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    cap = 256 * 1024
    client = dataclasses.replace(client_config, connection_send_buffer_size=cap, send_buffer_size=cap)
    server = dataclasses.replace(server_config, max_stream_data=16 * 1024)  # most stays here
    streams, size = 100, 64 * 1024
    go = anyio.Event()
    received: list[int] = []

    async def handler(conn: QuicConnection) -> None:
        async with conn, anyio.create_task_group() as tg:
            await go.wait()
            for _ in range(streams):
                stream = await conn.accept_stream()

                async def drain(stream: object = stream) -> None:
                    received.append(len(await read_all(stream)))  # type: ignore[arg-type]

                tg.start_soon(drain)

    done: list[int] = []
    with anyio.fail_after(30):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:

                async def send_one() -> None:
                    stream = await conn.open_uni_stream()
                    await stream.send(bytes(size))
                    done.append(1)
                    await stream.aclose()

                async with anyio.create_task_group() as tg:
                    for _ in range(streams):
                        tg.start_soon(send_one)
                    await anyio.sleep(0.5)
                    # Each finished send left ~48 KiB buffered: the cap stops the rest.
                    assert len(done) <= cap // (size - 16 * 1024) + 2
                    go.set()
                while len(received) < streams:
                    await anyio.sleep(0.01)
    assert received == [size] * streams


async def test_send_with_eof_delivers_the_bytes_then_the_fin(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # send(data, eof=True) is send(data) then send_eof() in one hand-off: the
    # peer reads the bytes and the end, and the stream takes no more bytes.
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"hello", eof=True)
                assert await read_all(stream) == b"hello"
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.send(b"more")
                empty = await conn.open_stream()
                await empty.send(b"", eof=True)  # a FIN alone
                assert await read_all(empty) == b""
                big = await conn.open_stream()
                await big.send(PAYLOAD, eof=True)  # more than the send buffer: the FIN follows the last part
                assert hashlib.sha256(await read_all(big)).digest() == hashlib.sha256(PAYLOAD).digest()
                assert not conn._streams  # finished both ways: forgotten


async def test_a_send_with_eof_cancelled_after_its_first_byte_still_finishes(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # Committed means all of it: the rest of the bytes and the FIN, with no send_eof().
    server, client = blocking_configs(server_config, client_config)
    go, done = anyio.Event(), anyio.Event()
    received: list[bytes] = []
    handler = reading_after(go, received, done)

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                with anyio.move_on_after(0.1) as scope:
                    await stream.send(PAYLOAD, eof=True)
                assert scope.cancelled_caught
                with pytest.raises(anyio.ClosedResourceError):
                    await stream.send(b"after the end")
                go.set()
                with anyio.fail_after(10):
                    await done.wait()
    assert hashlib.sha256(received[0]).digest() == hashlib.sha256(PAYLOAD).digest()


async def test_send_nowait_writes_past_a_full_buffer_and_keeps_the_order(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # send_nowait() never waits, even with the send buffer full many times over;
    # a send() behind it waits for room; a send_nowait() while that send() waits
    # raises BusyResourceError (its bytes would overtake); after the end, it is closed.
    server, client = blocking_configs(server_config, client_config)
    go, done = anyio.Event(), anyio.Event()
    received: list[bytes] = []
    handler = reading_after(go, received, done)

    with anyio.fail_after(20):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                stream.send_nowait(PAYLOAD)  # 2 MiB into a 64 KiB buffer, nobody reading
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream.send, b"tail")
                    await anyio.wait_all_tasks_blocked()  # that send() now waits for room
                    with pytest.raises(anyio.BusyResourceError):
                        stream.send_nowait(b"INTRUDER")
                    go.set()
                await stream.send_eof()
                with pytest.raises(anyio.ClosedResourceError):
                    stream.send_nowait(b"after the end")
                with anyio.fail_after(10):
                    await done.wait()
    assert received[0] == PAYLOAD + b"tail"


async def test_waiting_for_an_answer_after_sending_wakes_the_network_thread(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    """A receive() that waits on a stream sent on (without a FIN) since its last
    wait ends a message: it asks for the network thread's wake-up at once (the
    turn's only one goes now). A wait with nothing sent before it does not."""
    answer = anyio.Event()
    more = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            async with stream:
                request = await stream.receive()
                await answer.wait()  # so the client's receive() surely waits
                await stream.send(request)
                await more.wait()
                await stream.send(b"more")

    async def set_soon(event: anyio.Event) -> None:
        await anyio.sleep(0.05)
        event.set()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                woken = 0
                wake_now = conn._wake_now

                def counting_wake_now() -> None:
                    nonlocal woken
                    woken += 1
                    wake_now()

                conn._wake_now = counting_wake_now  # type: ignore[method-assign]
                stream = await conn.open_stream()
                await stream.send(b"question")
                assert woken == 0  # a write alone waits for the turn's end
                async with anyio.create_task_group() as tg:
                    tg.start_soon(set_soon, answer)
                    assert await stream.receive() == b"question"
                assert woken == 1
                async with anyio.create_task_group() as tg:
                    tg.start_soon(set_soon, more)
                    assert await stream.receive() == b"more"  # waits, with nothing sent before
                assert woken == 1
