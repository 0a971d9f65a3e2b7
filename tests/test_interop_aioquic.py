"""Interop with aioquic (a QUIC stack nobody here wrote), in both roles, on both backends.

The aioquic peer runs in its own thread and asyncio loop (see ``aioquic_peer``):
aioquic needs asyncio, and these tests run on trio too.  aiopquic runs in the
test's own event loop.  aioquic's client verifies our certificate with the test CA.
"""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import anyio
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket

from aiopquic import (
    ConnectionClosed,
    HandshakeError,
    QuicClient,
    QuicConfig,
    QuicConnection,
    QuicReceiveStream,
    QuicStream,
    StreamReset,
    open_quic_connection,
)
from aiopquic.cli.certs import CertificateSet
from aiopquic.quic.connection import DATAGRAM_PACKET_ROOM
from aiopquic.quic.errors import PICOQUIC_ERROR_IDLE_TIMEOUT

from .aioquic_peer import AioquicPeer, PeerProtocol, early_data_echo
from .helpers import echo_handler, echo_once, make_odd_certificates, read_all, running_server

pytestmark = pytest.mark.anyio

TIMEOUT = 10
HOSTS = ["127.0.0.1", "::1"]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def aioquic_server_config(certs: CertificateSet) -> QuicConfiguration:
    config = QuicConfiguration(is_client=False, alpn_protocols=["test"], max_datagram_frame_size=65536)
    config.load_cert_chain(certs.certfile, certs.keyfile)
    return config


@pytest.fixture
def aioquic_client_config(certs: CertificateSet) -> QuicConfiguration:
    # Verification stays on (the default, CERT_REQUIRED) against the test CA.
    config = QuicConfiguration(
        is_client=True, alpn_protocols=["test"], server_name="localhost", max_datagram_frame_size=65536
    )
    config.load_verify_locations(cafile=str(certs.cafile))
    return config


@pytest.fixture
def our_client_config(certs: CertificateSet) -> QuicConfig:
    return QuicConfig(alpn=["test"], cafile=certs.cafile, server_name="localhost", max_datagram_frame_size=65535)


@pytest.fixture
def our_server_config(certs: CertificateSet) -> QuicConfig:
    return QuicConfig(
        alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile, max_datagram_frame_size=65535
    )


# ---------------------------------------------------------------------------
# aiopquic client -> aioquic server
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_client_bidi_echo(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig, host: str
) -> None:
    data = payload(50_000)
    port = await peer.serve(aioquic_server_config, host)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection(host, port, config=our_client_config) as conn:
            assert conn.alpn_protocol == "test"
            server = await peer.accepted()
            stream = await conn.open_stream()
            assert stream.stream_id == 0
            await stream.send(data)
            await stream.send_eof()
            assert await read_all(stream) == data
            assert await peer.call(server.wait_stream, stream.stream_id) == data


async def test_one_quic_client_two_connections_to_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with QuicClient(our_client_config) as client:
            async with client.connect("127.0.0.1", port) as first, client.connect("127.0.0.1", port) as second:
                servers = [await peer.accepted(), await peer.accepted()]
                assert first.local_address == second.local_address  # one socket
                for i, conn in enumerate((first, second)):
                    data = payload(10_000, seed=10 + i)
                    stream = await conn.open_stream()
                    await stream.send(data)
                    await stream.send_eof()
                    assert await read_all(stream) == data
                received = {await peer.call(server.wait_stream, 0) for server in servers}
                assert received == {payload(10_000, seed=10), payload(10_000, seed=11)}


async def test_client_uni_stream_to_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    data = payload(20_000, seed=1)
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            out = await conn.open_uni_stream()
            assert out.stream_id == 2
            await out.send(data[:5000])
            await out.send(data[5000:])
            await out.send_eof()
            # wait_stream returns only once aioquic saw the FIN.
            assert await peer.call(server.wait_stream, out.stream_id) == data


async def test_client_accepts_uni_stream_from_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    data = payload(30_000, seed=2)
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            stream_id = await peer.call(server.send, data, uni=True)
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicReceiveStream)
            assert stream.stream_id == stream_id == 3
            assert await read_all(stream) == data


async def test_client_datagrams_both_ways(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    sent = [b"dgram %d " % i + payload(100 * i, seed=i) for i in range(5)]
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            assert conn.max_datagram_size >= 1000
            server = await peer.accepted()  # aioquic has completed its handshake too
            for d in sent:
                await conn.send_datagram(d)
            assert sorted(await peer.call(server.wait_datagrams, len(sent))) == sorted(sent)
            echoed = [await conn.receive_datagram() for _ in sent]  # aioquic echoes each
            assert sorted(echoed) == sorted(sent)
            await peer.call(server.send_datagram, b"unsolicited from aioquic")
            assert await conn.receive_datagram() == b"unsolicited from aioquic"
            # The largest datagram we claim to send fits in a packet aioquic accepts.
            largest = payload(conn.max_datagram_size, seed=9)
            await conn.send_datagram(largest)
            assert (await peer.call(server.wait_datagrams, len(sent) + 1))[-1] == largest
            assert conn.stats.datagrams_sent == 6
            assert conn.stats.datagrams_received == 6


#: aioquic's max_datagram_frame_size -> the largest payload it takes (RFC 9221: the
#: limit counts the frame's type and length), capped by what fits one packet.
DATAGRAM_LIMITS = [(64, 62), (1000, 997), (65536, DATAGRAM_PACKET_ROOM)]


@pytest.mark.parametrize(("frame_size", "largest"), DATAGRAM_LIMITS)
async def test_client_datagram_of_max_size_reaches_aioquic(
    peer: AioquicPeer,
    aioquic_server_config: QuicConfiguration,
    our_client_config: QuicConfig,
    frame_size: int,
    largest: int,
) -> None:
    aioquic_server_config.max_datagram_frame_size = frame_size
    config = dataclasses.replace(our_client_config, max_datagram_frame_size=65536)
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=config) as conn:
            server = await peer.accepted()
            assert conn.max_datagram_size == largest
            data = payload(largest, seed=frame_size)
            await conn.send_datagram(data)
            assert await peer.call(server.wait_datagrams, 1) == [data]
            await echo_once(conn, b"still connected")
            assert server.terminated is None


@pytest.mark.parametrize(("frame_size", "largest"), DATAGRAM_LIMITS)
async def test_server_datagram_of_max_size_reaches_aioquic(
    peer: AioquicPeer,
    aioquic_client_config: QuicConfiguration,
    our_server_config: QuicConfig,
    frame_size: int,
    largest: int,
) -> None:
    aioquic_client_config.max_datagram_frame_size = frame_size
    config = dataclasses.replace(our_server_config, max_datagram_frame_size=65536)
    sizes: list[int] = []

    async def handler(conn: QuicConnection) -> None:
        sizes.append(conn.max_datagram_size)
        await conn.send_datagram(payload(conn.max_datagram_size, seed=frame_size))
        await echo_handler(conn)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            assert await peer.call(client.wait_datagrams, 1) == [payload(largest, seed=frame_size)]
            assert sizes == [largest]
            stream_id = await peer.call(client.send, b"still connected")
            assert await peer.call(client.wait_stream, stream_id) == b"still connected"
            assert client.terminated is None


async def test_client_names_a_chain_out_of_order(peer: AioquicPeer, tmp_path: Path) -> None:
    # aioquic serves the chain as its certfile lists it: here the CA first.
    odd = make_odd_certificates(tmp_path, ca_first=True)
    config = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    config.load_cert_chain(odd.certfile, odd.keyfile)
    port = await peer.serve(config)
    client = QuicConfig(alpn=["test"], cafile=odd.cafile, server_name="localhost")
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(HandshakeError, match="chain out of order"):
            await open_quic_connection("127.0.0.1", port, config=client)


async def test_client_sees_aioquic_close_code_and_reason(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            await peer.call(server.close, 0x1234, "aioquic server going away")
            with pytest.raises(ConnectionClosed) as info:
                await conn.accept_stream()
    assert info.value.error_code == 0x1234
    assert info.value.reason == "aioquic server going away"
    assert info.value.by_peer is True
    assert info.value.transport_error is None


async def test_client_close_code_and_reason_reach_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            conn.close(0x42, "aiopquic client done")
        terminated = await peer.call(server.wait_terminated)
    assert terminated.error_code == 0x42
    assert terminated.reason_phrase == "aiopquic client done"
    assert terminated.frame_type is None  # an application close (frame 0x1d)


async def test_client_reset_and_stop_sending_reach_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            to_reset = await conn.open_stream()
            await to_reset.send(b"abandoned")
            assert await to_reset.receive() == b"abandoned"  # echoed: aioquic has the stream
            to_reset.reset(0x21)
            assert await peer.call(server.wait_reset, to_reset.stream_id) == 0x21

            to_stop = await conn.open_stream()
            await to_stop.send(b"stop echoing")
            assert await peer.call(server.wait_bytes, to_stop.stream_id, 12) == b"stop echoing"
            to_stop.stop_sending(0x22)
            assert await peer.call(server.wait_stop_sending, to_stop.stream_id) == 0x22


async def test_client_sees_aioquic_reset_and_stop_sending(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            reset_by_peer = await conn.open_stream()
            await reset_by_peer.send(b"x")
            assert await reset_by_peer.receive() == b"x"
            await peer.call(server.reset_stream, reset_by_peer.stream_id, 0x31)
            with pytest.raises(StreamReset) as reset_info:
                await reset_by_peer.receive()
            assert reset_info.value.error_code == 0x31
            assert reset_info.value.stream_id == reset_by_peer.stream_id

            stopped_by_peer = await conn.open_stream()
            await stopped_by_peer.send(b"y")
            assert await stopped_by_peer.receive() == b"y"
            await peer.call(server.stop_stream, stopped_by_peer.stream_id, 0x32)
            with pytest.raises(StreamReset) as stop_info:
                while True:  # until the STOP_SENDING arrives
                    await stopped_by_peer.send(b"z" * 1000)
            assert stop_info.value.error_code == 0x32


async def test_client_accepts_bidi_stream_from_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    data = payload(10_000, seed=6)
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            stream_id = await peer.call(server.send, data)
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            assert stream.stream_id == stream_id == 1  # server-initiated bidirectional
            assert await read_all(stream) == data
            await stream.send(data[::-1])
            await stream.send_eof()
            assert await peer.call(server.wait_stream, stream_id) == data[::-1]


async def test_client_flow_control_and_stream_credit(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, certs: CertificateSet
) -> None:
    # Small windows on our side: aioquic must wait for our MAX_STREAM_DATA / MAX_DATA;
    # 300 streams at once: we must wait for aioquic's MAX_STREAMS (it allows 128).
    config = QuicConfig(
        alpn=["test"], cafile=certs.cafile, server_name="localhost", max_stream_data=16384, max_data=65536
    )
    big = payload(1_000_000, seed=7)
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=config) as conn:
            stream = await conn.open_stream()

            async def send_big() -> None:
                await stream.send(big)
                await stream.send_eof()

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_big)
                assert await read_all(stream) == big

            echoed: dict[int, bytes] = {}

            async def one(i: int) -> None:
                s = await conn.open_stream()
                await s.send(b"stream %d;" % i * 20)
                await s.send_eof()
                echoed[i] = await read_all(s)

            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(one, i)
    assert echoed == {i: b"stream %d;" % i * 20 for i in range(300)}


async def test_client_sees_aioquic_transport_error(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()

            def transport_close() -> None:
                server._quic.close(error_code=0xA, frame_type=0x8, reason_phrase="bad frame")
                server.transmit()

            await peer.call(transport_close)
            with pytest.raises(ConnectionClosed) as info:
                await conn.accept_stream()
    assert info.value.transport_error == 0xA  # PROTOCOL_VIOLATION
    assert info.value.reason == "bad frame"
    assert info.value.by_peer is True
    assert "PROTOCOL_VIOLATION" in str(info.value)


async def test_client_handshake_errors_against_aioquic(
    peer: AioquicPeer,
    aioquic_server_config: QuicConfiguration,
    certs: CertificateSet,
    other_certs: CertificateSet,
) -> None:
    port = await peer.serve(aioquic_server_config)
    other_alpn = QuicConfig(alpn=["other"], cafile=certs.cafile, server_name="localhost")
    untrusted = QuicConfig(alpn=["test"], cafile=other_certs.cafile, server_name="localhost")
    wrong_name = QuicConfig(alpn=["test"], cafile=certs.cafile, server_name="example.org")
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(HandshakeError, match="ALPN") as info:
            await open_quic_connection("127.0.0.1", port, config=other_alpn)
        assert info.value.by_peer and info.value.transport_error == 0x178  # no_application_protocol
        with pytest.raises(HandshakeError, match="cafile"):
            await open_quic_connection("127.0.0.1", port, config=untrusted)
        with pytest.raises(HandshakeError, match="example.org"):
            await open_quic_connection("127.0.0.1", port, config=wrong_name)


async def test_client_idle_timeout_negotiated_with_aioquic(
    peer: AioquicPeer, certs: CertificateSet, our_client_config: QuicConfig
) -> None:
    # aioquic asks for a 0.5 s idle timeout, we for 30 s: the connection times out
    # after 0.5 s, and the error must say so (not "30.0 s").
    config = QuicConfiguration(is_client=False, alpn_protocols=["test"], idle_timeout=0.5)
    config.load_cert_chain(certs.certfile, certs.keyfile)
    port = await peer.serve(config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            await peer.accepted()
            start = anyio.current_time()
            with pytest.raises(ConnectionClosed) as info:
                await conn.accept_stream()
            elapsed = anyio.current_time() - start
    assert 0.3 < elapsed < 3
    assert info.value.transport_error == PICOQUIC_ERROR_IDLE_TIMEOUT
    message = str(info.value)
    assert "30.0 s" not in message, f"the message states our idle_timeout, not the negotiated one: {message!r}"
    assert re.search(r"\b0\.5 ?s\b|\b500 ?ms\b", message), message


# ---------------------------------------------------------------------------
# aioquic client -> aiopquic server
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_server_bidi_echo(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig, host: str
) -> None:
    data = payload(50_000, seed=3)
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, our_server_config, host) as listener:
            client = await peer.connect(host, listener.port, aioquic_client_config)
            assert client.handshake is not None and client.handshake.alpn_protocol == "test"
            stream_id = await peer.call(client.send, data)
            assert stream_id == 0
            assert await peer.call(client.wait_stream, stream_id) == data


async def test_server_accepts_uni_stream_from_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    data = payload(20_000, seed=4)
    send, receive = anyio.create_memory_object_stream[tuple[str, int, bytes]](1)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            await send.send((type(stream).__name__, stream.stream_id, await read_all(stream)))
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.send, data, uni=True)
            assert await receive.receive() == ("QuicReceiveStream", stream_id, data)
            assert stream_id == 2


async def test_server_uni_stream_to_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    data = payload(30_000, seed=5)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            out = await conn.open_uni_stream()
            await out.send(data)
            await out.send_eof()
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.wait_first_stream)
            assert stream_id == 3  # server-initiated unidirectional
            assert await peer.call(client.wait_stream, stream_id) == data


async def test_server_datagrams_both_ways(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    sent = [b"dgram %d " % i + payload(100 * i, seed=i) for i in range(5)]
    send, receive = anyio.create_memory_object_stream[bytes](10)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            while True:
                data = await conn.receive_datagram()
                await send.send(data)
                await conn.send_datagram(b"echo:" + data)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            for d in sent:
                await peer.call(client.send_datagram, d)
            assert sorted([await receive.receive() for _ in sent]) == sorted(sent)
            echoed = await peer.call(client.wait_datagrams, len(sent))
            assert sorted(echoed) == sorted(b"echo:" + d for d in sent)


async def test_server_largest_datagram_reaches_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            assert conn.max_datagram_size >= 1000
            await conn.send_datagram(payload(conn.max_datagram_size, seed=10))
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            (got,) = await peer.call(client.wait_datagrams, 1)
    assert len(got) >= 1000
    assert got == payload(len(got), seed=10)


async def test_server_sees_aioquic_close_code_and_reason(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    send, receive = anyio.create_memory_object_stream[ConnectionClosed](1)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            try:
                await conn.accept_stream()
            except ConnectionClosed as exc:
                await send.send(exc)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            await peer.call(client.close, 0x1234, "aioquic client going away")
            closed = await receive.receive()
    assert closed.error_code == 0x1234
    assert closed.reason == "aioquic client going away"
    assert closed.by_peer is True
    assert closed.transport_error is None


async def test_server_close_code_and_reason_reach_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            reason = (await read_all(stream)).decode()
            conn.close(0x99, reason)
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            await peer.call(client.send, b"aiopquic server done")
            terminated = await peer.call(client.wait_terminated)
    assert terminated.error_code == 0x99
    assert terminated.reason_phrase == "aiopquic server done"
    assert terminated.frame_type is None  # an application close (frame 0x1d)


async def test_server_sees_aioquic_reset(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    send, receive = anyio.create_memory_object_stream[tuple[bytes, int, int]](1)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            got = bytearray()
            try:
                while True:
                    got += await stream.receive()
            except StreamReset as exc:
                await send.send((bytes(got), exc.error_code, exc.stream_id))
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.send, b"partial", end=False)
            await peer.call(client.reset_stream, stream_id, 0x1234)
            got, code, reset_id = await receive.receive()
    assert code == 0x1234
    assert reset_id == stream_id
    assert got in (b"", b"partial")  # bytes before a reset may be discarded


async def test_server_reset_reaches_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            await stream.receive()
            stream.reset(0x77)
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.send, b"reset me", end=False)
            assert await peer.call(client.wait_reset, stream_id) == 0x77


async def test_server_sees_aioquic_stop_sending(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    send, receive = anyio.create_memory_object_stream[tuple[int, int]](1)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            await stream.receive()
            try:
                while True:  # until the STOP_SENDING arrives
                    await stream.send(b"z" * 1000)
            except StreamReset as exc:
                await send.send((exc.error_code, exc.stream_id))
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.send, b"hello", end=False)
            await peer.call(client.wait_bytes, stream_id, 1)  # our server is sending
            await peer.call(client.stop_stream, stream_id, 0x55)
            assert await receive.receive() == (0x55, stream_id)


async def test_server_stop_sending_reaches_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            await stream.receive()
            stream.stop_sending(0x66)
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.send, b"stop me", end=False)
            assert await peer.call(client.wait_stop_sending, stream_id) == 0x66


async def test_server_opens_bidi_stream_to_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    data = payload(10_000, seed=8)
    send, receive = anyio.create_memory_object_stream[tuple[int, bytes]](1)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.open_stream()
            await stream.send(data)
            await stream.send_eof()
            await send.send((stream.stream_id, await read_all(stream)))
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config, echo=True)
            stream_id = await peer.call(client.wait_first_stream)
            assert await peer.call(client.wait_stream, stream_id) == data
            assert await receive.receive() == (stream_id, data)  # aioquic echoed it back
            assert stream_id == 1


async def test_server_flow_control_and_stream_credit(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, certs: CertificateSet
) -> None:
    # Our server allows 8 bidi and 2 uni streams with small windows: aioquic has to
    # wait for our MAX_STREAMS, MAX_STREAM_DATA and MAX_DATA as our handler reads.
    config = QuicConfig(
        alpn=["test"],
        certfile=certs.certfile,
        keyfile=certs.keyfile,
        max_streams_bidi=8,
        max_streams_uni=2,
        max_stream_data=16384,
        max_data=65536,
    )
    bidi = [payload(20_000, seed=100 + i) for i in range(40)]
    uni = [payload(5_000, seed=200 + i) for i in range(10)]
    send, receive = anyio.create_memory_object_stream[bytes](len(uni))

    async def handler(conn: QuicConnection) -> None:
        async def serve_stream(stream: object) -> None:
            if isinstance(stream, QuicReceiveStream):
                await send.send(await read_all(stream))
            else:
                assert isinstance(stream, QuicStream)
                await stream.send(await read_all(stream))
                await stream.send_eof()

        async with conn, anyio.create_task_group() as tg:
            async for stream in conn:
                tg.start_soon(serve_stream, stream)

    async def send_all(client: PeerProtocol) -> list[int]:
        ids = [client.send(d) for d in bidi]
        for d in uni:
            client.send(d, uni=True)
        return ids

    async def wait_all(client: PeerProtocol, ids: list[int]) -> list[bytes]:
        return [await client.wait_stream(i) for i in ids]

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            ids = await peer.call(send_all, client)
            assert await peer.call(wait_all, client, ids) == bidi
            assert sorted([await receive.receive() for _ in uni]) == sorted(uni)


async def test_server_uni_stream_resets_both_ways(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    send, receive = anyio.create_memory_object_stream[tuple[int, int]](1)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            incoming = await conn.accept_stream()
            assert isinstance(incoming, QuicReceiveStream)
            try:
                await read_all(incoming)
            except StreamReset as exc:
                out = await conn.open_uni_stream()
                await out.send(b"soon abandoned")
                out.reset(0x9)
                await send.send((exc.error_code, out.stream_id))
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.send, b"x", uni=True, end=False)
            await peer.call(client.reset_stream, stream_id, 0x8)
            code, ours = await receive.receive()
            assert code == 0x8
            assert await peer.call(client.wait_reset, ours) == 0x9


async def test_server_blocked_send_woken_by_aioquic_stop_sending(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, certs: CertificateSet
) -> None:
    # send_buffer_size=1024: the handler's 5 MB send() is parked waiting for room
    # when aioquic's STOP_SENDING arrives; it must wake up with StreamReset.
    config = QuicConfig(alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile, send_buffer_size=1024)
    send, receive = anyio.create_memory_object_stream[object](1)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            stream = await conn.accept_stream()
            assert isinstance(stream, QuicStream)
            await stream.receive()
            try:
                await stream.send(bytes(5_000_000))
                await send.send("send() returned")
            except StreamReset as exc:
                await send.send(exc.error_code)
            await conn.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            stream_id = await peer.call(client.send, b"go", end=False)
            await peer.call(client.wait_bytes, stream_id, 10_000)
            await peer.call(client.stop_stream, stream_id, 0x44)
            assert await receive.receive() == 0x44
            assert await peer.call(client.wait_reset, stream_id) == 0x44  # RFC 9000 3.5


async def test_server_key_update_and_new_connection_id_from_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, our_server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            await peer.call(client.request_key_update)
            stream_id = await peer.call(client.send, b"after key update" * 1000)
            assert await peer.call(client.wait_stream, stream_id) == b"after key update" * 1000
            old_cid = await peer.call(lambda: client._quic._peer_cid.cid)
            await peer.call(client.change_connection_id)
            assert await peer.call(lambda: client._quic._peer_cid.cid) != old_cid  # one we issued
            stream_id = await peer.call(client.send, b"after new CID" * 1000)
            assert await peer.call(client.wait_stream, stream_id) == b"after new CID" * 1000
            await peer.call(client.ping)


async def test_server_session_resumption_and_0rtt_from_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    tickets: list[SessionTicket] = []
    our_server_config = dataclasses.replace(our_server_config, early_data=True)  # 0-RTT is opt-in
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, our_server_config) as listener:
            first = await peer.connect(
                "127.0.0.1", listener.port, aioquic_client_config, session_ticket_handler=tickets.append
            )
            assert first.handshake is not None and not first.handshake.session_resumed
            stream_id = await peer.call(first.send, b"first")
            assert await peer.call(first.wait_stream, stream_id) == b"first"
            assert tickets, "our server issued no session ticket"
            aioquic_client_config.session_ticket = tickets[-1]
            echo, handshake, sent_early = await peer.call(
                early_data_echo, "127.0.0.1", listener.port, aioquic_client_config, b"early data"
            )
    assert echo == b"early data"
    assert handshake.session_resumed
    assert sent_early and handshake.early_data_accepted


async def test_aioquic_client_verifies_our_certificate(
    peer: AioquicPeer, other_certs: CertificateSet, our_server_config: QuicConfig
) -> None:
    # The same client setup as above, but trusting an unrelated CA, must refuse us:
    # proof that the other tests' aioquic client really verifies our certificate.
    config = QuicConfiguration(is_client=True, alpn_protocols=["test"], server_name="localhost")
    config.load_verify_locations(cafile=str(other_certs.cafile))
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, our_server_config) as listener:
            with pytest.raises(ConnectionError):
                await peer.connect("127.0.0.1", listener.port, config)
    (client,) = peer.clients
    assert client.terminated is not None
    assert client.terminated.error_code == 0x12A  # aioquic's own bad_certificate alert


async def test_aioquic_client_alpn_mismatch(
    peer: AioquicPeer, certs: CertificateSet, our_server_config: QuicConfig
) -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=["nope"], server_name="localhost")
    config.load_verify_locations(cafile=str(certs.cafile))
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, our_server_config) as listener:
            with pytest.raises(ConnectionError):
                await peer.connect("127.0.0.1", listener.port, config)
    (client,) = peer.clients
    assert client.terminated is not None
    assert client.terminated.error_code == 0x178  # our no_application_protocol alert


async def test_several_aioquic_clients_at_once(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, our_server_config: QuicConfig
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, our_server_config) as listener:
            clients = [await peer.connect("127.0.0.1", listener.port, aioquic_client_config) for _ in range(4)]
            ids = [await peer.call(c.send, b"client %d" % i * 500) for i, c in enumerate(clients)]
            for i, (c, stream_id) in enumerate(zip(clients, ids)):
                assert await peer.call(c.wait_stream, stream_id) == b"client %d" % i * 500
