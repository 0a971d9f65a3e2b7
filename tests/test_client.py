"""QuicClient: many connections over one client socket and network thread."""

from __future__ import annotations

import dataclasses
import socket
import threading

import anyio
import pytest

from aiopquic import (
    ConnectionClosed,
    HandshakeError,
    QuicClient,
    QuicConfig,
    QuicConnection,
)
from aiopquic.cli.certs import CertificateSet

from .helpers import assert_network_threads, echo_handler, echo_once, network_threads, running_server

pytestmark = pytest.mark.anyio


async def test_connections_share_one_socket_and_thread(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            await assert_network_threads(1)  # the server's
            async with QuicClient(client_config) as client:
                ports = set()
                for i in range(3):  # one after the other
                    async with client.connect("127.0.0.1", listener.port) as conn:
                        await echo_once(conn, b"sequential %d" % i)
                        assert conn.local_address is not None
                        ports.add(conn.local_address[1])
                conns = [await client.connect("127.0.0.1", listener.port) for _ in range(4)]
                async with anyio.create_task_group() as tg:  # at once
                    for i, conn in enumerate(conns):
                        tg.start_soon(echo_once, conn, b"concurrent %d" % i)
                for conn in conns:
                    assert conn.local_address is not None
                    ports.add(conn.local_address[1])
                    await conn.aclose()
                assert ports == {client.port}
                await assert_network_threads(2)
            await assert_network_threads(1)


async def test_leaving_the_client_closes_its_connections(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    closed_on_server: list[ConnectionClosed] = []

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            try:
                await conn.accept_stream()
            except ConnectionClosed as exc:
                closed_on_server.append(exc)

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with QuicClient(client_config) as client:
                conn = await client.connect("127.0.0.1", listener.port)
            with pytest.raises(anyio.ClosedResourceError):
                await conn.open_stream()
            with pytest.raises(anyio.ClosedResourceError):
                await client.connect("127.0.0.1", listener.port)
            while not closed_on_server:
                await anyio.sleep(0.01)
    assert closed_on_server[0].by_peer


async def test_a_failed_handshake_leaves_the_others_alone(
    server_config: QuicConfig, client_config: QuicConfig, other_certs: CertificateSet
) -> None:
    stranger = dataclasses.replace(server_config, certfile=other_certs.certfile, keyfile=other_certs.keyfile)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as good, running_server(
            echo_handler, stranger
        ) as bad:
            async with QuicClient(client_config) as client:
                async with client.connect("127.0.0.1", good.port) as conn:
                    with pytest.raises(HandshakeError):
                        await client.connect("localhost", bad.port)
                    await echo_once(conn, b"still here")
                async with client.connect("127.0.0.1", good.port) as conn:
                    await echo_once(conn, b"and still connecting")


async def test_a_cancelled_connect_leaves_the_client_usable(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with QuicClient(client_config) as client:
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await client.connect("127.0.0.1", listener.port)
                async with client.connect("127.0.0.1", listener.port) as conn:
                    await echo_once(conn, b"after the cancelled attempt")


async def test_sessions_resume_within_one_client(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    async def resumed(client: QuicClient, port: int) -> bool:
        async with client.connect("localhost", port) as conn:
            await echo_once(conn, b"ping")
            return conn.session_resumed

    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with QuicClient(client_config) as client:
                first = [await resumed(client, listener.port) for _ in range(3)]
            # The unused tickets go back to the config for the next client.
            async with QuicClient(client_config) as client:
                later = await resumed(client, listener.port)
            off = dataclasses.replace(client_config, resume_sessions=False)
            async with QuicClient(off) as client:
                never = [await resumed(client, listener.port) for _ in range(3)]
    assert first == [False, True, True]
    assert later is True
    assert never == [False, False, False]


async def test_both_address_families(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config, host="::1") as v6, running_server(
            echo_handler, server_config, host="127.0.0.1"
        ) as v4:
            async with QuicClient(client_config) as client:
                async with client.connect("::1", v6.port) as conn6, client.connect("127.0.0.1", v4.port) as conn4:
                    await echo_once(conn6, b"six")
                    await echo_once(conn4, b"four")
            async with QuicClient(client_config, local_host="127.0.0.1") as client:
                with pytest.raises(OSError, match="no IPv4 address"):
                    await client.connect("::1", v6.port)


async def test_misuse_says_what_to_do(client_config: QuicConfig) -> None:
    client = QuicClient(client_config)
    with pytest.raises(RuntimeError, match="async with QuicClient"):
        await client.connect("127.0.0.1", 4433)
    with pytest.raises(ValueError, match="local_port"):
        QuicClient(client_config, local_port=70000)
    with pytest.raises(ValueError, match="local_host"):
        QuicClient(client_config, local_host="localhost")
    with pytest.raises(TypeError, match="QuicConfig"):
        QuicClient("not a config")  # type: ignore[arg-type]
    async with client:
        with pytest.raises(RuntimeError, match="only once"):
            await client.__aenter__()


async def test_binding_a_port_in_use_fails_on_entry(client_config: QuicConfig) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with anyio.fail_after(10), pytest.raises(OSError, match="address in use"):
            async with QuicClient(client_config, local_host="127.0.0.1", local_port=port):
                pass


def test_no_thread_before_entry(client_config: QuicConfig) -> None:
    threads, network = threading.active_count(), network_threads()
    QuicClient(client_config)
    assert threading.active_count() <= threads and network_threads() <= network


async def test_the_body_s_errors_and_cancellation_come_out_as_themselves(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            await assert_network_threads(1)  # the server's
            with pytest.raises(ValueError, match="from the body"):
                async with QuicClient(client_config) as client, client.connect("127.0.0.1", listener.port):
                    raise ValueError("from the body")
            with anyio.CancelScope() as scope:
                async with QuicClient(client_config) as client:
                    conn = await client.connect("127.0.0.1", listener.port)
                    scope.cancel()
                    await anyio.sleep_forever()
            assert scope.cancelled_caught
            assert conn.closed
            await assert_network_threads(1)


async def test_without_an_ipv6_socket_it_reaches_ipv4(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # Another IPv6 socket holds the port: the client falls back to IPv4 alone.
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as taken:
        taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        taken.bind(("::", 0))
        port = taken.getsockname()[1]
        with anyio.fail_after(10):
            async with running_server(echo_handler, server_config) as listener:
                async with QuicClient(client_config, local_port=port) as client:
                    assert client.port == port
                    async with client.connect("127.0.0.1", listener.port) as conn:
                        await echo_once(conn, b"over IPv4")
                    with pytest.raises(OSError, match="no IPv6 socket could be had"):
                        await client.connect("::1", listener.port)
