"""Hostile or odd peers, played by aioquic (its raw QuicConnection lets a test drop
or craft frames), on both backends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.packet import QuicErrorCode
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream as AioquicStream

from aiopquic import ConnectionClosed, QuicConfig, QuicConnection, QuicStream
from aiopquic.cli.certs import CertificateSet
from aiopquic.quic.errors import PICOQUIC_ERROR_REPEAT_TIMEOUT

from .aioquic_peer import AioquicPeer, PeerProtocol
from .helpers import running_server

pytestmark = pytest.mark.anyio

STREAM_STATE_ERROR = QuicErrorCode.STREAM_STATE_ERROR
PROTOCOL_VIOLATION = QuicErrorCode.PROTOCOL_VIOLATION


def stop_acknowledging(protocol: PeerProtocol) -> None:
    """From now on the aioquic connection sends no ACK frame (it still receives
    everything and answers with other frames)."""

    def no_ack(builder: QuicPacketBuilder, space: QuicPacketSpace, now: float) -> None:
        space.ack_at = None  # as if sent: no timer fires again for it

    quic: Any = protocol._quic
    quic._write_ack_frame = no_ack


def ping(protocol: PeerProtocol) -> None:
    protocol._quic.send_ping(0)
    protocol.transmit()


async def test_peer_that_pings_but_never_acknowledges_is_closed(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, certs: CertificateSet
) -> None:
    """A peer that takes our stream data, never acknowledges it, and keeps the
    connection alive with PINGs must not hold the connection (and what we buffer
    for it) for ever: we close it within a few idle timeouts."""
    idle_timeout = 1.0
    config = QuicConfig(
        alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile, idle_timeout=idle_timeout
    )
    closed: list[BaseException] = []
    server_saw_close = anyio.Event()

    async def flood(conn: QuicConnection) -> None:
        try:
            async with conn:
                stream = await conn.accept_stream()
                assert isinstance(stream, QuicStream)
                while True:
                    await stream.send(b"x" * 65536)
        except ConnectionClosed as exc:
            closed.append(exc)
            server_saw_close.set()
            raise

    with anyio.fail_after(20):
        async with running_server(flood, config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            await peer.call(stop_acknowledging, client)
            await peer.call(client.send, b"go", end=False)
            start = anyio.current_time()
            with anyio.move_on_after(10 * idle_timeout):
                while not server_saw_close.is_set():
                    await peer.call(ping, client)
                    with anyio.move_on_after(0.1):
                        await server_saw_close.wait()
            elapsed = anyio.current_time() - start
    assert closed, f"the connection was still open after {elapsed:.1f} s of PINGs without ACKs"
    (error,) = closed
    assert isinstance(error, ConnectionClosed) and not error.by_peer
    assert error.transport_error == PICOQUIC_ERROR_REPEAT_TIMEOUT
    assert "acknowledged none of our data for 1.0 s" in str(error), str(error)
    # From the first unacknowledged packet: a retransmission timeout, then the idle timeout.
    assert elapsed < 3 * idle_timeout


def send_on_stream_anyway(protocol: PeerProtocol, stream_id: int, data: bytes) -> None:
    """Send a STREAM frame on ``stream_id`` whatever aioquic thinks of it (here: the
    other side's unidirectional stream, which aioquic may only read)."""
    quic: Any = protocol._quic
    stream = AioquicStream(stream_id=stream_id, max_stream_data_remote=1 << 20, readable=False, writable=True)
    quic._streams[stream_id] = stream
    quic._streams_queue.append(stream)
    stream.sender.write(data)
    protocol.transmit()


async def test_stream_frame_on_our_send_only_stream_is_stream_state_error(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, server_config: QuicConfig
) -> None:
    """RFC 9000 19.8: a STREAM frame for a send-only stream is a STREAM_STATE_ERROR
    (picoquic said FLOW_CONTROL_ERROR)."""

    async def open_uni(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.open_uni_stream()
            await stream.send(b"to the client")
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(open_uni, server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.wait_first_stream)
            assert stream_id & 3 == 3  # a server-initiated unidirectional stream
            await peer.call(send_on_stream_anyway, client, stream_id, b"not allowed")
            terminated = await peer.call(client.wait_terminated)
    assert terminated.error_code == STREAM_STATE_ERROR, terminated


async def test_oversized_datagram_is_protocol_violation(peer: AioquicPeer, certs: CertificateSet) -> None:
    """RFC 9221 3: a DATAGRAM frame larger than our max_datagram_frame_size is a
    PROTOCOL_VIOLATION (picoquic said FRAME_ENCODING_ERROR)."""
    server_config = QuicConfig(
        alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile, max_datagram_frame_size=100
    )
    config = QuicConfiguration(
        is_client=True, alpn_protocols=["test"], server_name="localhost", max_datagram_frame_size=65536
    )
    config.load_verify_locations(cafile=str(certs.cafile))

    async def idle(conn: QuicConnection) -> None:
        async with conn:
            await conn.wait_closed()

    with anyio.fail_after(10):
        async with running_server(idle, server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, config)
            await peer.call(client.send_datagram, b"x" * 500)  # we accept at most 100
            terminated = await peer.call(client.wait_terminated)
    assert terminated.error_code == PROTOCOL_VIOLATION, terminated
