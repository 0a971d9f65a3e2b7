"""0-RTT (early data) is opt-in on both sides, and a server sees which streams
came early.  aioquic plays the resuming client (it can send 0-RTT at will)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket

from aiopquic import QuicConfig, QuicConnection, QuicStream
from aiopquic.cli.certs import CertificateSet

from .aioquic_peer import AioquicPeer, early_data_echo
from .helpers import read_all, running_server

pytestmark = pytest.mark.anyio

TIMEOUT = 10
#: What a session ticket says when it lets the client send 0-RTT data (RFC 8446 4.6.1).
MAX_EARLY_DATA = 0xFFFFFFFF


@pytest.fixture
def peer() -> Iterator[AioquicPeer]:
    peer = AioquicPeer().start()
    yield peer
    peer.stop()


@pytest.fixture
def aioquic_client_config(certs: CertificateSet) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=["test"], server_name="localhost")
    config.load_verify_locations(cafile=str(certs.cafile))
    return config


def server_config(certs: CertificateSet, *, early_data: bool = False) -> QuicConfig:
    return QuicConfig(alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile, early_data=early_data)


@dataclasses.dataclass
class Seen:
    """What the server's handler saw of each stream, when it accepted it."""

    early: list[bool] = dataclasses.field(default_factory=list)
    remote_address: list[tuple[str, int] | None] = dataclasses.field(default_factory=list)


def recording_echo(seen: Seen) -> Callable[[QuicConnection], Awaitable[None]]:
    async def handler(conn: QuicConnection) -> None:
        seen.remote_address.append(conn.remote_address)
        async with conn:
            async for stream in conn:
                assert isinstance(stream, QuicStream)
                seen.early.append(stream.early_data)
                await stream.send(await read_all(stream))
                await stream.send_eof()

    return handler


async def ticket_from(peer: AioquicPeer, port: int, config: QuicConfiguration) -> SessionTicket:
    """Connect once (a full handshake, one echoed stream) and return the ticket our server sent."""
    tickets: list[SessionTicket] = []
    first = await peer.connect("127.0.0.1", port, config, session_ticket_handler=tickets.append)
    stream_id = await peer.call(first.send, b"first")
    assert await peer.call(first.wait_stream, stream_id) == b"first"
    assert tickets, "our server issued no session ticket"
    return tickets[-1]


async def test_server_refuses_early_data_by_default(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, certs: CertificateSet
) -> None:
    seen = Seen()
    with anyio.fail_after(TIMEOUT):
        async with running_server(recording_echo(seen), server_config(certs)) as listener:
            ticket = await ticket_from(peer, listener.port, aioquic_client_config)
            assert ticket.max_early_data_size in (None, 0), "the ticket offers 0-RTT"
            # A client that tries anyway (aioquic sends 0-RTT when the ticket says it may).
            aioquic_client_config.session_ticket = dataclasses.replace(ticket, max_early_data_size=MAX_EARLY_DATA)
            echo, handshake, sent_early = await peer.call(
                early_data_echo, "127.0.0.1", listener.port, aioquic_client_config, b"early data"
            )
    assert sent_early, "aioquic did not send its stream before the handshake completed"
    assert handshake.session_resumed and not handshake.early_data_accepted
    assert echo == b"early data"  # sent again as 1-RTT, nothing lost
    assert seen.early == [False, False]


async def test_server_with_early_data_marks_early_streams(
    peer: AioquicPeer, aioquic_client_config: QuicConfiguration, certs: CertificateSet
) -> None:
    seen = Seen()
    with anyio.fail_after(TIMEOUT):
        async with running_server(recording_echo(seen), server_config(certs, early_data=True)) as listener:
            aioquic_client_config.session_ticket = await ticket_from(peer, listener.port, aioquic_client_config)
            assert aioquic_client_config.session_ticket.max_early_data_size == MAX_EARLY_DATA
            echo, handshake, sent_early = await peer.call(
                early_data_echo, "127.0.0.1", listener.port, aioquic_client_config, b"early data"
            )
    assert sent_early and handshake.session_resumed and handshake.early_data_accepted
    assert echo == b"early data"
    assert seen.early == [False, True]
    # The handler started once the handshake was complete, 0-RTT stream or not.
    assert all(address is not None for address in seen.remote_address), seen.remote_address


def test_early_data_is_off_by_default_and_a_bool() -> None:
    assert QuicConfig(alpn=["test"]).early_data is False
    with pytest.raises(TypeError, match="early_data"):
        QuicConfig(alpn=["test"], early_data="yes")  # type: ignore[arg-type]
