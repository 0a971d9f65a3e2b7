"""Connections: close codes, timeouts, ALPN, TLS verification, key log, server behaviour."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiopquic.quic.client
import aiopquic.quic.config
import aiopquic.quic.server
from aiopquic import (
    ConnectionClosed,
    HandshakeError,
    QuicClient,
    QuicConfig,
    QuicConnection,
    QuicStream,
    open_quic_connection,
    serve_quic,
)
from aiopquic._core import Endpoint, TrustStore
from aiopquic.cli.certs import CertificateSet

from .helpers import (
    assert_network_threads,
    bound_udp_addresses,
    echo_handler,
    echo_once,
    make_odd_certificates,
    network_threads,
    read_all,
    running_server,
)
from .rebinding_relay import RebindingRelay

pytestmark = pytest.mark.anyio


async def _wait_closed_handler(conn: QuicConnection) -> None:
    async with conn:
        await conn.wait_closed()


async def test_close_code_and_reason_reach_the_server(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    result: list[ConnectionClosed] = []
    done = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            with pytest.raises(ConnectionClosed) as info:
                await conn.accept_stream()
            result.append(info.value)
            done.set()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                conn.close(0x42, "bye for now")
            await done.wait()
    (closed,) = result
    assert closed.error_code == 0x42
    assert closed.reason == "bye for now"
    assert closed.by_peer


async def test_close_code_and_reason_reach_the_client(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        conn.close(7, "server says no")

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                with pytest.raises(ConnectionClosed) as info:
                    await conn.accept_stream()
    assert info.value.error_code == 7
    assert info.value.reason == "server says no"
    assert info.value.by_peer
    assert isinstance(info.value, anyio.BrokenResourceError)


async def test_clean_close_ends_iteration(server_config: QuicConfig, client_config: QuicConfig) -> None:
    finished = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            async for _ in conn:
                pass
        finished.set()

    with anyio.fail_after(10):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config):
                pass
            await finished.wait()


async def test_leaving_async_with_always_tells_the_peer(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    # The client's network thread ends right after its CONNECTION_CLOSE: it must
    # never end before the close went out (the server would wait for its idle timeout).
    send, receive = anyio.create_memory_object_stream[bool](20)

    async def handler(conn: QuicConnection) -> None:
        async with conn:
            await conn.wait_closed()  # the idle timeout is 30 s: only the close ends it in time
            await send.send(True)

    with anyio.fail_after(10), send, receive:
        async with running_server(handler, server_config) as listener:
            for _ in range(20):
                async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                    stream = await conn.open_stream()
                    await stream.send(b"x")
                assert await receive.receive() is True


async def test_idle_timeout(server_config: QuicConfig, client_config: QuicConfig) -> None:
    config = dataclasses.replace(client_config, idle_timeout=0.5)
    server = dataclasses.replace(server_config, idle_timeout=0.5)
    with anyio.fail_after(10):
        async with running_server(_wait_closed_handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=config) as conn:
                with pytest.raises(ConnectionClosed) as info:
                    await conn.accept_stream()
    assert "timed out" in str(info.value)
    assert not info.value.by_peer


async def test_alpn_negotiation_picks_a_common_protocol(certs: CertificateSet) -> None:
    server = QuicConfig(alpn=["h3", "echo"], certfile=certs.certfile, keyfile=certs.keyfile)
    client = QuicConfig(alpn=["unknown", "echo"], cafile=certs.cafile)
    seen: list[str | None] = []
    handled = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        seen.append(conn.alpn_protocol)
        handled.set()
        await _wait_closed_handler(conn)

    with anyio.fail_after(10):
        async with running_server(handler, server) as listener:
            async with open_quic_connection("localhost", listener.port, config=client) as conn:
                assert conn.alpn_protocol == "echo"
                await handled.wait()
    assert seen == ["echo"]


async def test_alpn_mismatch_is_a_handshake_error(certs: CertificateSet) -> None:
    server = QuicConfig(alpn=["h3"], certfile=certs.certfile, keyfile=certs.keyfile)
    client = QuicConfig(alpn=["echo"], cafile=certs.cafile)
    with anyio.fail_after(10):
        async with running_server(_wait_closed_handler, server) as listener:
            with pytest.raises(HandshakeError) as info:
                async with open_quic_connection("localhost", listener.port, config=client):
                    pass
    assert "ALPN" in str(info.value)


@pytest.mark.parametrize(
    ("flaw", "message"),
    [
        ({"not_before_days": 1}, "not yet valid"),
        ({"not_before_days": -10, "server_auth": False}, "not allowed for server authentication"),
    ],
)
async def test_certificate_flaws_are_named(tmp_path: Path, flaw: dict[str, Any], message: str) -> None:
    odd = make_odd_certificates(tmp_path, **flaw)
    server = QuicConfig(alpn=["test"], certfile=odd.certfile, keyfile=odd.keyfile)
    client = QuicConfig(alpn=["test"], cafile=odd.cafile)
    with anyio.fail_after(10):
        async with running_server(_wait_closed_handler, server) as listener:
            with pytest.raises(HandshakeError, match=message) as info:
                await open_quic_connection("localhost", listener.port, config=client)
    assert "expired" not in str(info.value)


async def test_untrusted_certificate_fails(server_config: QuicConfig, other_certs: CertificateSet) -> None:
    client = QuicConfig(alpn=["test"], cafile=other_certs.cafile)
    with anyio.fail_after(10):
        async with running_server(_wait_closed_handler, server_config) as listener:
            with pytest.raises(HandshakeError) as info:
                async with open_quic_connection("localhost", listener.port, config=client):
                    pass
    assert "trusted CA" in str(info.value)


async def test_wrong_host_name_fails(server_config: QuicConfig, client_config: QuicConfig) -> None:
    client = dataclasses.replace(client_config, server_name="not-this-host.example")
    with anyio.fail_after(10):
        async with running_server(_wait_closed_handler, server_config) as listener:
            with pytest.raises(HandshakeError) as info:
                async with open_quic_connection("127.0.0.1", listener.port, config=client):
                    pass
    assert "not-this-host.example" in str(info.value)


async def test_verification_on_by_default(server_config: QuicConfig) -> None:
    # No cafile: the default CA bundle does not know our throwaway CA.
    client = QuicConfig(alpn=["test"])
    with anyio.fail_after(10):
        async with running_server(_wait_closed_handler, server_config) as listener:
            with pytest.raises(HandshakeError):
                async with open_quic_connection("localhost", listener.port, config=client):
                    pass


async def test_verify_false_accepts_any_certificate(server_config: QuicConfig) -> None:
    client = QuicConfig(alpn=["test"], verify=False)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("127.0.0.1", listener.port, config=client) as conn:
                stream = await conn.open_stream()
                await stream.send(b"unverified")
                await stream.send_eof()
                assert await read_all(stream) == b"unverified"


async def test_ipv6_loopback(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config, host="::1") as listener:
            async with open_quic_connection("::1", listener.port, config=client_config) as conn:
                assert conn.remote_address is not None and conn.remote_address[0] == "::1"
                stream = await conn.open_stream()
                await stream.send(b"v6")
                await stream.send_eof()
                assert await read_all(stream) == b"v6"


async def test_scoped_ipv6_address(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config, host="::1%lo") as listener:
            assert listener.address == ("::1%lo", listener.port)
            assert bound_udp_addresses(listener.port) == {"::1"}  # not widened to "::"
            async with open_quic_connection("::1%lo", listener.port, config=client_config) as conn:
                assert conn.remote_address is not None and conn.remote_address[0].startswith("::1")
                await echo_once(conn, b"scoped")


async def test_unknown_interface_is_refused(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        with pytest.raises(ValueError, match="no network interface 'nosuchif0'"):
            await serve_quic(echo_handler, "::1%nosuchif0", 0, server_config)
        with pytest.raises(ValueError, match="no network interface 'nosuchif0'"):
            await open_quic_connection("::1%nosuchif0", 4433, config=client_config)


async def test_no_host_serves_both_families(server_config: QuicConfig, client_config: QuicConfig) -> None:
    config = dataclasses.replace(client_config, handshake_timeout=2)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config, host=None) as listener:
            assert listener.address == ("::", listener.port)
            assert bound_udp_addresses(listener.port) == {"0.0.0.0", "::"}
            for host in ("127.0.0.1", "::1"):
                async with open_quic_connection(host, listener.port, config=config) as conn:
                    await echo_once(conn, host.encode())


async def test_keylog_file(server_config: QuicConfig, client_config: QuicConfig, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    client = dataclasses.replace(client_config, keylog_file=keylog)
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client):
                pass
    text = keylog.read_text()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text
    assert "CLIENT_TRAFFIC_SECRET_0" in text


async def test_sslkeylogfile_environment(
    server_config: QuicConfig, client_config: QuicConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keylog = tmp_path / "env-keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config):
                pass
    assert "SERVER_TRAFFIC_SECRET_0" in keylog.read_text()


async def test_handshake_timeout_when_nobody_listens(client_config: QuicConfig) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        config = dataclasses.replace(client_config, handshake_timeout=0.5)
        with anyio.fail_after(10):
            with pytest.raises(HandshakeError) as info:
                async with open_quic_connection("127.0.0.1", port, config=config):
                    pass
    assert "timed out" in str(info.value)


async def test_many_connections_and_a_failing_handler(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    async def handler(conn: QuicConnection) -> None:
        async with conn:
            async for stream in conn:
                data = await read_all(stream)
                if data == b"explode":
                    raise RuntimeError("this handler fails on purpose")
                await stream.send(data)  # type: ignore[union-attr]
                await stream.send_eof()  # type: ignore[union-attr]

    results: dict[int, bytes] = {}

    async def client(i: int) -> None:
        async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
            for round_ in range(3):
                stream = await conn.open_stream()
                await stream.send(f"{i}:{round_}".encode())
                await stream.send_eof()
                results[i] = await read_all(stream)

    with anyio.fail_after(30):
        async with running_server(handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as doomed:
                stream = await doomed.open_stream()
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(client, i)
                    await stream.send(b"explode")
                    await stream.send_eof()
                    with pytest.raises(ConnectionClosed) as info:
                        await read_all(stream)
                assert info.value.error_code == 1
                assert "RuntimeError" in info.value.reason
    assert results == {i: f"{i}:2".encode() for i in range(20)}


async def test_cancelling_the_server_closes_connections_and_frees_the_port(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    from aiopquic import serve_quic

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            listener = await tg.start(serve_quic, _wait_closed_handler, "127.0.0.1", 0, server_config)
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                tg.cancel_scope.cancel()
                with pytest.raises(ConnectionClosed) as info:
                    await conn.accept_stream()
                assert info.value.by_peer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", listener.port))  # the port is free again


async def test_awaited_connection_then_async_with(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            conn = await open_quic_connection("localhost", listener.port, config=client_config)
            async with conn:
                stream = await conn.open_stream()
                await stream.send(b"awaited")
                await stream.send_eof()
                assert await read_all(stream) == b"awaited"


async def test_stats_report_the_path(server_config: QuicConfig, client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
                await echo_once(conn, bytes(200_000))
                stats = conn.stats
    assert 0 < stats.min_rtt <= stats.rtt < 1.0
    assert stats.congestion_window > 0
    assert stats.packets_sent > 0
    assert stats.packets_lost >= 0 and stats.packets_retransmitted >= 0
    assert stats.quic_version == 1
    assert stats.cipher_suite.startswith("TLS_")
    assert stats.address_changes == 0


async def test_remote_address_follows_a_nat_rebinding(
    server_config: QuicConfig, client_config: QuicConfig
) -> None:
    seen: list[QuicConnection] = []
    done = anyio.Event()

    async def handler(conn: QuicConnection) -> None:
        seen.append(conn)
        async with conn:
            async for stream in conn:
                assert isinstance(stream, QuicStream)
                await stream.send(await read_all(stream))
                await stream.send_eof()
            await done.wait()

    with anyio.fail_after(20):
        async with running_server(handler, server_config, host="127.0.0.1") as listener:
            with RebindingRelay(("127.0.0.1", listener.port)) as relay:
                async with open_quic_connection("127.0.0.1", relay.port, config=client_config) as conn:
                    await echo_once(conn, b"before")
                    first = relay.upstream_port
                    assert seen[0].remote_address == ("127.0.0.1", first)
                    relay.rebind()
                    for _ in range(20):
                        await echo_once(conn, bytes(10_000))
                        if seen[0].remote_address == ("127.0.0.1", relay.upstream_port):
                            break
                    assert seen[0].remote_address == ("127.0.0.1", relay.upstream_port)
                    assert seen[0].stats.address_changes >= 1
                done.set()


class _RecordingEndpoint(Endpoint):
    """A core endpoint that notes which thread starts and stops it."""

    calls: list[tuple[str, bool]] = []
    loop_thread = 0

    def start(self, host: str, port: int, timeout_ms: int = 5000) -> int:
        if timeout_ms:  # one that waits for the socket (timeout_ms=0 returns at once)
            self.calls.append(("start", threading.get_ident() == self.loop_thread))
        return super().start(host, port, timeout_ms)

    def close(self) -> None:
        if not self.closed and self.thread_error() is None:  # a join that waits for the thread
            self.calls.append(("join", threading.get_ident() == self.loop_thread))
        super().close()


async def test_slow_calls_stay_out_of_the_event_loop(
    server_config: QuicConfig, client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiting for the network thread to open its socket, joining a thread that has
    not exited, reading the CA bundle: all in worker threads."""
    _RecordingEndpoint.calls = calls = []
    _RecordingEndpoint.loop_thread = threading.get_ident()
    monkeypatch.setattr(aiopquic.quic.server, "Endpoint", _RecordingEndpoint)
    monkeypatch.setattr(aiopquic.quic.client, "Endpoint", _RecordingEndpoint)
    bundles_read: list[bool] = []

    def trust_store(cafile: str) -> TrustStore:
        bundles_read.append(threading.get_ident() == _RecordingEndpoint.loop_thread)
        return TrustStore(cafile)

    monkeypatch.setattr(aiopquic.quic.config, "TrustStore", trust_store)
    config = dataclasses.replace(client_config)  # a fresh config: its bundle is not read yet
    with anyio.fail_after(10):
        async with running_server(echo_handler, server_config) as listener:
            async with QuicClient(config) as client:
                async with client.connect("127.0.0.1", listener.port) as conn:
                    await echo_once(conn, b"hello")
            with pytest.raises(HandshakeError):  # fails, its thread still running
                await open_quic_connection("127.0.0.1", listener.port, config=dataclasses.replace(config, alpn=["x"]))
    assert bundles_read == [False, False]
    assert ("start", False) in calls and ("join", False) in calls
    assert [call for call in calls if call[1]] == []


async def test_cancelled_start_leaves_no_thread_or_socket(server_config: QuicConfig) -> None:
    threads = network_threads()
    with anyio.fail_after(10):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await serve_quic(echo_handler, "127.0.0.1", 0, server_config)
        await assert_network_threads(threads)
