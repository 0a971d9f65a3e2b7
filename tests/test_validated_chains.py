"""A client config validates a server's certificate chain once, then remembers it.

Full handshakes (session resumption off) so that every connection receives the
server's certificates.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from aiopquic import HandshakeError, QuicConfig, open_quic_connection
from aiopquic.cli.certs import make_certificates

from .helpers import echo_handler, read_all, running_server

pytestmark = pytest.mark.anyio


async def _exchange(host: str, port: int, config: QuicConfig) -> None:
    async with open_quic_connection(host, port, config=config) as conn:
        assert not conn.session_resumed
        stream = await conn.open_stream()
        await stream.send(b"ping")
        await stream.send_eof()
        assert await read_all(stream) == b"ping"


def _full_handshakes(config: QuicConfig) -> QuicConfig:
    return dataclasses.replace(config, resume_sessions=False)


async def test_a_chain_is_validated_once_per_config(server_config: QuicConfig, client_config: QuicConfig) -> None:
    client = _full_handshakes(client_config)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            for _ in range(3):
                await _exchange("127.0.0.1", listener.port, client)
    assert client._trust.chains_recalled == 2


async def test_a_remembered_chain_still_has_to_match_the_name(tmp_path: Path) -> None:
    # The certificate names localhost only: the same chain, byte for byte, is
    # accepted for localhost and refused for 127.0.0.1.
    certs = make_certificates(tmp_path, ("localhost",))
    server = QuicConfig(alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile)
    client = QuicConfig(alpn=["test"], cafile=certs.cafile, resume_sessions=False)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server) as listener:
            await _exchange("localhost", listener.port, client)
            with pytest.raises(HandshakeError):
                await _exchange("127.0.0.1", listener.port, client)
            await _exchange("localhost", listener.port, client)
    assert client._trust.chains_recalled == 1


async def test_an_impostor_is_validated_and_refused(
    server_config: QuicConfig, client_config: QuicConfig, tmp_path: Path
) -> None:
    # The same name, another chain (signed by a CA the client does not trust).
    impostor = make_certificates(tmp_path, prefix="impostor-")
    impostor_config = QuicConfig(alpn=["test"], certfile=impostor.certfile, keyfile=impostor.keyfile)
    client = _full_handshakes(client_config)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            await _exchange("127.0.0.1", listener.port, client)
        async with running_server(echo_handler, impostor_config) as listener:
            with pytest.raises(HandshakeError, match="cafile"):
                await _exchange("127.0.0.1", listener.port, client)
    assert client._trust.chains_recalled == 0
