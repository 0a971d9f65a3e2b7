"""A host name with several addresses: the first to complete a handshake wins (RFC 8305)."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import anyio
import pytest

from aiopquic import HandshakeError, QuicClient, QuicConfig, open_quic_connection
from aiopquic.cli.certs import CertificateSet
from aiopquic.quic import client

from .helpers import assert_network_threads, echo_handler, echo_once, running_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def silent_udp_port() -> Iterator[int]:
    """A bound UDP port on ::1 where nobody answers (packets vanish)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:
        silent.bind(("::1", 0))
        yield silent.getsockname()[1]


def _resolve_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    async def resolve(host: str, port: int) -> list[tuple[int, str]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in addresses]

    monkeypatch.setattr(client, "_resolve", resolve)


async def test_a_silent_first_address_does_not_stall_the_connection(
    server_config: QuicConfig, client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "localhost" resolves first to ::1, where nothing listens on the server's port.
    _resolve_to(monkeypatch, "::1", "127.0.0.1")
    with anyio.fail_after(5):
        async with running_server(echo_handler, server_config, host="127.0.0.1") as listener:
            start = time.monotonic()
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                elapsed = time.monotonic() - start
                assert conn.remote_address is not None and conn.remote_address[0] == "127.0.0.1"
                await echo_once(conn, b"ping")
    # The second address started after the attempt delay, not after the handshake timeout.
    assert elapsed < client_config.handshake_timeout / 2


async def test_the_first_address_wins_when_it_answers(
    server_config: QuicConfig, client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch, silent_udp_port: int
) -> None:
    _resolve_to(monkeypatch, "127.0.0.1", "::1")
    with anyio.fail_after(5):
        async with running_server(echo_handler, server_config, host="127.0.0.1") as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                assert conn.remote_address is not None and conn.remote_address[0] == "127.0.0.1"


async def test_when_every_address_fails_the_error_of_the_server_that_answered_wins(
    certs: CertificateSet, client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 127.0.0.1 answers, but speaks another protocol; ::1 stays silent.
    server = QuicConfig(alpn=["other"], certfile=certs.certfile, keyfile=certs.keyfile)
    _resolve_to(monkeypatch, "::1", "127.0.0.1")
    config = dataclasses.replace(client_config, handshake_timeout=1.0)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server, host="127.0.0.1") as listener:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:
                silent.bind(("::1", listener.port))
                with pytest.raises(HandshakeError) as info:
                    await open_quic_connection("localhost", listener.port, config=config)
    assert "timed out" not in str(info.value)
    assert any("also tried ::1" in note and "timed out" in note for note in info.value.__notes__)


async def test_when_every_address_is_silent_the_timeout_is_raised(
    client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch, silent_udp_port: int
) -> None:
    _resolve_to(monkeypatch, "::1", "127.0.0.1")
    config = dataclasses.replace(client_config, handshake_timeout=0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent_v4:
        silent_v4.bind(("127.0.0.1", silent_udp_port))
        with anyio.fail_after(10):
            with pytest.raises(HandshakeError, match="timed out") as info:
                await open_quic_connection("localhost", silent_udp_port, config=config)
    assert any(note.startswith("also tried") for note in info.value.__notes__)


async def test_a_quic_client_races_addresses_too(
    server_config: QuicConfig, client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ::1 is silent on the server's port; the attempt there is abandoned when 127.0.0.1 wins.
    _resolve_to(monkeypatch, "::1", "127.0.0.1")
    with anyio.fail_after(5):
        async with running_server(echo_handler, server_config, host="127.0.0.1") as listener:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as silent:
                silent.bind(("::1", listener.port))
                async with QuicClient(client_config) as quic_client:
                    for _ in range(2):
                        async with quic_client.connect("localhost", listener.port) as conn:
                            assert conn.remote_address is not None and conn.remote_address[0] == "127.0.0.1"
                            await echo_once(conn, b"ping")


async def test_a_cancel_that_lands_as_an_attempt_wins_leaks_nothing(
    server_config: QuicConfig, client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolve_to(monkeypatch, "127.0.0.1", "::1")
    real_attempt = client._attempt
    outer = anyio.CancelScope()

    async def attempt_then_cancelled(*args: object, **kwargs: object) -> object:
        conn = await real_attempt(*args, **kwargs)  # type: ignore[arg-type]
        outer.cancel()  # the caller gives up just as this attempt wins
        return conn

    monkeypatch.setattr(client, "_attempt", attempt_then_cancelled)
    with anyio.fail_after(5):
        async with running_server(echo_handler, server_config, host="127.0.0.1") as listener:
            with outer:
                await open_quic_connection("localhost", listener.port, config=client_config)
            assert outer.cancelled_caught
            await assert_network_threads(1)  # the server's alone: the winner was closed
