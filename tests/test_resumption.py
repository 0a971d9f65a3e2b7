"""TLS session resumption across connections made with one client config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest

from aiopquic import HandshakeError, QuicConfig, open_quic_connection
from aiopquic.cli.certs import make_certificates

from .helpers import echo_handler, read_all, running_server

pytestmark = pytest.mark.anyio


async def _exchange(port: int, config: QuicConfig) -> bool:
    """One connection with one echoed stream; return whether it resumed a session."""
    async with open_quic_connection("localhost", port, config=config) as conn:
        stream = await conn.open_stream()
        await stream.send(b"ping")
        await stream.send_eof()
        assert await read_all(stream) == b"ping"
        return conn.session_resumed


async def test_later_connections_resume_the_session(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            resumed = [await _exchange(listener.port, client_config) for _ in range(4)]
    assert resumed == [False, True, True, True]


async def test_resumption_can_be_turned_off(server_config: QuicConfig, client_config: QuicConfig) -> None:
    client = dataclasses.replace(client_config, resume_sessions=False)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            resumed = [await _exchange(listener.port, client) for _ in range(3)]
    assert resumed == [False, False, False]


async def test_a_server_that_does_not_know_the_ticket_gets_a_full_handshake(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            assert await _exchange(listener.port, client_config) is False
        # A new server instance (new ticket keys) under the same name.
        async with running_server(echo_handler, server_config) as listener:
            assert await _exchange(listener.port, client_config) is False
            assert await _exchange(listener.port, client_config) is True


async def test_a_ticket_does_not_vouch_for_another_server(
    server_config: QuicConfig, client_config: QuicConfig, tmp_path: Path
) -> None:
    # An impostor for "localhost" whose CA the client does not trust: the ticket from
    # the real server is useless to it, so the handshake checks its certificate.
    impostor = make_certificates(tmp_path, ("localhost",), prefix="impostor-")
    impostor_config = QuicConfig(alpn=["test"], certfile=impostor.certfile, keyfile=impostor.keyfile)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            assert await _exchange(listener.port, client_config) is False
        async with running_server(echo_handler, impostor_config) as listener:
            with pytest.raises(HandshakeError, match="cafile"):
                await _exchange(listener.port, client_config)
