"""Inline I/O: while the network thread sleeps, the event loop's thread receives
and sends the packets itself (QuicConfig.inline_io).  What arrives while the
event loop is busy must still be taken, and both settings must talk to each
other.  (What it sends is recovered like any other packet, on time:
test_idle_recovery.py.)"""

from __future__ import annotations

import dataclasses
import select
import threading
import time

import anyio
import pytest
from aioquic.quic.configuration import QuicConfiguration

from aiopquic import QuicConfig, open_quic_connection
from aiopquic._core import Endpoint

from .aioquic_peer import AioquicPeer
from .helpers import echo_handler, read_all, running_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("server_inline", "client_inline"), [(True, False), (False, True), (False, False)]
)
async def test_either_setting_talks_to_the_other(
    server_config: QuicConfig, client_config: QuicConfig, server_inline: bool, client_inline: bool
) -> None:
    server = dataclasses.replace(server_config, inline_io=server_inline)
    client = dataclasses.replace(client_config, inline_io=client_inline)
    payload = bytes(range(256)) * 4096  # 1 MiB: windows fill, the network threads stay busy
    with anyio.fail_after(30):
        async with running_server(echo_handler, server) as listener:
            async with open_quic_connection("127.0.0.1", listener.port, config=client) as conn:
                for i in range(50):
                    stream = await conn.open_stream()
                    await stream.send(f"request {i}".encode(), eof=True)
                    assert await read_all(stream) == f"request {i}".encode()
                stream = await conn.open_stream()

                async def send_payload() -> None:
                    await stream.send(payload, eof=True)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(send_payload)
                    assert await read_all(stream) == payload


async def test_what_comes_while_the_event_loop_is_blocked_is_taken_meanwhile(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, client_config: QuicConfig
) -> None:
    # An idle connection; then the event loop blocks (a long computation, say)
    # while the peer (aioquic, in a thread of its own) answers.  Nothing in the
    # event loop reads the socket meanwhile: the network thread must (it looks at
    # it every few ms while a connection is open), so that the answer is in the
    # stream's buffer when the event loop comes back, not in the kernel's.
    answer = bytes(range(256)) * 20
    client = dataclasses.replace(client_config, alpn=["test"])
    port = await peer.serve(aioquic_server_config, echo=False)
    with anyio.fail_after(15):
        async with open_quic_connection("127.0.0.1", port, config=client) as conn:
            server = await peer.accepted()
            stream = await conn.open_stream()
            await stream.send(b"ask")
            await peer.call(server.wait_bytes, stream.stream_id, 3)
            await anyio.sleep(0.2)  # the ACKs settle: the connection is idle
            peer.call_later(0.1, server.send, answer, stream_id=stream.stream_id)
            time.sleep(0.6)  # the event loop is blocked: nothing in it reads the socket
            received = bytearray()
            with pytest.raises(anyio.EndOfStream):
                while True:
                    received += stream.receive_nowait()  # WouldBlock: nobody took it
            assert received == answer


async def test_the_endpoint_describes_its_hand_over_flags(server_config: QuicConfig, client_config: QuicConfig) -> None:
    # The diagnosis of a stall (benchmarks/peers/aiopquic_peer.py prints it when a
    # client fails): every flag, a number each, the thread's exit among them.
    names = (
        "events_waiting py_wake_pending py_signal_needed net_idle net_sleeping net_wake_pending "
        "commands_waiting wake_owed python_wants sockets_to_python python_paused handshaking "
        "handback_us thread_exited"
    ).split()
    with anyio.fail_after(30):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("127.0.0.1", listener.port, config=client_config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"ping", eof=True)
                assert await read_all(stream) == b"ping"
                core = conn._endpoint.core
                pairs = dict(pair.split("=") for pair in core.describe().split())
                assert list(pairs) == names
                assert all(value.isdigit() for value in pairs.values())
                assert pairs["thread_exited"] == "0"
                assert pairs["python_wants"] == "1"  # inline I/O is on: Python asked for the socket
    assert "thread_exited=1" in core.describe().split()


def test_a_signal_racing_the_drain_after_an_inline_receive_keeps_the_wake_fd_readable(
    client_config: QuicConfig,
) -> None:
    # The drain that follows an inline receive takes the network thread's signal
    # if one is pending.  A new signal raised meanwhile must leave the wake fd
    # readable whenever its flag stays set: if the drain's read took its write,
    # no later signal writes the fd again (the flag says one is on its way) and
    # the event loop, waiting on the fd, never drains again.  That stalled a
    # benchmark server once in ~100,000 connections.  Here the race is run many
    # times: a signal pending (the fd readable), then the drain while another
    # thread raises signals in a loop without the GIL, as the network thread
    # would; once both are done, a signal left pending must have the fd readable.
    core = Endpoint(**client_config.endpoint_options(is_server=False))
    core.start("127.0.0.1", 0)
    start = threading.Barrier(2)
    rounds = 3000
    broken = 0

    def signal_rounds() -> None:
        for _ in range(rounds):
            start.wait()
            core._signal_python(20000)  # tens of microseconds, the drain among them
            start.wait()

    racer = threading.Thread(target=signal_rounds)
    racer.start()
    try:
        for _ in range(rounds):
            core.drain()  # a clean start: nothing pending, the fd read
            core._signal_python()  # one signal pending
            start.wait()
            core.drain(after_receive=True)  # ... taken while the racer raises more
            start.wait()  # the racer is done with this round
            readable = bool(select.select([core.fileno()], [], [], 0)[0])
            if core.signalled() and not readable:
                broken += 1
    finally:
        racer.join(30)
        core.close()
    assert broken == 0, f"{broken} of {rounds} rounds left a signal pending with nothing to wake the event loop"
