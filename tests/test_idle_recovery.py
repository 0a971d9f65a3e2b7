"""A request lost after the connection went idle is sent again within a probe
timeout: the network thread, asleep until a timer seconds away, learns of the
retransmission timer the new packet armed, whether it sent the packet or the
event loop's thread did (inline I/O)."""

from __future__ import annotations

import dataclasses
import time

import anyio
import pytest

from aiopquic import QuicConfig, open_quic_connection

from .helpers import echo_handler, read_all, running_server
from .lossy_relay import LossyRelay

pytestmark = pytest.mark.anyio

#: One packet, bigger than any ACK: with nothing after it, only a timer recovers it.
REQUEST = bytes(range(256)) * 4 + bytes(100)
FULL_PACKET = 1000
#: The longest a lost request may take to come back: several probe timeouts on
#: loopback, far less than the seconds an idle network thread sleeps.
RECOVERY_BOUND = 2.0


@pytest.mark.parametrize("inline_io", [True, False], ids=["inline", "network-thread"])
async def test_a_request_lost_after_idle_is_sent_again_within_a_probe_timeout(
    server_config: QuicConfig, client_config: QuicConfig, inline_io: bool
) -> None:
    client = dataclasses.replace(client_config, inline_io=inline_io)
    with anyio.fail_after(15):
        async with running_server(echo_handler, server_config) as listener:
            with LossyRelay(("127.0.0.1", listener.port)) as relay:
                async with open_quic_connection("127.0.0.1", relay.port, config=client) as conn:
                    stream = await conn.open_stream()
                    await stream.send(b"warm-up", eof=True)
                    assert await read_all(stream) == b"warm-up"
                    await anyio.sleep(0.2)  # the ACKs settle; both network threads go idle
                    lost_before = relay.to_server_stats.lost
                    relay.drop_next(1, min_size=FULL_PACKET)
                    started = time.monotonic()
                    stream = await conn.open_stream()
                    await stream.send(REQUEST, eof=True)
                    with anyio.fail_after(RECOVERY_BOUND):
                        assert await read_all(stream) == REQUEST
                    assert relay.to_server_stats.lost == lost_before + 1, relay
                    assert time.monotonic() - started < RECOVERY_BOUND
