"""0-RTT (early data) is opt-in on both sides, and a server sees which streams
came early.  aioquic plays the resuming client (it can send 0-RTT at will)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.tls import SessionTicket

from aiopquic import HandshakeError, QuicClient, QuicConfig, QuicConnection, QuicStream, open_quic_connection
from aiopquic.cli.certs import CertificateSet

from .aioquic_peer import AioquicPeer, early_data_echo
from .helpers import echo_once, read_all, running_server

pytestmark = pytest.mark.anyio

TIMEOUT = 10
#: What a session ticket says when it lets the client send 0-RTT data (RFC 8446 4.6.1).
MAX_EARLY_DATA = 0xFFFFFFFF


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


def client_config(certs: CertificateSet, *, early_data: bool = False) -> QuicConfig:
    return QuicConfig(alpn=["test"], cafile=certs.cafile, server_name="localhost", early_data=early_data)


@asynccontextmanager
async def slow_return_path(server_port: int, delay: float) -> AsyncIterator[int]:
    """A UDP relay in front of ``server_port`` that delays every datagram of the
    server by ``delay``: time for the client to write its first stream bytes
    before the server's handshake reply arrives, however fast the machine.
    Yields the relay's port; one client at a time."""
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as front, await anyio.create_connected_udp_socket(
        "127.0.0.1", server_port
    ) as back, anyio.create_task_group() as tg:
        client: list[tuple[str, int]] = []
        sending = anyio.Lock()  # anyio sockets take one sender at a time

        async def to_server() -> None:
            async for data, address in front:
                client[:] = [address]
                await back.send(data)

        async def deliver_late(data: bytes) -> None:
            await anyio.sleep(delay)
            async with sending:
                await front.sendto(data, *client[0])

        async def to_client() -> None:
            async for data in back:
                tg.start_soon(deliver_late, data)

        tg.start_soon(to_server)
        tg.start_soon(to_client)
        yield front.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("server_early", "client_early", "second_early"),
    [(True, True, True), (False, True, False), (True, False, False), (False, False, False)],
)
async def test_our_client_sends_0rtt_only_when_both_opt_in(
    certs: CertificateSet, server_early: bool, client_early: bool, second_early: bool
) -> None:
    """The second connection resumes the first one's session; its first stream goes
    in 0-RTT only when both configs say early_data=True, and arrives whole either way."""
    seen = Seen()
    client = client_config(certs, early_data=client_early)
    # The relay's delay inflates the server's retransmission timer, and so the
    # draining period its shutdown waits out (up to close_timeout): keep it short.
    server = dataclasses.replace(server_config(certs, early_data=server_early), close_timeout=0.2)
    with anyio.fail_after(TIMEOUT):
        async with running_server(recording_echo(seen), server) as listener:
            async with slow_return_path(listener.port, 0.05) as port:
                for second in (False, True):
                    async with open_quic_connection("127.0.0.1", port, config=client) as conn:
                        await echo_once(conn, b"hello" * 1000)
                    assert conn.session_resumed == second
    assert seen.early == [False, second_early]


async def test_quic_client_sends_0rtt_too(certs: CertificateSet) -> None:
    """QuicClient.connect takes the same early path as open_quic_connection."""
    seen = Seen()
    server = dataclasses.replace(server_config(certs, early_data=True), close_timeout=0.2)
    with anyio.fail_after(TIMEOUT):
        async with running_server(recording_echo(seen), server) as listener:
            async with slow_return_path(listener.port, 0.05) as port, QuicClient(
                client_config(certs, early_data=True)
            ) as client:
                for _ in range(2):
                    async with client.connect("127.0.0.1", port) as conn:
                        assert conn.remote_address == ("127.0.0.1", port)
                        assert conn.alpn_protocol == "test"
                        await echo_once(conn, b"hello")
    assert seen.early == [False, True]


async def test_0rtt_connection_whose_handshake_fails_raises_handshake_error_on_use(
    certs: CertificateSet, other_certs: CertificateSet
) -> None:
    """The client returns the connection before the handshake completes; when it
    then fails (here: another server, whose certificate we do not trust, cannot
    use the ticket), the next use raises HandshakeError, and no handler ran."""
    client = client_config(certs, early_data=True)
    seen = Seen()
    untrusted = QuicConfig(
        alpn=["test"], certfile=other_certs.certfile, keyfile=other_certs.keyfile, early_data=True, close_timeout=0.2
    )
    with anyio.fail_after(TIMEOUT):
        async with running_server(recording_echo(Seen()), server_config(certs, early_data=True)) as listener:
            async with open_quic_connection("127.0.0.1", listener.port, config=client) as conn:
                await echo_once(conn, b"first")  # and a ticket
        async with running_server(recording_echo(seen), untrusted) as listener, slow_return_path(
            listener.port, 0.05
        ) as port:
            entered = False
            with pytest.raises(HandshakeError, match="certificate"):
                async with open_quic_connection("127.0.0.1", port, config=client) as conn:
                    entered = True
                    assert not conn.session_resumed  # not known yet
                    await echo_once(conn, b"early")
    assert entered, "the connection was not returned before the handshake completed"
    assert seen.early == [] and seen.remote_address == []


async def test_our_client_sends_0rtt_to_aioquic(
    peer: AioquicPeer, certs: CertificateSet
) -> None:
    """Against aioquic's server (which accepts early data): the resumed connection's
    first stream reaches it before the handshake completes, and comes back whole."""
    tickets: dict[bytes, SessionTicket] = {}
    config = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    config.load_cert_chain(certs.certfile, certs.keyfile)
    port = await peer.serve(
        config,
        session_ticket_handler=lambda ticket: tickets.__setitem__(ticket.ticket, ticket),
        session_ticket_fetcher=tickets.pop,
    )
    client = client_config(certs, early_data=True)
    with anyio.fail_after(TIMEOUT):
        async with slow_return_path(port, 0.05) as relay_port:
            for second in (False, True):
                async with open_quic_connection("127.0.0.1", relay_port, config=client) as conn:
                    await echo_once(conn, b"hello" * 1000)
                assert conn.session_resumed == second
                server = await peer.accepted()
                assert server.early_streams == ({0} if second else set())
