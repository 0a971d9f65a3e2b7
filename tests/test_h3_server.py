"""serve_h3 and open_h3_connection: the ASGI contract, bodies, errors, shutdown."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from aiopquic import ConnectionClosed, QuicConfig, StreamReset
from aiopquic.h3 import ErrorCode, H3Connection, RequestRejected, open_h3_connection, serve_h3

from .h3_apps import TestApp, no_lifespan_app

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def served(app: object, server_config: QuicConfig, client_config: QuicConfig, **options: object) -> AsyncIterator[tuple[H3Connection, int]]:
    async with anyio.create_task_group() as tg:
        listener = await tg.start(lambda task_status: serve_h3(app, "127.0.0.1", 0, server_config, task_status=task_status, **options))  # type: ignore[arg-type]
        async with open_h3_connection("localhost", listener.port, config=client_config) as conn:
            yield conn, listener.port
        tg.cancel_scope.cancel()


async def test_scope_lifespan_and_state(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    app = TestApp()
    with anyio.fail_after(10):
        async with served(app, h3_server_config, h3_client_config) as (conn, port):
            assert app.lifespan == ["startup"]
            response = await conn.request("GET", "/scope?a=1&b=%20", headers=[("X-Custom", "v")])
        assert app.lifespan == ["startup", "shutdown"]
    assert response.status == 200
    assert response.header("content-type") == b"application/json"  # lowercased on the way out
    assert response.header("alt-svc") == f'h3=":{port}"; ma=86400'.encode()
    scope = json.loads(response.content)
    assert scope["type"] == "http" and scope["http_version"] == "3" and scope["scheme"] == "https"
    assert scope["method"] == "GET" and scope["path"] == "/scope" and scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == "" and scope["asgi"]["version"] == "3.0"
    assert ["host", f"localhost:{port}"] in scope["headers"] and ["x-custom", "v"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ["127.0.0.1", port]
    assert scope["state"] == {"greeting": "hello"}
    assert "http.response.trailers" in scope["extensions"]


async def test_an_app_without_lifespan_is_served(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with anyio.fail_after(10):
        async with served(no_lifespan_app, h3_server_config, h3_client_config) as (conn, _):
            response = await conn.request("GET", "/")
    assert response.status == 204 and response.content == b""


@pytest.mark.parametrize("size", [0, 1, 5 * 1024 * 1024 + 3])
async def test_bodies_both_ways_with_trailers(h3_server_config: QuicConfig, h3_client_config: QuicConfig, size: int) -> None:
    body = os.urandom(size)
    with anyio.fail_after(30):
        async with served(TestApp(), h3_server_config, h3_client_config) as (conn, _):
            response = await conn.request("POST", "/echo", content=body)
    assert response.status == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(body).digest()
    assert response.trailers == [(b"x-sha256", hashlib.sha256(body).hexdigest().encode())]


async def test_streamed_request_and_response_bodies(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    pieces = [os.urandom(100_000) for _ in range(20)]

    async def upload() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    with anyio.fail_after(30):
        async with served(TestApp(), h3_server_config, h3_client_config) as (conn, _):
            response = await conn.request("PUT", "/echo", content=upload())
            assert response.content == b"".join(pieces)
            size = 8 * 1024 * 1024
            received = hashlib.sha256()
            async with conn.stream("GET", f"/download?n={size}") as streaming:
                assert streaming.status == 200
                async for chunk in streaming.aiter_bytes():
                    received.update(chunk)
    expected = (bytes(range(256)) * 256 * (size // 65536 + 1))[:size]
    assert received.digest() == hashlib.sha256(expected).digest()


async def test_a_hundred_concurrent_requests(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        response = await conn.request("POST", "/echo", content=str(i).encode() * i)
        results[i] = response.content

    with anyio.fail_after(30):
        async with served(TestApp(), h3_server_config, h3_client_config) as (conn, _):
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)
    assert results == {i: str(i).encode() * i for i in range(100)}


async def test_an_app_that_fails_gets_a_500_or_a_reset_and_others_go_on(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    with anyio.fail_after(10):
        async with served(TestApp(), h3_server_config, h3_client_config) as (conn, _):
            response = await conn.request("GET", "/fail-before")
            assert response.status == 500
            with pytest.raises(StreamReset) as caught:
                await conn.request("GET", "/fail-after")
            assert caught.value.error_code == ErrorCode.H3_INTERNAL_ERROR
            assert (await conn.request("GET", "/missing")).status == 404


async def test_the_app_sees_http_disconnect_when_the_client_gives_up(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    app = TestApp()
    with anyio.fail_after(10):
        async with served(app, h3_server_config, h3_client_config) as (conn, _):
            with anyio.move_on_after(0.3):
                await conn.request("POST", "/disconnect", content=b"x")
            await app.seen_disconnect.wait()
            assert (await conn.request("GET", "/missing")).status == 404
    assert app.disconnects == 1


async def test_shutdown_lets_requests_in_flight_finish_then_refuses(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    app = TestApp()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as server_group:
            listener = await server_group.start(serve_h3, app, "127.0.0.1", 0, h3_server_config)
            async with open_h3_connection("localhost", listener.port, config=h3_client_config) as conn:
                answers: list[bytes] = []

                async def held_request() -> None:
                    answers.append((await conn.request("GET", "/hold")).content)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(held_request)
                    while app.held == 0:
                        await anyio.sleep(0.01)
                    server_group.cancel_scope.cancel()  # GOAWAY; the held request may finish
                    await conn.session.goaway_received.wait()
                    assert not conn.available
                    app.release.set()
                assert answers == [b"released"]
    assert app.lifespan == ["startup", "shutdown"]


async def test_shutdown_timeout_bounds_a_request_that_never_ends(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    app = TestApp()
    with anyio.fail_after(15):
        async with anyio.create_task_group() as server_group:
            listener = await server_group.start(lambda task_status: serve_h3(app, "127.0.0.1", 0, h3_server_config, shutdown_timeout=0.5, task_status=task_status))
            async with open_h3_connection("localhost", listener.port, config=h3_client_config) as conn:
                async with anyio.create_task_group() as tg:

                    async def never_released() -> None:
                        with pytest.raises(Exception):
                            await conn.request("GET", "/hold")

                    tg.start_soon(never_released)
                    while app.held == 0:
                        await anyio.sleep(0.01)
                    started = anyio.current_time()
                    server_group.cancel_scope.cancel()
    assert anyio.current_time() - started < 5


async def test_bad_arguments_are_refused(h3_server_config: QuicConfig) -> None:
    with pytest.raises(ValueError, match="'h3'"):
        await serve_h3(TestApp(), "127.0.0.1", 0, QuicConfig(alpn=["x"], certfile=h3_server_config.certfile, keyfile=h3_server_config.keyfile))
    with pytest.raises(ValueError, match="shutdown_timeout"):
        await serve_h3(TestApp(), "127.0.0.1", 0, h3_server_config, shutdown_timeout=-1)


async def test_a_client_that_never_finishes_its_requests_holds_only_its_stream_credit(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    """Half-sent header frames wait within the server's stream limit; others are served."""
    from aiopquic import open_quic_connection
    from aiopquic.h3._frames import encode_varint

    server_config = dataclasses.replace(h3_server_config, max_streams_bidi=16)
    with anyio.fail_after(20):
        async with served(TestApp(), server_config, h3_client_config) as (conn, port):
            async with open_quic_connection("localhost", port, config=h3_client_config) as raw:
                streams = []
                for _ in range(16):  # the server's whole limit, each with a HEADERS frame cut short
                    stream = await raw.open_stream()
                    await stream.send(encode_varint(1) + encode_varint(1000) + b"abc")
                    streams.append(stream)
                # Other clients are served meanwhile.
                assert (await conn.request("POST", "/echo", content=b"still here")).content == b"still here"
                for stream in streams:
                    await stream.aclose()
            assert (await conn.request("GET", "/missing")).status == 404


def _take_failing_once(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    """Make the server's stream taker raise ``error`` for the first request
    stream (as a group that takes no more tasks would, or a bug): the list
    collects the ids of the streams it failed on."""
    from aiopquic.h3.server import _ServerConnection

    take = _ServerConnection._take
    failed: list[int] = []

    def take_or_fail(self: _ServerConnection, tg: object, stream: object) -> None:
        if not failed and getattr(stream, "stream_id", 1) % 4 == 0:
            failed.append(stream.stream_id)  # type: ignore[attr-defined]
            raise error
        take(self, tg, stream)  # type: ignore[arg-type]

    monkeypatch.setattr(_ServerConnection, "_take", take_or_fail)
    return failed


async def test_a_request_the_connections_group_cannot_take_is_rejected_not_lost(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream taker's fallback: when the group refuses a task (RuntimeError, as an
    asyncio.TaskGroup shutting down or a closed nursery raises), the request is
    reset with H3_REQUEST_REJECTED, which tells the client to send it again, and
    the connection serves the next one."""
    failed = _take_failing_once(monkeypatch, RuntimeError("the group takes no more tasks"))
    with anyio.fail_after(10):
        async with served(TestApp(), h3_server_config, h3_client_config) as (conn, _):
            with pytest.raises(RequestRejected, match="send it again"):
                await conn.request("GET", "/missing")
            assert failed == [0]
            assert (await conn.request("POST", "/echo", content=b"again")).content == b"again"


async def test_a_bug_taking_a_stream_closes_that_connection_only(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing raises into the endpoint's event dispatch: an unexpected error while
    taking a new stream is logged and closes that connection with
    H3_INTERNAL_ERROR; the server goes on serving other connections."""
    failed = _take_failing_once(monkeypatch, ValueError("a bug"))
    with anyio.fail_after(10), caplog.at_level(logging.ERROR, logger="aiopquic.h3.server"):
        async with served(TestApp(), h3_server_config, h3_client_config) as (conn, port):
            with pytest.raises(ConnectionClosed) as caught:
                await conn.request("GET", "/missing")
            assert caught.value.error_code == ErrorCode.H3_INTERNAL_ERROR
            assert failed == [0]
            async with open_h3_connection("localhost", port, config=h3_client_config) as other:
                assert (await other.request("GET", "/missing")).status == 404
    assert any("taking a new stream failed" in record.getMessage() and record.exc_info for record in caplog.records)


async def test_qpack_acknowledgements_leave_with_the_next_request(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's QPACK decoder acknowledges a response's header section with its
    next request (one packet for both, not a packet and a server wake-up each):
    the acknowledgements wait in the client, then reach the server's encoder."""
    from aiopquic.h3._frames import StreamType
    from aiopquic.h3._protocol import H3Protocol

    acknowledgements: list[bytes] = []  # what the server's encoder got from the client's decoder
    receive_uni_data = H3Protocol.receive_uni_data

    def spy(self: H3Protocol, stream_id: int, data: bytes, fin: bool) -> list[object]:
        if not self.is_client and self._critical.get(StreamType.QPACK_DECODER) == stream_id and data:
            acknowledgements.append(data)
        return receive_uni_data(self, stream_id, data, fin)  # type: ignore[return-value]

    monkeypatch.setattr(H3Protocol, "receive_uni_data", spy)
    with anyio.fail_after(10):
        async with served(TestApp(), h3_server_config, h3_client_config, qpack_encoder_table_capacity=4096) as (conn, _):
            held: list[bool] = []
            for _ in range(8):
                assert (await conn.request("GET", "/missing")).status == 404
                held.append(conn.session.protocol.qpack_data_pending)
            # Responses that refer to the server's dynamic table (most, once its
            # entries are in) leave an acknowledgement waiting in the client...
            assert sum(held) >= 4, held
            # ... which goes with the next request: the server's encoder gets them.
            while not acknowledgements:
                await anyio.sleep(0.01)


async def test_qpack_dynamic_table_use_is_opt_in_on_each_side(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default neither encoder inserts into the peer's table, so no decoder
    acknowledges anything; ``qpack_encoder_table_capacity`` on
    ``open_h3_connection`` turns it on for the client's requests alone."""
    from aiopquic.h3._frames import StreamType
    from aiopquic.h3._protocol import H3Protocol

    qpack_bytes: dict[tuple[bool, StreamType], int] = {}  # (is_client, stream type) -> bytes received
    receive_uni_data = H3Protocol.receive_uni_data

    def spy(self: H3Protocol, stream_id: int, data: bytes, fin: bool) -> list[object]:
        for kind in (StreamType.QPACK_ENCODER, StreamType.QPACK_DECODER):
            if self._critical.get(kind) == stream_id:
                qpack_bytes[self.is_client, kind] = qpack_bytes.get((self.is_client, kind), 0) + len(data)
        return receive_uni_data(self, stream_id, data, fin)  # type: ignore[return-value]

    monkeypatch.setattr(H3Protocol, "receive_uni_data", spy)
    headers = [("authorization", "Bearer a long token that repeats on every request")]
    with anyio.fail_after(10):
        async with served(TestApp(), h3_server_config, h3_client_config) as (conn, port):
            for _ in range(4):
                assert (await conn.request("GET", "/missing", headers=headers)).status == 404
            assert not conn.session.protocol.qpack_data_pending
            assert not any(qpack_bytes.values()), qpack_bytes  # (a stream's type byte is read before it counts)
            async with open_h3_connection(
                "localhost", port, config=h3_client_config, qpack_encoder_table_capacity=4096
            ) as indexing:
                # The encoder inserts when its own heuristics (and the acknowledgements
                # it has had) say so, not at a set request: ask until the server has
                # acknowledged an insertion (acknowledgements go with its responses).
                while qpack_bytes.get((False, StreamType.QPACK_ENCODER), 0) <= 3 or not qpack_bytes.get(
                    (True, StreamType.QPACK_DECODER)
                ):
                    assert (await indexing.request("GET", "/missing", headers=headers)).status == 404
            assert not qpack_bytes.get((True, StreamType.QPACK_ENCODER))  # the server still inserts nothing


async def test_a_bad_qpack_encoder_table_capacity_is_refused_before_anything_opens(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with pytest.raises(ValueError, match="qpack_encoder_table_capacity"):
        open_h3_connection("localhost", 4433, config=h3_client_config, qpack_encoder_table_capacity=-1)
    with anyio.fail_after(10), pytest.raises(ValueError, match="qpack_encoder_table_capacity"):
        await serve_h3(TestApp(), "127.0.0.1", 0, h3_server_config, qpack_encoder_table_capacity=-1)  # type: ignore[arg-type]
