"""ECN validation (RFC 9000 section 13.4.2, picoquic patch 0021): we mark our
packets ECT(0) and keep doing so only while the peer's ACKs count them.

aioquic never sends ECN counts, so against it our packets must stop being marked
once its first ACK arrives; against our own stack (picoquic counts what it
receives) they stay marked to the end.  An ``EcnRelay`` between the two ends reads
the ECN bits of every datagram and forwards them unchanged.
"""

from __future__ import annotations

import anyio
import pytest
from aioquic.quic.configuration import QuicConfiguration

from aiopquic import QuicConfig, open_quic_connection
from aiopquic.cli.certs import CertificateSet

from .aioquic_peer import AioquicPeer
from .ecn_relay import ECT_0, NOT_ECT, EcnRelay
from .helpers import echo_handler, echo_once, read_all, running_server

pytestmark = pytest.mark.anyio

TIMEOUT = 10
HOSTS = ["127.0.0.1", "::1"]
DATA = bytes(range(256)) * 800  # 200 KiB: well over a hundred packets each way


@pytest.fixture
def our_client_config(certs: CertificateSet) -> QuicConfig:
    return QuicConfig(alpn=["test"], cafile=certs.cafile, server_name="localhost")


@pytest.fixture
def our_server_config(certs: CertificateSet) -> QuicConfig:
    return QuicConfig(alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile)


def assert_marking_stopped(marks: list[int]) -> None:
    """Marked ECT(0) at first, then never again once a datagram went out unmarked."""
    assert marks, "no datagram went through the relay"
    assert marks[0] == ECT_0, marks[:10]
    first_plain = marks.index(NOT_ECT) if NOT_ECT in marks else len(marks)
    assert first_plain < len(marks), f"all {len(marks)} datagrams stayed ECT(0)"
    assert all(m == NOT_ECT for m in marks[first_plain:]), marks
    assert len(marks) - first_plain > 100  # the transfer itself went out unmarked


@pytest.mark.parametrize("host", HOSTS)
async def test_client_stops_marking_for_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig, host: str
) -> None:
    port = await peer.serve(aioquic_server_config, host)
    with EcnRelay((host, port)) as relay, anyio.fail_after(TIMEOUT):
        async with open_quic_connection(host, relay.port, config=our_client_config) as conn:
            await echo_once(conn, DATA)
    assert_marking_stopped(relay.to_server)
    assert set(relay.to_client) == {NOT_ECT}  # aioquic marks nothing


@pytest.mark.parametrize("host", HOSTS)
async def test_server_marks_per_connection(
    peer: AioquicPeer,
    aioquic_client_config: QuicConfiguration,
    our_server_config: QuicConfig,
    our_client_config: QuicConfig,
    host: str,
) -> None:
    """One server socket, two clients: the connection to aioquic stops marking,
    the one to our own client (which reports ECN counts) keeps it."""
    async with running_server(echo_handler, our_server_config, host) as listener:
        with (
            EcnRelay((host, listener.port)) as to_aioquic,
            EcnRelay((host, listener.port)) as to_ours,
            anyio.fail_after(TIMEOUT),
        ):
            async with open_quic_connection(host, to_ours.port, config=our_client_config) as conn:
                aioquic = await peer.connect(host, to_aioquic.port, aioquic_client_config)
                stream_id = await peer.call(aioquic.send, DATA)
                assert await peer.call(aioquic.wait_stream, stream_id) == DATA
                stream = await conn.open_stream()
                await stream.send(DATA)
                await stream.send_eof()
                assert await read_all(stream) == DATA
    assert_marking_stopped(to_aioquic.to_client)
    assert set(to_ours.to_client) == {ECT_0}, to_ours.to_client
    assert set(to_ours.to_server) == {ECT_0}, to_ours.to_server
    assert len(to_ours.to_client) > 100
