"""aiopquic's HTTP/3 against stacks nobody here wrote.

Our server (serve_h3 running tests/h3_app.py, the app hypercorn serves too)
answers aioquic's H3 client and curl_cffi (libcurl + ngtcp2); our client and
httpx transport talk to aioquic's H3 server and to hypercorn.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from aiopquic import ConnectionClosed, QuicConfig, StreamReset
from aiopquic.cli.certs import CertificateSet
from aiopquic.h3 import ErrorCode, H3ProtocolError, HTTP3Transport, open_h3_connection, serve_h3

from .aioquic_h3 import H3_MESSAGE_ERROR, AioquicH3Server, H3Request, encode_frame, h3_raw_request, h3_request, h3_requests
from .curl_h3 import curl_h3
from .h3_app import app, pattern, sha256
from .helpers import run_blocking
from .hypercorn_peer import HypercornH3Server

pytestmark = pytest.mark.anyio

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/bytes/10")]


@asynccontextmanager
async def our_server(certs: CertificateSet) -> AsyncIterator[int]:
    config = QuicConfig(alpn=["h3"], certfile=certs.certfile, keyfile=certs.keyfile)
    async with anyio.create_task_group() as tg:
        listener = await tg.start(serve_h3, app, "127.0.0.1", 0, config)
        yield listener.port
        tg.cancel_scope.cancel()


# --- independent clients against our server ------------------------------------


async def test_aioquic_client_against_our_server(certs: CertificateSet) -> None:
    body = pattern(3 * 1024 * 1024 + 7)
    with anyio.fail_after(30):
        async with our_server(certs) as port:
            echo = await run_blocking(h3_request, port, "POST", "/echo", body=body, headers=[(b"content-type", b"x/y")], cafile=certs.cafile)
            sizes = [0, 1, 1000, 100_000] + [1024] * 96  # 100 requests in flight on one connection
            results = await run_blocking(h3_requests, port, [H3Request("GET", f"/bytes/{n}") for n in sizes], cafile=certs.cafile)
            trailers = await run_blocking(
                h3_request, port, "POST", "/trailers", body=b"abc", headers=[(b"te", b"trailers")], cafile=certs.cafile
            )
            download = await run_blocking(h3_request, port, "GET", f"/bytes/{8 * 1024 * 1024}", cafile=certs.cafile)
    assert echo.status == 200 and echo.header(b"content-type") == b"x/y"
    assert hashlib.sha256(echo.body).digest() == hashlib.sha256(body).digest()
    assert [r.status for r in results] == [200] * len(sizes)
    assert all(r.body == pattern(n) for r, n in zip(results, sizes))
    assert trailers.body == b"abc" and (b"x-sha256", sha256(b"abc").encode()) in trailers.trailers
    assert download.complete and len(download.body) == 8 * 1024 * 1024 and download.body == pattern(8 * 1024 * 1024)


async def test_curl_cffi_against_our_server(certs: CertificateSet) -> None:
    with anyio.fail_after(30):
        async with our_server(certs) as port:
            base = f"https://127.0.0.1:{port}"
            echo = await run_blocking(curl_h3, f"{base}/echo", method="POST", body=b"ping" * 100_000, cafile=certs.cafile)
            download = await run_blocking(curl_h3, f"{base}/bytes/{4 * 1024 * 1024}", cafile=certs.cafile)
            scope = await run_blocking(curl_h3, f"{base}/scope?x=1", cafile=certs.cafile)
    assert echo.status == 200 and echo.http_version == 30 and echo.body == b"ping" * 100_000
    assert download.body == pattern(4 * 1024 * 1024)
    seen = json.loads(scope.body)
    assert seen["http_version"] == "3" and seen["query_string"] == "x=1"


@pytest.mark.parametrize(
    ("headers", "body", "raw"),
    [
        (REQUEST + [(b"X-Upper", b"1")], b"", b""),
        (REQUEST[:3], b"", b""),  # no :path
        (REQUEST + [(b":method", b"GET")], b"", b""),
        (REQUEST + [(b"connection", b"close")], b"", b""),
        ([(b":method", b"POST"), *REQUEST[1:], (b"content-length", b"10")], b"only five", b""),
    ],
    ids=["uppercase", "no-path", "two-methods", "connection-header", "content-length"],
)
async def test_malformed_requests_reset_only_their_stream(
    certs: CertificateSet, headers: list[tuple[bytes, bytes]], body: bytes, raw: bytes
) -> None:
    with anyio.fail_after(20):
        async with our_server(certs) as port:
            result = await run_blocking(h3_raw_request, port, headers, body, raw=raw, cafile=certs.cafile)
            fine = await run_blocking(h3_request, port, "GET", "/bytes/5", cafile=certs.cafile)
    assert result.reset_code == H3_MESSAGE_ERROR and result.close_code is None
    assert fine.status == 200 and fine.body == pattern(5)


async def test_a_frame_out_of_order_closes_the_connection_with_its_code(certs: CertificateSet) -> None:
    with anyio.fail_after(20):
        async with our_server(certs) as port:
            result = await run_blocking(h3_raw_request, port, None, raw=encode_frame(0x0, b"data first"), cafile=certs.cafile)
            fine = await run_blocking(h3_request, port, "GET", "/bytes/5", cafile=certs.cafile)
    assert result.close_code == ErrorCode.H3_FRAME_UNEXPECTED
    assert fine.status == 200  # other connections go on


async def test_an_oversized_header_section_gets_431_or_excessive_load(certs: CertificateSet) -> None:
    """Over MAX_FIELD_SECTION_SIZE (64 KiB) decoded: 431; a HEADERS frame too long to
    buffer at all: the stream is reset with H3_EXCESSIVE_LOAD before it is read."""
    with anyio.fail_after(20):
        async with our_server(certs) as port:
            decoded_too_big = await run_blocking(
                h3_raw_request, port, REQUEST + [(b"x-big-%d" % i, b"v" * 4000) for i in range(17)], cafile=certs.cafile
            )
            frame_too_big = await run_blocking(
                h3_raw_request, port, REQUEST + [(b"x-big-%d" % i, b"v" * 4000) for i in range(40)], cafile=certs.cafile
            )
            fine = await run_blocking(h3_request, port, "GET", "/bytes/5", cafile=certs.cafile)
    assert decoded_too_big.status == 431
    assert frame_too_big.reset_code == ErrorCode.H3_EXCESSIVE_LOAD and frame_too_big.close_code is None
    assert fine.status == 200


# --- our client against independent servers --------------------------------------


async def test_our_client_against_aioquic(aioquic_h3_server: AioquicH3Server, certs: CertificateSet) -> None:
    config = QuicConfig(alpn=["h3"], cafile=certs.cafile)
    body = pattern(2 * 1024 * 1024 + 3)
    with anyio.fail_after(30):
        async with open_h3_connection("localhost", aioquic_h3_server.port, config=config) as conn:
            echo = await conn.request("POST", "/echo", content=body)
            trailers = await conn.request("POST", "/trailers", content=b"abc", headers=[("te", "trailers")])
            results: dict[int, bytes] = {}

            async def fetch(n: int) -> None:
                results[n] = (await conn.request("GET", f"/bytes/{n}")).content

            async with anyio.create_task_group() as tg:
                for n in range(100):
                    tg.start_soon(fetch, n * 100)
    assert echo.status == 200 and echo.content == body
    assert trailers.content == b"abc" and (b"x-sha256", sha256(b"abc").encode()) in trailers.trailers
    assert results == {n * 100: pattern(n * 100) for n in range(100)}


@pytest.mark.parametrize("kind", ["uppercase", "no-status", "two-status", "connection", "content-length"])
async def test_a_malformed_response_is_a_protocol_error(
    aioquic_h3_server: AioquicH3Server, certs: CertificateSet, kind: str
) -> None:
    config = QuicConfig(alpn=["h3"], cafile=certs.cafile)
    with anyio.fail_after(20):
        async with open_h3_connection("localhost", aioquic_h3_server.port, config=config) as conn:
            with pytest.raises(H3ProtocolError) as caught:
                await conn.request("GET", f"/malformed/{kind}")
            assert caught.value.error_code == ErrorCode.H3_MESSAGE_ERROR
            assert (await conn.request("GET", "/bytes/3")).content == pattern(3)  # the connection goes on


async def test_a_server_that_goes_away_mid_body_is_an_error_not_a_hang(
    aioquic_h3_server: AioquicH3Server, certs: CertificateSet
) -> None:
    config = QuicConfig(alpn=["h3"], cafile=certs.cafile)
    with anyio.fail_after(20):
        async with open_h3_connection("localhost", aioquic_h3_server.port, config=config) as conn:
            with pytest.raises(StreamReset) as reset:
                await conn.request("GET", "/abort/100000")
            assert reset.value.error_code == ErrorCode.H3_INTERNAL_ERROR
        async with open_h3_connection("localhost", aioquic_h3_server.port, config=config) as conn:
            with pytest.raises(ConnectionClosed):
                await conn.request("GET", "/close/100000")


async def test_httpx_against_hypercorn_and_aioquic(
    hypercorn_h3_server: HypercornH3Server, aioquic_h3_server: AioquicH3Server, certs: CertificateSet
) -> None:
    transport = HTTP3Transport(verify=str(certs.cafile))
    with anyio.fail_after(30):
        async with httpx.AsyncClient(transport=transport) as client:
            for port in (hypercorn_h3_server.port, aioquic_h3_server.port):
                response = await client.post(f"https://localhost:{port}/echo", content=b"x" * 500_000)
                assert response.status_code == 200 and response.http_version == "HTTP/3"
                assert response.content == b"x" * 500_000
                response = await client.get(f"https://localhost:{port}/bytes/{3 * 1024 * 1024}")
                assert response.content == pattern(3 * 1024 * 1024)
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(f"https://localhost:{aioquic_h3_server.port}/malformed/no-status")


async def test_our_client_against_hypercorn(hypercorn_h3_server: HypercornH3Server, certs: CertificateSet) -> None:
    config = QuicConfig(alpn=["h3"], cafile=certs.cafile)
    with anyio.fail_after(20):
        async with open_h3_connection("localhost", hypercorn_h3_server.port, config=config) as conn:
            scope = json.loads((await conn.request("GET", "/scope")).content)
            big = await conn.request("PUT", "/echo", content=pattern(1_000_000))
    assert scope["http_version"] == "3"
    assert big.content == pattern(1_000_000)
