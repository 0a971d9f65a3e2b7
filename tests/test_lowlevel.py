"""The waits and checkpoints streams use: cancellation while waiting, one waiter at a
time, and the fallback to anyio's public checkpoints."""

from __future__ import annotations

import sys

import anyio
import anyio.lowlevel
import pytest
import sniffio

from aiopquic import QuicConfig, QuicConnection, open_quic_connection
from aiopquic.quic._lowlevel import AsyncioSpot, lowlevel_for

from .helpers import read_all, running_server

pytestmark = pytest.mark.anyio


async def test_a_receive_cancelled_while_waiting_loses_nothing_and_one_waiter_at_a_time(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    go = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.open_uni_stream()
            await stream.send(b"first")
            await go.wait()
            await stream.send(b" and then the rest")
            await stream.send_eof()
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                stream = await conn.accept_stream()
                assert await stream.receive() == b"first"
                with anyio.move_on_after(0.1) as scope:
                    await stream.receive()  # waits: nothing more until `go`
                assert scope.cancelled_caught

                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream.receive)  # waits in the stream's spot
                    await anyio.wait_all_tasks_blocked()
                    with pytest.raises(anyio.BusyResourceError, match="receiving from"):
                        await stream.receive()
                    tg.cancel_scope.cancel()
                go.set()
                assert await read_all(stream) == b" and then the rest"


def test_asyncio_checkpoints_fall_back_to_anyio_public_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the private name used for speed, anyio's public functions serve.
    monkeypatch.setitem(sys.modules, "anyio._core._eventloop", None)
    fallback = lowlevel_for.__wrapped__("asyncio")
    assert fallback.spot is AsyncioSpot
    assert fallback.checkpoint_if_cancelled is anyio.lowlevel.checkpoint_if_cancelled
    assert fallback.cancel_shielded_checkpoint is anyio.lowlevel.cancel_shielded_checkpoint
    assert fallback.checkpoint is anyio.lowlevel.checkpoint


def test_only_asyncio_and_trio() -> None:
    with pytest.raises(RuntimeError, match="asyncio or trio"):
        lowlevel_for("curio")


async def test_checkpoint_if_cancelled_follows_cancel_scopes() -> None:
    """An endpoint's checkpoint_if_cancelled (on asyncio our Cython reading of
    anyio's state) raises in a cancelled scope, also from an outer one, but not
    through a shielded scope, and does nothing otherwise."""
    library = sniffio.current_async_library()
    check = lowlevel_for(library).bind().checkpoint_if_cancelled
    if library == "asyncio":
        from aiopquic.quic._fast import AsyncioCheckpointIfCancelled

        assert isinstance(check, AsyncioCheckpointIfCancelled)
    with anyio.fail_after(5):
        await check()  # nothing cancelled: returns
        with anyio.CancelScope() as scope:
            scope.cancel()
            await check()
            pytest.fail("a cancelled scope's checkpoint_if_cancelled() returned")
        assert scope.cancelled_caught
        with anyio.CancelScope() as outer:
            with anyio.CancelScope():
                outer.cancel()
                await check()
                pytest.fail("an outer cancelled scope's checkpoint_if_cancelled() returned")
        assert outer.cancelled_caught
        with anyio.CancelScope() as outer:
            outer.cancel()
            with anyio.CancelScope(shield=True):
                await check()  # shielded: returns
            await check()
            pytest.fail("unshielded again, it returned")
        assert outer.cancelled_caught


def test_asyncio_checkpoint_if_cancelled_falls_back_to_anyio(monkeypatch: pytest.MonkeyPatch) -> None:
    # Should anyio keep its task states elsewhere, its own function serves.
    import anyio._backends._asyncio as anyio_asyncio

    from aiopquic.quic._fast import asyncio_checkpoint_if_cancelled_for

    monkeypatch.delattr(anyio_asyncio, "_task_states")
    assert asyncio_checkpoint_if_cancelled_for(object()) is None
