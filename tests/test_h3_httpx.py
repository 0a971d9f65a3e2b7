"""httpx.AsyncClient over HTTP3Transport, against serve_h3 serving a Starlette app."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import pytest

from aiopquic import QuicConfig
from aiopquic.cli.certs import CertificateSet
from aiopquic.h3 import HTTP3Transport, serve_h3
from aiopquic.quic.server import QuicListener

from . import h3_starlette_app
from .h3_starlette_app import app, pattern

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serving(config: QuicConfig, port: int = 0) -> AsyncIterator[QuicListener]:
    async with anyio.create_task_group() as tg:
        listener = await tg.start(lambda task_status: serve_h3(app, "127.0.0.1", port, config, shutdown_timeout=2, task_status=task_status))
        yield listener
        tg.cancel_scope.cancel()


@asynccontextmanager
async def h3_client(config: QuicConfig, port: int) -> AsyncIterator[tuple[httpx.AsyncClient, HTTP3Transport]]:
    transport = HTTP3Transport(config)
    async with httpx.AsyncClient(transport=transport, base_url=f"https://127.0.0.1:{port}") as client:
        yield client, transport


async def test_get_and_http_version(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with serving(h3_server_config) as listener, h3_client(h3_client_config, listener.port) as (client, _):
            response = await client.get("/")
            assert response.status_code == 200
            assert response.text == "hello over HTTP/3"
            assert response.http_version == "HTTP/3"
            assert response.headers["alt-svc"] == f'h3=":{listener.port}"; ma=86400'

            response = await client.get("/info?a=1&b=%20x", headers={"x-custom": "yes"})
            seen = response.json()
            assert seen["method"] == "GET"
            assert seen["path"] == "/info"
            assert seen["query"] == "a=1&b=%20x"
            assert seen["http_version"] == "3"
            assert seen["scheme"] == "https"
            assert seen["host"] == f"127.0.0.1:{listener.port}"
            assert seen["headers"]["x-custom"] == "yes"

            response = await client.head("/")
            assert response.status_code == 200 and response.content == b""


async def test_post_a_4_mib_body(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    body = pattern(4 * 1024 * 1024 + 7)
    with anyio.fail_after(20):
        async with serving(h3_server_config) as listener, h3_client(h3_client_config, listener.port) as (client, _):
            response = await client.post("/sha256", content=body)
            assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}

            async def upload() -> AsyncIterator[bytes]:  # unknown length: streamed
                for start in range(0, len(body), 300_000):
                    yield body[start : start + 300_000]

            response = await client.post("/sha256", content=upload())
            assert response.json() == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}

            response = await client.post("/info", data={"name": "value"})
            assert response.json()["body"] == "name=value"


async def test_streaming_response(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    size = 3 * 1024 * 1024 + 5
    with anyio.fail_after(20):
        async with serving(h3_server_config) as listener, h3_client(h3_client_config, listener.port) as (client, transport):
            digest = hashlib.sha256()
            pieces = 0
            async with client.stream("GET", f"/bytes/{size}") as response:
                assert response.status_code == 200
                assert response.http_version == "HTTP/3"
                assert int(response.headers["content-length"]) == size
                async for chunk in response.aiter_bytes():
                    digest.update(chunk)
                    pieces += 1
            assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
            assert pieces > 1

            # Leaving early stops the rest; the connection goes on.
            async with client.stream("GET", f"/bytes/{size}") as response:
                async for chunk in response.aiter_bytes():
                    break
            (pooled,) = transport._pool.values()
            assert pooled.active == 0
            assert (await client.get("/")).text == "hello over HTTP/3"


async def test_fifty_concurrent_requests_share_one_connection(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    results: dict[int, bytes] = {}
    with anyio.fail_after(20):
        async with serving(h3_server_config) as listener, h3_client(h3_client_config, listener.port) as (client, transport):

            async def one(i: int) -> None:
                response = await client.get(f"/bytes/{1000 + i}")
                results[i] = response.content

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
            assert len(transport._pool) == 1
            assert not transport._retired
            (pooled,) = transport._pool.values()
            assert pooled.active == 0
    assert all(results[i] == pattern(1000 + i) for i in range(50))


async def test_a_new_connection_after_goaway(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with anyio.fail_after(20):
        async with h3_client(h3_client_config, 0) as (client, transport):
            async with serving(h3_server_config) as listener:
                port = listener.port
                url = f"https://127.0.0.1:{port}"
                assert (await client.get(url + "/")).status_code == 200
                (first,) = transport._pool.values()
            # The server shut down (GOAWAY, then CONNECTION_CLOSE): the connection is not usable.
            await first.conn.quic.wait_closed()
            assert not first.conn.available

            async with serving(h3_server_config, port):  # the same origin, a new server
                response = await client.get(url + "/")
                assert response.status_code == 200
                (second,) = transport._pool.values()
                assert second is not first
                assert second.conn.available


async def test_goaway_with_a_request_in_flight(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with anyio.fail_after(20):
        async with h3_client(h3_client_config, 0) as (client, transport):
            h3_starlette_app.GATE = anyio.Event()
            h3_starlette_app.GATED_STARTED = anyio.Event()
            server_scope = anyio.CancelScope()

            async def run_server(*, task_status: anyio.abc.TaskStatus[QuicListener]) -> None:
                with server_scope:
                    await serve_h3(app, "127.0.0.1", 0, h3_server_config, shutdown_timeout=5, task_status=task_status)

            async with anyio.create_task_group() as tg:
                listener = await tg.start(run_server)
                url = f"https://127.0.0.1:{listener.port}"
                async with client.stream("GET", url + "/gated") as response:
                    await h3_starlette_app.GATED_STARTED.wait()
                    (first,) = transport._pool.values()
                    server_scope.cancel()  # GOAWAY; the request in flight may finish
                    await first.conn.session.goaway_received.wait()
                    assert not first.conn.available
                    h3_starlette_app.GATE.set()
                    assert await response.aread() == b"first;last"
                # Its last request done, the retired connection is closed and forgotten.
                assert first.active == 0
                assert not transport._pool and not transport._retired
                await first.conn.quic.wait_closed()
            reached = True
        assert reached


async def test_connection_refused_is_a_connect_error(h3_client_config: QuicConfig) -> None:
    config = dataclasses.replace(h3_client_config, handshake_timeout=0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with anyio.fail_after(10):
            async with h3_client(config, port) as (client, _):
                with pytest.raises(httpx.ConnectError):
                    await client.get("/")
    # and with nothing bound at all
    with anyio.fail_after(10):
        async with h3_client(config, port) as (client, _):
            with pytest.raises(httpx.ConnectError):
                await client.get("/")


async def test_connect_timeout(h3_client_config: QuicConfig) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with anyio.fail_after(10):
            async with h3_client(h3_client_config, port) as (client, _):
                with pytest.raises(httpx.ConnectTimeout):
                    await client.get("/", timeout=httpx.Timeout(5, connect=0.3))


async def test_untrusted_certificate_is_a_connect_error(
    h3_server_config: QuicConfig, other_certs: CertificateSet
) -> None:
    with anyio.fail_after(10):
        async with serving(h3_server_config) as listener:
            untrusted = QuicConfig(alpn=["h3"], cafile=other_certs.cafile)
            async with h3_client(untrusted, listener.port) as (client, _):
                with pytest.raises(httpx.ConnectError):
                    await client.get("/")
            # verify=False: accepted anyway
            async with httpx.AsyncClient(transport=HTTP3Transport(verify=False)) as client:
                response = await client.get(f"https://127.0.0.1:{listener.port}/")
                assert response.status_code == 200


async def test_verify_names_a_ca_file(h3_server_config: QuicConfig, certs: CertificateSet) -> None:
    with anyio.fail_after(10):
        async with serving(h3_server_config) as listener:
            async with httpx.AsyncClient(transport=HTTP3Transport(verify=str(certs.cafile))) as client:
                response = await client.get(f"https://127.0.0.1:{listener.port}/")
                assert response.http_version == "HTTP/3"
            # The default verification (certifi's CAs) does not know our test CA.
            async with httpx.AsyncClient(transport=HTTP3Transport()) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get(f"https://127.0.0.1:{listener.port}/")


async def test_read_timeout(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with serving(h3_server_config) as listener, h3_client(h3_client_config, listener.port) as (client, _):
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/sleep/3", timeout=httpx.Timeout(5, read=0.2))
            # The connection is still good.
            assert (await client.get("/")).status_code == 200


async def test_server_gone_mid_body_is_a_read_error(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with serving(h3_server_config) as listener, h3_client(h3_client_config, listener.port) as (client, transport):
            async with client.stream("GET", "/bytes/50000000") as response:
                chunks = response.aiter_bytes()
                assert await chunks.__anext__()
                (pooled,) = transport._pool.values()
                pooled.conn.quic.close(0x42, "cut")  # the connection goes away mid-body
                with pytest.raises(httpx.ReadError):
                    async for _ in chunks:
                        pass
            # The next request opens a new connection.
            assert (await client.get("/")).status_code == 200
            (second,) = transport._pool.values()
            assert second is not pooled


async def test_use_without_async_with_is_refused(h3_client_config: QuicConfig) -> None:
    transport = HTTP3Transport(h3_client_config)
    with pytest.raises(RuntimeError, match="async with httpx.AsyncClient"):
        await transport.handle_async_request(httpx.Request("GET", "https://127.0.0.1:1/"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("http://127.0.0.1:1/")
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", "https://127.0.0.1:1/"))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="h3"):
        HTTP3Transport(QuicConfig(alpn=["hq-interop"]))
    with pytest.raises(TypeError):
        HTTP3Transport(verify=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        HTTP3Transport("h3")  # type: ignore[arg-type]
    assert HTTP3Transport().config.verify is True
    assert HTTP3Transport(verify=False).config.verify is False
    assert HTTP3Transport().config.alpn == ("h3",)


async def test_the_qpack_dynamic_table_is_opt_in(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default the transport's requests insert nothing into the server's QPACK
    table; with ``qpack_encoder_table_capacity`` a repeated token goes in once."""
    from aiopquic.h3._frames import StreamType
    from aiopquic.h3._protocol import H3Protocol

    inserted: list[int] = []  # bytes the server got on the client's QPACK encoder stream
    receive_uni_data = H3Protocol.receive_uni_data

    def spy(self: H3Protocol, stream_id: int, data: bytes, fin: bool) -> list[object]:
        if not self.is_client and self._critical.get(StreamType.QPACK_ENCODER) == stream_id:
            inserted.append(len(data))
        return receive_uni_data(self, stream_id, data, fin)  # type: ignore[return-value]

    monkeypatch.setattr(H3Protocol, "receive_uni_data", spy)
    headers = {"authorization": "Bearer a long token that repeats on every request"}
    with anyio.fail_after(10):
        async with serving(h3_server_config) as listener:
            async with h3_client(h3_client_config, listener.port) as (client, _):
                for _ in range(3):
                    assert (await client.get("/", headers=headers)).status_code == 200
            assert sum(inserted) == 0
            transport = HTTP3Transport(h3_client_config, qpack_encoder_table_capacity=4096)
            async with httpx.AsyncClient(transport=transport, base_url=f"https://127.0.0.1:{listener.port}") as client:
                # The encoder inserts when its own heuristics (and the acknowledgements
                # it has had) say so, not at a set request: ask until it has.
                while sum(inserted) <= len(headers["authorization"]) // 2:  # the token, Huffman-coded
                    assert (await client.get("/", headers=headers)).status_code == 200


def test_a_bad_qpack_encoder_table_capacity_is_refused(h3_client_config: QuicConfig) -> None:
    with pytest.raises(ValueError, match="qpack_encoder_table_capacity"):
        HTTP3Transport(h3_client_config, qpack_encoder_table_capacity=-4096)
