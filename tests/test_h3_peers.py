"""The independent HTTP/3 peers the h3 tests lean on, checked against each other
(no aiopquic code involved): aioquic's H3 client and server (tests/aioquic_h3.py),
hypercorn (tests/hypercorn_peer.py) and curl_cffi (tests/curl_h3.py).

If one of these fails, an h3 interop failure says nothing about aiopquic.
"""

from __future__ import annotations

import json

import pytest

from aiopquic.cli.certs import CertificateSet

from .aioquic_h3 import (
    H3_INTERNAL_ERROR,
    H3_MESSAGE_ERROR,
    H3_NO_ERROR,
    AioquicH3Server,
    H3Request,
    h3_get_url,
    h3_raw_request,
    h3_request,
    h3_requests,
)
from .curl_h3 import curl_h3
from .h3_app import pattern, sha256, trailers_for
from .helpers import run_blocking
from .hypercorn_peer import HypercornH3Server

pytestmark = pytest.mark.anyio

AnyH3Server = AioquicH3Server | HypercornH3Server


@pytest.fixture(params=["aioquic", "hypercorn"])
def h3_server(
    request: pytest.FixtureRequest, certs: CertificateSet
) -> AnyH3Server:
    """Each peer server in turn."""
    name = "aioquic_h3_server" if request.param == "aioquic" else "hypercorn_h3_server"
    server: AnyH3Server = request.getfixturevalue(name)
    return server


async def test_aioquic_client(h3_server: AnyH3Server, certs: CertificateSet) -> None:
    echo = await run_blocking(
        h3_request, h3_server.port, "POST", "/echo",
        headers=[(b"content-type", b"text/plain")], body=b"hello", cafile=certs.cafile,
    )
    assert (echo.status, echo.body, echo.header(b"content-type")) == (200, b"hello", b"text/plain")
    assert echo.complete and echo.reset_code is None and echo.close_code is None

    sizes = [0, 1, 1000, 100_000] + [1024] * 46  # 50 requests in flight on one connection
    results = await run_blocking(
        h3_requests, h3_server.port, [H3Request("GET", f"/bytes/{n}") for n in sizes], cafile=certs.cafile
    )
    assert [r.status for r in results] == [200] * len(sizes)
    assert all(r.body == pattern(n) for r, n in zip(results, sizes))

    missing = await run_blocking(h3_request, h3_server.port, "GET", "/nowhere", cafile=certs.cafile)
    assert missing.status == 404


async def test_aioquic_client_sends_what_it_is_given(h3_server: AnyH3Server, certs: CertificateSet) -> None:
    result = await run_blocking(
        h3_request, h3_server.port, "GET", "/headers", headers=[(b"x-one", b"1"), (b"x-two", b"2")],
        cafile=certs.cafile,
    )
    seen = json.loads(result.body)
    assert ["x-one", "1"] in seen and ["x-two", "2"] in seen
    assert [":authority", f"localhost:{h3_server.port}"] in seen or ["host", f"localhost:{h3_server.port}"] in seen


async def test_curl_cffi(h3_server: AnyH3Server, certs: CertificateSet) -> None:
    base = f"https://127.0.0.1:{h3_server.port}"
    echo = await run_blocking(
        curl_h3, f"{base}/echo", method="POST", body=b"ping", headers=[("content-type", "text/x")],
        cafile=certs.cafile,
    )
    assert (echo.status, echo.body, echo.header("content-type"), echo.http_version) == (200, b"ping", "text/x", 30)

    big = await run_blocking(curl_h3, f"https://localhost:{h3_server.port}/bytes/1000000", verify=False)
    assert big.status == 200 and sha256(big.body) == sha256(pattern(1_000_000))


async def test_url_helper(aioquic_h3_server: AioquicH3Server, certs: CertificateSet) -> None:
    result = await run_blocking(h3_get_url, f"https://localhost:{aioquic_h3_server.port}/status/204", cafile=certs.cafile)
    assert (result.status, result.body) == (204, b"")


async def test_aioquic_trailers(aioquic_h3_server: AioquicH3Server, certs: CertificateSet) -> None:
    """Trailers both ways (hypercorn 0.18 cannot send HTTP/3 trailers: after them it
    sends an empty DATA frame with FIN, which aioquic refuses, and the stream hangs)."""
    result = await run_blocking(
        h3_request, aioquic_h3_server.port, "POST", "/trailers", headers=[(b"te", b"trailers")],
        body=b"payload", trailers=[(b"x-client", b"done")], cafile=certs.cafile,
    )
    assert (result.status, result.body, result.trailers) == (200, b"payload", trailers_for(b"payload"))
    assert aioquic_h3_server.requests[-1] == (
        [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", f"localhost:{aioquic_h3_server.port}".encode()),
         (b":path", b"/trailers"), (b"te", b"trailers")],
        b"payload",
    )


async def test_aioquic_server_misbehaves_on_request(aioquic_h3_server: AioquicH3Server, certs: CertificateSet) -> None:
    """The routes that test a client's error handling do what they say."""
    port = aioquic_h3_server.port
    aborted = await run_blocking(h3_request, port, "GET", "/abort/1000", cafile=certs.cafile)
    assert aborted.reset_code == H3_INTERNAL_ERROR and not aborted.complete
    closed = await run_blocking(h3_request, port, "GET", "/close/1000", cafile=certs.cafile)
    assert closed.close_code == H3_NO_ERROR and not closed.complete
    for kind in ("uppercase", "no-status", "two-status", "connection", "content-length"):
        # aioquic's client closes the whole connection on a malformed response
        bad = await run_blocking(h3_request, port, "GET", f"/malformed/{kind}", cafile=certs.cafile)
        assert bad.close_code == H3_MESSAGE_ERROR, kind


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/"),
                      (b"X-Upper", b"1")], id="uppercase"),
        pytest.param([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")], id="no-path"),
        pytest.param([(b":method", b"GET"), (b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"),
                      (b":path", b"/")], id="two-methods"),
    ],
)
async def test_raw_malformed_request(h3_server: AnyH3Server, certs: CertificateSet, headers: list[tuple[bytes, bytes]]) -> None:
    """The raw client sends what it is told, and reads the answer. aioquic (and so
    hypercorn) closes the whole connection with H3_MESSAGE_ERROR; RFC 9114 section
    4.1.2 lets a server reset just the stream, which is what aiopquic must do."""
    result = await run_blocking(h3_raw_request, h3_server.port, headers, cafile=certs.cafile, timeout=5)
    assert result.status is None
    assert H3_MESSAGE_ERROR in (result.reset_code, result.close_code)


async def test_raw_content_length_mismatch(h3_server: AnyH3Server, certs: CertificateSet) -> None:
    headers = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/echo"),
               (b"content-length", b"10")]
    result = await run_blocking(h3_raw_request, h3_server.port, headers, b"abc", cafile=certs.cafile, timeout=5)
    assert H3_MESSAGE_ERROR in (result.reset_code, result.close_code)
    good = await run_blocking(h3_raw_request, h3_server.port, headers[:-1], b"abc", cafile=certs.cafile, timeout=5)
    assert (good.status, good.body) == (200, b"abc")


async def test_hypercorn_scope(hypercorn_h3_server: HypercornH3Server, certs: CertificateSet) -> None:
    """What a reference ASGI server puts in an HTTP/3 scope (for comparison with ours)."""
    result = await run_blocking(h3_request, hypercorn_h3_server.port, "GET", "/scope?x=1", cafile=certs.cafile)
    scope = json.loads(result.body)
    assert scope["type"] == "http" and scope["http_version"] == "3" and scope["scheme"] == "https"
    assert scope["path"] == "/scope" and scope["query_string"] == "x=1" and scope["method"] == "GET"
    assert "http.response.trailers" in scope["extensions"]
