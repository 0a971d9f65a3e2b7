"""Receive window autotuning (issue 12): a stream's window starts at
``max_stream_data`` and doubles while the application reads at least half a
window per round trip, or while the sender waits at the window's edge and the
application keeps up (under loss), up to ``max_stream_window`` (default ``max_data``).
Checked functionally through the delaying relay, on the receiver's
``stats.stream_window``; the goodput it buys is measured by
``benchmarks/run.py --rtt-ms 20``, never here.  Also: a plain bbr transfer on
loopback completes (its speed is the benchmark's ``bulk-down-bbr`` row).
"""

from __future__ import annotations

import dataclasses

import anyio
import pytest

from aiopquic import QuicConfig, QuicConnection, QuicStream, open_quic_connection

from .helpers import read_all, running_server
from .lossy_relay import Impairment, LossyRelay
from .lossy_transfer import configs, transfer

pytestmark = pytest.mark.anyio

KIB = 1024
MIB = 1024 * KIB
#: A small first window on a 40 ms RTT: the window, not the CPU, limits the
#: transfer (64 KiB per RTT is 1.6 MB/s), so every window drains in about one
#: RTT and autotuning must grow it.
WINDOW = 64 * KIB
RTT40 = Impairment(delay=0.020)
LOSS5 = Impairment(delay=0.020, loss=0.05)


def _with(server: QuicConfig, client: QuicConfig, cc: str, **fields: object) -> tuple[QuicConfig, QuicConfig]:
    s, c = configs(server, client, cc, idle_timeout=30.0)
    return dataclasses.replace(s, **fields), dataclasses.replace(c, **fields)  # type: ignore[arg-type]


#: (congestion control, path, transfer size, least window expected at the end)
GROWTH = {
    # The window, not the CPU, limits the transfer: every window drains in about one RTT.
    "long-path": ("cubic", RTT40, 4 * MIB, 4 * WINDOW),
    # At 5 % loss each lost packet holds back what follows it for a round trip, so
    # Python reads well under a window per RTT while the sender (bbr1, which does
    # not slow down for random loss) sits at the window's edge.  By the read rate
    # alone the window reached 1-4 MiB here; the waiting sender takes it to 8-16 MiB.
    "loss": ("bbr1", LOSS5, 16 * MIB, 64 * WINDOW),
}


@pytest.mark.parametrize("direction", ["down", "up"])
@pytest.mark.parametrize("case", list(GROWTH))
async def test_window_grows_when_it_limits_the_sender(
    server_config: QuicConfig, client_config: QuicConfig, case: str, direction: str
) -> None:
    cc, path, size, least = GROWTH[case]
    server, client = _with(server_config, client_config, cc, max_stream_data=WINDOW)
    result = await transfer(server, client, direction=direction, size=size, impairment=path, seed=3, timeout=25.0)
    assert result.receiver_stats is not None
    window = result.receiver_stats.stream_window
    assert window >= least, f"the receive window stayed at {window} bytes"
    assert window <= server.max_data


async def test_window_stays_within_max_stream_window(server_config: QuicConfig, client_config: QuicConfig) -> None:
    server, client = _with(
        server_config, client_config, "cubic", max_stream_data=WINDOW, max_stream_window=2 * WINDOW
    )
    result = await transfer(
        server, client, direction="down", size=2 * MIB, impairment=RTT40, seed=3, timeout=25.0
    )
    assert result.receiver_stats is not None
    assert result.receiver_stats.stream_window == 2 * WINDOW


async def test_fixed_window(server_config: QuicConfig, client_config: QuicConfig) -> None:
    """max_stream_window = max_stream_data: no autotuning."""
    server, client = _with(
        server_config, client_config, "cubic", max_stream_data=WINDOW, max_stream_window=WINDOW
    )
    result = await transfer(server, client, direction="down", size=MIB, impairment=RTT40, seed=3, timeout=25.0)
    assert result.receiver_stats is not None
    assert result.receiver_stats.stream_window == WINDOW


@pytest.mark.parametrize("direction", ["down", "up"])
async def test_bbr_bulk_on_loopback(server_config: QuicConfig, client_config: QuicConfig, direction: str) -> None:
    """bbr, paced by picoquic's timers, moves verified bytes at full speed (no relay)."""
    server, client = configs(server_config, client_config, "bbr", idle_timeout=30.0)
    result = await transfer(
        server, client, direction=direction, size=16 * MIB, impairment=None, seed=0, timeout=25.0
    )
    assert result.receiver_stats is not None


def test_max_stream_window_is_checked() -> None:
    with pytest.raises(ValueError, match="max_stream_window"):
        QuicConfig(alpn=["x"], max_stream_data=MIB, max_stream_window=MIB - 1)
    with pytest.raises(TypeError, match="max_stream_window"):
        QuicConfig(alpn=["x"], max_stream_window="big")  # type: ignore[arg-type]
    assert QuicConfig(alpn=["x"], max_stream_window=MIB).max_stream_window == MIB


async def test_window_stays_within_max_data_by_default(server_config: QuicConfig, client_config: QuicConfig) -> None:
    server, client = _with(server_config, client_config, "cubic", max_stream_data=WINDOW, max_data=2 * WINDOW)
    result = await transfer(
        server, client, direction="down", size=2 * MIB, impairment=RTT40, seed=3, timeout=25.0
    )
    assert result.receiver_stats is not None
    assert result.receiver_stats.stream_window == 2 * WINDOW


async def test_a_slow_reader_keeps_its_window(server_config: QuicConfig, client_config: QuicConfig) -> None:
    """A reader slower than the path (4 KiB per 20 ms against 64 KiB per 40 ms
    RTT) is what holds the sender back, at the window's edge: the window stays."""
    server, client = _with(server_config, client_config, "cubic", max_stream_data=WINDOW)
    size = 256 * KIB

    async def send_bytes(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            await stream.send(bytes(size), eof=True)
            await read_all(stream)

    async with running_server(send_bytes, server) as listener:
        with LossyRelay(("127.0.0.1", listener.port), RTT40) as relay, anyio.fail_after(25):
            async with open_quic_connection("127.0.0.1", relay.port, config=client) as conn:
                stream = await conn.open_stream()
                await stream.send(b"go")
                received = 0
                while received < size:
                    received += len(await stream.receive(4 * KIB))
                    await anyio.sleep(0.020)  # the slow consumer under test, not a wait for an event
                await stream.send_eof()
                assert conn.stats.stream_window == WINDOW
