"""Interop-runner knobs against aioquic: Retry, cipher suites, key update, QUIC v2,
and the error a version-negotiation failure gives.  Both roles, both backends."""

from __future__ import annotations

import dataclasses

import anyio
import pytest
from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from aioquic.tls import CipherSuite

from aiopquic import HandshakeError, QuicConfig, QuicConnection, open_quic_connection
from aiopquic.cli.certs import CertificateSet

from .aioquic_peer import AioquicPeer, PeerProtocol
from .helpers import echo_handler, echo_once, echo_stream, running_server

pytestmark = pytest.mark.anyio

TIMEOUT = 10
V2 = 0x6B3343CF


@pytest.fixture
def our_client_config(certs: CertificateSet) -> QuicConfig:
    return QuicConfig(alpn=["test"], cafile=certs.cafile, server_name="localhost")


def negotiated_suite(protocol: PeerProtocol) -> CipherSuite:
    key_schedule = protocol._quic.tls.key_schedule
    assert key_schedule is not None
    return CipherSuite(key_schedule.cipher_suite)


async def echo_through_aioquic(peer: AioquicPeer, client: PeerProtocol, data: bytes) -> None:
    stream_id = await peer.call(client.send, data)
    assert await peer.call(client.wait_stream, stream_id) == data


# -- Retry ------------------------------------------------------------------


@pytest.mark.parametrize("retry", [False, True])
async def test_server_retry_to_aioquic_client(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, server_config: QuicConfig, retry: bool
) -> None:
    config = dataclasses.replace(server_config, retry=retry)
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            assert await peer.call(lambda: client._quic._retry_count) == (1 if retry else 0)
            await echo_through_aioquic(peer, client, b"validated" * 500)


async def test_client_follows_aioquic_retry(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config, retry=True)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            assert await peer.call(lambda: server._quic._retry_source_connection_id) is not None
            await echo_once(conn, b"after retry" * 500)


# -- cipher suites ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suite"),
    [
        ("TLS_CHACHA20_POLY1305_SHA256", CipherSuite.CHACHA20_POLY1305_SHA256),
        ("TLS_AES_256_GCM_SHA384", CipherSuite.AES_256_GCM_SHA384),
    ],
)
async def test_client_cipher_suites_with_aioquic(
    peer: AioquicPeer,
    aioquic_server_config: QuicConfiguration,
    our_client_config: QuicConfig,
    name: str,
    suite: CipherSuite,
) -> None:
    port = await peer.serve(aioquic_server_config)
    config = dataclasses.replace(our_client_config, cipher_suites=[name])
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=config) as conn:
            server = await peer.accepted()
            assert await peer.call(negotiated_suite, server) == suite
            assert conn.stats.cipher_suite == name
            await echo_once(conn, b"restricted" * 500)


async def test_client_without_a_common_cipher_suite(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    aioquic_server_config.cipher_suites = [CipherSuite.AES_128_GCM_SHA256]
    port = await peer.serve(aioquic_server_config)
    config = dataclasses.replace(our_client_config, cipher_suites=["TLS_CHACHA20_POLY1305_SHA256"])
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(HandshakeError, match="cipher_suites") as info:
            await open_quic_connection("127.0.0.1", port, config=config)
    assert info.value.by_peer and info.value.transport_error == 0x128


async def test_server_cipher_suites_with_aioquic(
    peer: AioquicPeer, certs: CertificateSet, server_config: QuicConfig
) -> None:
    config = dataclasses.replace(server_config, cipher_suites=["TLS_CHACHA20_POLY1305_SHA256"])
    agreeing = QuicConfiguration(is_client=True, alpn_protocols=["test"], server_name="localhost")
    agreeing.load_verify_locations(cafile=str(certs.cafile))
    refused = dataclasses.replace(agreeing, cipher_suites=[CipherSuite.AES_128_GCM_SHA256])
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, agreeing)
            assert await peer.call(negotiated_suite, client) == CipherSuite.CHACHA20_POLY1305_SHA256
            await echo_through_aioquic(peer, client, b"chacha" * 500)
            with pytest.raises(ConnectionError):
                await peer.connect("127.0.0.1", listener.port, refused)
            terminated = await peer.call(peer.clients[-1].wait_terminated)
            assert terminated.error_code == 0x128  # TLS handshake_failure


def test_cipher_suites_and_versions_are_validated() -> None:
    with pytest.raises(ValueError, match="cipher_suites"):
        QuicConfig(alpn=["x"], cipher_suites=["TLS_AES_128_CCM_SHA256"])
    with pytest.raises(ValueError, match="cipher_suites"):
        QuicConfig(alpn=["x"], cipher_suites=[])
    with pytest.raises(TypeError, match="cipher_suites"):
        QuicConfig(alpn=["x"], cipher_suites="TLS_AES_128_GCM_SHA256")
    with pytest.raises(ValueError, match="versions"):
        QuicConfig(alpn=["x"], versions=["v1", "draft-29"])
    with pytest.raises(ValueError, match="versions"):
        QuicConfig(alpn=["x"], versions=["v2", "v2"])
    with pytest.raises(TypeError, match="versions"):
        QuicConfig(alpn=["x"], versions=[1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="retry"):
        QuicConfig(alpn=["x"], retry=1)  # type: ignore[arg-type]
    config = QuicConfig(alpn=["x"], cipher_suites=["TLS_AES_256_GCM_SHA384"], versions=["v2", "v1"])
    assert config.cipher_suites == ("TLS_AES_256_GCM_SHA384",) and config.versions == ("v2", "v1")


# -- key update ---------------------------------------------------------------


def one_rtt_key_phase(client: PeerProtocol) -> int:
    return int(client._quic._cryptos[tls.Epoch.ONE_RTT].recv.key_phase)


async def test_client_key_update_reaches_aioquic(
    peer: AioquicPeer, aioquic_server_config: QuicConfiguration, our_client_config: QuicConfig
) -> None:
    port = await peer.serve(aioquic_server_config)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=our_client_config) as conn:
            server = await peer.accepted()
            await echo_once(conn, b"before" * 500)
            assert await peer.call(one_rtt_key_phase, server) == 0
            conn.update_keys()
            await echo_once(conn, b"after" * 500)
            assert await peer.call(one_rtt_key_phase, server) == 1


async def test_server_key_update_reaches_aioquic(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, server_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            async for stream in conn:
                conn.update_keys()  # then the echo goes out in packets of the next key phase
                await echo_stream(stream)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            assert await peer.call(one_rtt_key_phase, client) == 0
            await echo_through_aioquic(peer, client, b"rekey" * 500)
            assert await peer.call(one_rtt_key_phase, client) == 1


# -- QUIC v2 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("versions", "expected"),
    [(("v1",), 1), (("v2", "v1"), V2), (("v2",), V2), (("v1", "v2"), 1)],
)
async def test_client_versions_with_aioquic(
    peer: AioquicPeer,
    aioquic_server_config: QuicConfiguration,
    our_client_config: QuicConfig,
    versions: tuple[str, ...],
    expected: int,
) -> None:
    port = await peer.serve(aioquic_server_config)
    config = dataclasses.replace(our_client_config, versions=versions)
    with anyio.fail_after(TIMEOUT):
        async with open_quic_connection("127.0.0.1", port, config=config) as conn:
            server = await peer.accepted()
            assert await peer.call(lambda: server._quic._version) == expected
            assert conn.stats.quic_version == expected
            await echo_once(conn, b"version" * 500)


@pytest.mark.parametrize(
    "versions", [[QuicProtocolVersion.VERSION_2], [QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2]]
)
async def test_server_speaks_v2_to_aioquic(
    peer: AioquicPeer,
    aioquic_client_config: QuicConfiguration,
    server_config: QuicConfig,
    versions: list[int],
) -> None:
    # aioquic starts in its first version and offers the others in version_information.
    aioquic_client_config.supported_versions = versions
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo_handler, server_config) as listener:
            client = await peer.connect("127.0.0.1", listener.port, aioquic_client_config)
            assert await peer.call(lambda: client._quic._version) == versions[0]
            await echo_through_aioquic(peer, client, b"v2" * 500)


async def test_version_negotiation_failure_is_ours(
    peer: AioquicPeer, certs: CertificateSet, our_client_config: QuicConfig
) -> None:
    # aioquic speaks only v1 and answers our v2 Initial with Version Negotiation:
    # picoquic reports that as a "remote" 0x437, but nobody refused anything.
    config = QuicConfiguration(
        is_client=False, alpn_protocols=["test"], supported_versions=[QuicProtocolVersion.VERSION_1]
    )
    config.load_cert_chain(certs.certfile, certs.keyfile)
    port = await peer.serve(config)
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(HandshakeError) as info:
            await open_quic_connection(
                "127.0.0.1", port, config=dataclasses.replace(our_client_config, versions=["v2"])
            )
    message = str(info.value)
    assert info.value.by_peer is False
    assert "refused" not in message, message
    assert "version" in message and "v2" in message and "v1" in message, message
