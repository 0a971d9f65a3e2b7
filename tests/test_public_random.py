"""picoquic's public random generator is shared by every network thread of the
process (patch 0006 puts a lock around it)."""

from __future__ import annotations

import threading

import anyio
import pytest

from aiopquic import QuicConfig, open_quic_connection
from aiopquic._core import _core

from .helpers import echo_handler, echo_once, running_server

VALUES_PER_CALL = 1024
CALLS_PER_THREAD = 128
THREADS = 4
ROUNDS = 8  # a round where the threads happen not to overlap shows nothing


def test_public_random_from_threads_never_repeats() -> None:
    """Threads drawing at once each get values of their own.

    Without the lock two threads read the same index and compute the same next
    value (and at -O0 the index overruns the seed array).  xorshift1024 does not
    repeat a 64-bit value within a million draws, so any repeat is the race.
    The call releases the GIL while it draws: the threads really run in parallel.
    """
    # Until an endpoint seeds it, the generator starts from the words 1..16, and its
    # first outputs do repeat: draw those away first.
    warm_up = bytearray(8 << 20)
    _core._public_random_into(warm_up, 0, len(warm_up))
    for _ in range(ROUNDS):
        repeats = _draw_in_threads()
        assert repeats == 0, f"{repeats} values drawn twice: threads raced the generator"


def _draw_in_threads() -> int:
    """Draw from THREADS threads at once; how many values came out more than once."""
    buffers = [bytearray(8 * VALUES_PER_CALL * CALLS_PER_THREAD) for _ in range(THREADS)]
    start = threading.Barrier(THREADS)

    def draw(buffer: bytearray) -> None:
        start.wait(timeout=10)
        for i in range(CALLS_PER_THREAD):
            _core._public_random_into(buffer, 8 * VALUES_PER_CALL * i, 8 * VALUES_PER_CALL)

    threads = [threading.Thread(target=draw, args=(buffer,)) for buffer in buffers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()
    values: list[int] = []
    for buffer in buffers:
        values.extend(memoryview(buffer).cast("Q"))
    return len(values) - len(set(values))


@pytest.mark.anyio
async def test_many_endpoints_at_once(server_config: QuicConfig, client_config: QuicConfig) -> None:
    """Stress: three servers and twelve client endpoints (fifteen network threads)
    handshake and echo at the same time, every thread drawing public randomness."""
    with anyio.fail_after(60):
        async with running_server(echo_handler, server_config) as a, running_server(
            echo_handler, server_config
        ) as b, running_server(echo_handler, server_config) as c:

            async def client(port: int) -> None:
                async with open_quic_connection("127.0.0.1", port, config=client_config) as conn:
                    for _ in range(5):
                        await echo_once(conn, b"x" * 3000)

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    for listener in (a, b, c):
                        tg.start_soon(client, listener.port)
