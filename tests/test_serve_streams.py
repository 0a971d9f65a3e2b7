"""QuicConnection.serve_streams: a task per peer stream, in the backend's own task group."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import pytest

from aiopquic import AnyQuicStream, ConnectionClosed, QuicConfig, QuicConnection, QuicStream, open_quic_connection

from .helpers import echo_stream, read_all, running_server

if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

STREAMS = 20

#: Set by a server before it serves, read by its handlers.
served_by: contextvars.ContextVar[str] = contextvars.ContextVar("served_by")


async def sleep_until_cancelled(cancelled: anyio.Event) -> None:
    """Wait forever; set ``cancelled`` when the wait is cancelled."""
    try:
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class():
        cancelled.set()
        raise


def recording_handler(
    handle: Callable[[AnyQuicStream], Coroutine[Any, Any, None]], raised: list[BaseException], done: anyio.Event | None = None
) -> Callable[[QuicConnection], Awaitable[None]]:
    """A server handler that serves ``handle`` and keeps what serve_streams
    raised, for the test to look at; it sets ``done`` when it has returned."""

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            try:
                await conn.serve_streams(handle)
            except BaseException as exc:
                raised.append(exc)
        if done is not None:
            done.set()

    return handler


async def test_each_stream_gets_a_task_of_its_own(server_config: QuicConfig, client_config: QuicConfig) -> None:
    """Every handler runs at once: the last one to start lets all of them answer."""
    running = 0
    all_running = anyio.Event()
    served = anyio.Event()

    async def handle(stream: AnyQuicStream) -> None:
        nonlocal running
        assert isinstance(stream, QuicStream)
        async with stream:
            request = await read_all(stream)
            running += 1
            if running == STREAMS:
                all_running.set()
            await all_running.wait()
            await stream.send(request.upper())

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            await conn.serve_streams(handle)  # returns once the client closed and all are done
        served.set()

    async def ask(conn: QuicConnection, i: int, answers: dict[int, bytes]) -> None:
        stream = await conn.open_stream()
        await stream.send(b"stream %d" % i, eof=True)
        answers[i] = await read_all(stream)

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            answers: dict[int, bytes] = {}
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                async with anyio.create_task_group() as tg:
                    for i in range(STREAMS):
                        tg.start_soon(ask, conn, i, answers)
            await served.wait()
    assert answers == {i: b"STREAM %d" % i for i in range(STREAMS)}


async def test_a_failing_handler_cancels_the_others_and_raises(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    waiting = anyio.Event()
    cancelled = anyio.Event()
    raised: list[BaseException] = []

    async def handle(stream: AnyQuicStream) -> None:
        request = await read_all(stream)
        if request == b"fail":
            raise RuntimeError("handler failed")
        waiting.set()
        await sleep_until_cancelled(cancelled)

    with anyio.fail_after(10):
        async with running_server(recording_handler(handle, raised), server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                other = await conn.open_stream()
                await other.send(b"wait", eof=True)
                await waiting.wait()  # fail only once the other handler waits
                failing = await conn.open_stream()
                await failing.send(b"fail", eof=True)
                await cancelled.wait()
                await conn.wait_closed()  # the server's handler closed its connection
    [group] = raised
    assert isinstance(group, BaseExceptionGroup)
    [error] = group.exceptions
    assert isinstance(error, RuntimeError) and str(error) == "handler failed"


async def test_a_peer_that_closes_with_an_error_is_raised_as_connection_closed(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    """As the docstring says: the bare ConnectionClosed, once the handlers have
    returned, not an exception group around it."""
    handled = anyio.Event()
    raised: list[BaseException] = []
    done = anyio.Event()

    async def handle(stream: AnyQuicStream) -> None:
        await read_all(stream)
        handled.set()

    with anyio.fail_after(10):
        async with running_server(recording_handler(handle, raised, done), server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"x", eof=True)
                await handled.wait()
                await conn.aclose(error_code=7, reason="giving up")
            await done.wait()
    [error] = raised
    assert isinstance(error, ConnectionClosed), repr(error)
    assert error.error_code == 7 and error.reason == "giving up"


async def test_cancelling_the_caller_cancels_the_handlers(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    started = anyio.Event()
    cancelled = anyio.Event()
    returned = anyio.Event()

    async def handle(stream: AnyQuicStream) -> None:
        started.set()
        await sleep_until_cancelled(cancelled)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            with anyio.CancelScope() as scope:
                serving = anyio.Event()

                async def cancel_once_started() -> None:
                    await started.wait()
                    scope.cancel()
                    serving.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(cancel_once_started)
                    await conn.serve_streams(handle)
            assert scope.cancelled_caught and serving.is_set()
            returned.set()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"x")
                await cancelled.wait()
                await returned.wait()


async def test_handlers_can_run_in_a_task_group_of_the_callers(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn, anyio.create_task_group() as tg:
            await conn.serve_streams(echo_stream, tg)

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                for payload in (b"one", b"two"):
                    stream = await conn.open_stream()
                    await stream.send(payload, eof=True)
                    assert await read_all(stream) == payload


async def test_handlers_run_in_a_copy_of_the_callers_context(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    """Handlers start from the event dispatch, but see the context vars of the task
    that called serve_streams (and their own changes stay their own)."""
    seen: list[str | None] = []

    async def handle(stream: AnyQuicStream) -> None:
        seen.append(served_by.get(None))
        served_by.set("changed by a handler")
        await echo_stream(stream)

    async def handler(conn: QuicConnection) -> None:
        served_by.set("the serving task")
        async with conn:
            await conn.serve_streams(handle)

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                for payload in (b"one", b"two", b"three"):
                    stream = await conn.open_stream()
                    await stream.send(payload, eof=True)
                    assert await read_all(stream) == payload
    assert seen == ["the serving task"] * 3
