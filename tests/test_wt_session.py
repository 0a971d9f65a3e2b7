"""WebTransport sessions end to end: serve_webtransport / serve_h3(webtransport=)
and open_webtransport_session, over a real connection, on asyncio and trio."""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from aiopquic import QuicConfig, StreamReset, h3
from aiopquic import webtransport as wt

from .helpers import read_all

pytestmark = pytest.mark.anyio


def echo_app(seen: dict[str, Any]) -> wt.WebTransportApp:
    """Echo every stream and datagram; note how the session ended."""
    app = wt.WebTransportApp()

    @app.route("/echo")
    async def echo(session: wt.WebTransportSession) -> None:
        seen["origin"] = session.origin
        seen["session"] = session
        async with anyio.create_task_group() as tg:

            async def datagrams() -> None:
                with pytest.raises(wt.SessionClosed):
                    while True:
                        await session.send_datagram(await session.receive_datagram())

            async def answer(stream: wt.WebTransportStream | wt.WebTransportReceiveStream) -> None:
                data = await read_all(stream)
                if isinstance(stream, wt.WebTransportStream):
                    await stream.send(data, eof=True)
                else:
                    back = await session.open_uni_stream()
                    await back.send(data, eof=True)

            tg.start_soon(datagrams)
            try:
                async for stream in session:
                    tg.start_soon(answer, stream)
            finally:
                seen["closed"] = session.close_error
                tg.cancel_scope.cancel()

    @app.route("/rooms/{name}")
    async def room(session: wt.WebTransportSession) -> None:
        stream = await session.open_stream()  # the server opens one, names the room on it
        await stream.send(session.path_params["name"].encode(), eof=True)
        await session.wait_closed()

    @app.route("/fail")
    async def fail(session: wt.WebTransportSession) -> None:
        raise RuntimeError("a handler that breaks")

    @app.middleware
    async def no_forbidden(request: wt.SessionRequest) -> int | None:
        return 403 if request.path.startswith("/rooms/forbidden") else None

    return app


@asynccontextmanager
async def wt_server(app: wt.WebTransportApp, config: QuicConfig) -> AsyncIterator[int]:
    async with anyio.create_task_group() as tg:
        listener = await tg.start(wt.serve_webtransport, app, "127.0.0.1", 0, config)
        yield listener.port
        tg.cancel_scope.cancel()


async def test_streams_datagrams_and_close_both_ways(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    seen: dict[str, Any] = {}
    payload = bytes(range(256)) * 1024  # 256 KiB
    with anyio.fail_after(20):
        async with wt_server(echo_app(seen), h3_server_config) as port:
            url = f"https://localhost:{port}/echo"
            async with wt.open_webtransport_session(url, config=h3_client_config, headers=[("origin", "https://example.org")]) as session:
                assert session.dialect is wt.Dialect.DRAFT15
                assert session.path == "/echo"
                # one big bidi echo, and 8 at once
                stream = await session.open_stream()
                await stream.send(payload, eof=True)
                assert hashlib.sha256(await read_all(stream)).digest() == hashlib.sha256(payload).digest()

                async def one(i: int) -> None:
                    s = await session.open_stream()
                    await s.send(b"stream %d" % i, eof=True)
                    assert await read_all(s) == b"stream %d" % i

                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(one, i)
                # a uni stream comes back on a uni stream of the server's
                uni = await session.open_uni_stream()
                await uni.send(b"one way", eof=True)
                back = await session.accept_stream()
                assert isinstance(back, wt.WebTransportReceiveStream)
                assert await read_all(back) == b"one way"
                # datagrams (unreliable, but not on a loopback that loses nothing)
                assert 1000 < session.max_datagram_size < 1200
                await session.send_datagram(b"tick")
                assert await session.receive_datagram() == b"tick"
                session.close(7, "done here")
                with pytest.raises(wt.SessionClosed):
                    await session.open_stream()
            with anyio.fail_after(5):
                while "closed" not in seen:
                    await anyio.sleep(0.01)
    closed = seen["closed"]
    assert isinstance(closed, wt.SessionClosed)
    assert (closed.error_code, closed.reason, closed.by_peer) == (7, "done here", True)
    assert seen["origin"] == "https://example.org"


async def test_routes_params_middleware_and_refusals(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    with anyio.fail_after(20):
        async with wt_server(echo_app({}), h3_server_config) as port:
            base = f"https://localhost:{port}"
            async with wt.open_webtransport_session(f"{base}/rooms/blue", config=h3_client_config) as session:
                stream = await session.accept_stream()  # opened by the server
                assert await read_all(stream) == b"blue"
            for path, status in (("/nowhere", 404), ("/rooms/forbidden", 403)):
                with pytest.raises(wt.SessionRejected) as info:
                    async with wt.open_webtransport_session(base + path, config=h3_client_config):
                        pass
                assert info.value.status == status
            # a handler that raises closes its session with an error code
            async with wt.open_webtransport_session(f"{base}/fail", config=h3_client_config) as session:
                await session.wait_closed()
                with pytest.raises(wt.SessionClosed) as closed:
                    await session.accept_stream()
                assert closed.value.error_code == 1 and closed.value.by_peer


async def test_stream_reset_codes_are_webtransport_codes(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    app = wt.WebTransportApp()
    codes: list[int] = []

    @app.route("/reset")
    async def reset(session: wt.WebTransportSession) -> None:
        stream = await session.accept_stream()
        assert isinstance(stream, wt.WebTransportStream)
        assert await stream.receive() == b"x"
        await stream.send(b"ready")
        try:
            await read_all(stream)
        except StreamReset as exc:
            codes.append(exc.error_code)
        stream.reset(0xFFFFFFFF)
        await session.wait_closed()

    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            async with wt.open_webtransport_session(f"https://localhost:{port}/reset", config=h3_client_config) as session:
                stream = await session.open_stream()
                await stream.send(b"x")
                assert await stream.receive() == b"ready"  # the server has the stream
                stream.reset(12345)
                with pytest.raises(StreamReset) as info:
                    await read_all(stream)
                assert info.value.error_code == 0xFFFFFFFF
    assert codes == [12345]


async def test_one_port_serves_an_asgi_app_and_webtransport(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    async def page(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"page"})

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            listener = await tg.start(
                lambda task_status: h3.serve_h3(page, "127.0.0.1", 0, h3_server_config, webtransport=echo_app({}), task_status=task_status)
            )
            async with httpx.AsyncClient(transport=h3.HTTP3Transport(config=h3_client_config)) as client:
                assert (await client.get(f"https://localhost:{listener.port}/")).text == "page"
            async with wt.open_webtransport_session(f"https://localhost:{listener.port}/echo", config=h3_client_config) as session:
                stream = await session.open_stream()
                await stream.send(b"both", eof=True)
                assert await read_all(stream) == b"both"
            tg.cancel_scope.cancel()


async def test_bad_arguments_are_refused(h3_client_config: QuicConfig) -> None:
    with pytest.raises(ValueError, match="https://"):
        wt.open_webtransport_session("http://localhost/echo", config=h3_client_config)
    with pytest.raises(ValueError, match="'h3'"):
        wt.open_webtransport_session("https://localhost/echo", config=QuicConfig(alpn=["test"]))
    with pytest.raises(TypeError, match="QuicConfig"):
        wt.open_webtransport_session("https://localhost/echo", config=None)  # type: ignore[arg-type]


async def test_aioquic_webtransport_client_draft02(h3_server_config: QuicConfig, certs: Any) -> None:
    # An independent stack (aioquic, draft-02 as Chrome speaks it): streams both
    # ways, a datagram, and its close capsule reaching our handler with code and reason.
    from .aioquic_wt import aioquic_session
    from .helpers import run_blocking

    seen: dict[str, Any] = {}
    payload = bytes(range(256)) * 512
    with anyio.fail_after(30):
        async with wt_server(echo_app(seen), h3_server_config) as port:
            report = await run_blocking(aioquic_session, port, "/echo", cafile=certs.cafile, payload=payload,
                                        close_code=42, close_reason="bye from aioquic")
            with anyio.fail_after(5):
                while "closed" not in seen:
                    await anyio.sleep(0.01)
    assert report.status == 200
    assert report.bidi_echo == payload
    assert report.uni_echo == b"one way"
    assert report.datagram_echo == b"tick"
    assert seen["origin"] == "https://aioquic.test"
    closed = seen["closed"]
    assert (closed.error_code, closed.reason, closed.by_peer) == (42, "bye from aioquic", True)


async def test_a_session_the_server_closes_reaches_aioquic(h3_server_config: QuicConfig, certs: Any) -> None:
    # An independent client sees our close: the capsule with the code and reason,
    # then the end of the CONNECT stream, and no STOP_SENDING ahead of them
    # (Chromium took one that overtook the close for a reset of the session;
    # aioquic's ordering never showed that race, the Chromium test did).
    from .aioquic_wt import aioquic_session_closed_by_server
    from .helpers import run_blocking

    app = wt.WebTransportApp()

    @app.route("/bye")
    async def bye(session: wt.WebTransportSession) -> None:
        session.close(7, "server says bye")

    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            events, data = await run_blocking(aioquic_session_closed_by_server, port, "/bye", cafile=certs.cafile)
    assert events[-1] == "end" and "stop_sending" not in events, events
    # The DATA frames' payload: CLOSE_WEBTRANSPORT_SESSION (0x2843), length 4 + 15, code 7, the reason.
    assert data == bytes.fromhex("6843") + bytes([19]) + (7).to_bytes(4, "big") + b"server says bye"


async def test_our_client_against_aioquic_webtransport_server(h3_client_config: QuicConfig, certs: Any) -> None:
    # An independent server (aioquic, draft-02): streams both ways, a datagram,
    # our close capsule reaching it, and its close capsule reaching us.
    from .aioquic_wt import AioquicWebTransportServer

    payload = bytes(range(256)) * 512
    with AioquicWebTransportServer(certs) as server, anyio.fail_after(20):
        base = f"https://localhost:{server.port}"
        async with wt.open_webtransport_session(f"{base}/echo", config=h3_client_config) as session:
            assert session.dialect is wt.Dialect.DRAFT02 and not session.flow_control
            stream = await session.open_stream()
            await stream.send(payload, eof=True)
            assert await read_all(stream) == payload
            uni = await session.open_uni_stream()
            await uni.send(b"one way", eof=True)
            back = await session.accept_stream()
            assert isinstance(back, wt.WebTransportReceiveStream)
            assert await read_all(back) == b"one way"
            await session.send_datagram(b"tick")
            assert await session.receive_datagram() == b"tick"
            session.close(42, "bye from aiopquic")
        session = await wt.open_webtransport_session(f"{base}/close", config=h3_client_config)
        async with session:
            stream = await session.open_stream()
            await stream.send(b"last words", eof=True)
            await session.wait_closed()
            with pytest.raises(wt.SessionClosed) as info:
                await session.accept_stream()
        assert (info.value.error_code, info.value.reason, info.value.by_peer) == (77, "closed by aioquic", True)
        with pytest.raises(wt.SessionRejected) as rejected:
            await wt.open_webtransport_session(f"{base}/nowhere", config=h3_client_config)
        assert rejected.value.status == 404
        with anyio.fail_after(5):
            while not server.seen.closes:
                await anyio.sleep(0.01)
    assert server.seen.closes == [(42, "bye from aiopquic")]
    assert server.seen.paths == ["/echo", "/close", "/nowhere"]


async def test_messages_over_a_session(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    """MessageStream on a session's stream and MessageDatagrams on its datagrams,
    as the guide shows them: a chat-like exchange, JSON both ways."""
    app = wt.WebTransportApp()

    @app.route("/chat")
    async def chat(session: wt.WebTransportSession) -> None:
        stream = await session.accept_stream()
        assert isinstance(stream, wt.WebTransportStream)
        async with wt.MessageStream(stream) as messages:
            async for message in messages:
                await messages.send({"echo": message["text"], "n": message["n"] + 1})
        datagrams = wt.MessageDatagrams(session)
        await datagrams.send({"pong": await datagrams.receive()})
        await session.wait_closed()

    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            async with wt.open_webtransport_session(f"https://localhost:{port}/chat", config=h3_client_config) as session:
                messages = wt.MessageStream(await session.open_stream())
                replies = []
                for n in range(3):
                    await messages.send({"text": f"hello {n}", "n": n})
                    replies.append(await messages.receive())
                await messages.send_eof()
                with pytest.raises(anyio.EndOfStream):
                    await messages.receive()
                assert replies == [{"echo": f"hello {n}", "n": n + 1} for n in range(3)]
                datagrams = wt.MessageDatagrams(session)
                await datagrams.send([1, "two", None])
                assert await datagrams.receive() == {"pong": [1, "two", None]}


async def test_drain_asks_the_peer_to_wind_down(h3_server_config: QuicConfig, h3_client_config: QuicConfig) -> None:
    seen: dict[str, Any] = {}
    app = wt.WebTransportApp()

    @app.route("/drain")
    async def drain(session: wt.WebTransportSession) -> None:
        await session.wait_drain_requested()  # the client asked first
        seen["server saw the drain"] = session.drain_requested
        session.drain()  # and we ask back; the client closes
        await session.wait_closed()
        seen["closed"] = session.close_error

    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            async with wt.open_webtransport_session(f"https://localhost:{port}/drain", config=h3_client_config) as session:
                assert not session.drain_requested
                session.drain()
                await session.wait_drain_requested()
                session.close(3, "drained")
            with anyio.fail_after(5):
                while "closed" not in seen:
                    await anyio.sleep(0.01)
    assert seen["server saw the drain"] is True
    closed = seen["closed"]
    assert (closed.error_code, closed.reason, closed.by_peer) == (3, "drained", True)


async def test_serve_streams_runs_a_task_per_stream_until_the_session_ends(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    """Every handler runs at once (the last to start lets all of them answer), and
    serve_streams returns once the client closed the session."""
    streams = 6
    running = 0
    all_running = anyio.Event()
    served = anyio.Event()
    app = wt.WebTransportApp()

    async def handle(stream: wt.WebTransportStream | wt.WebTransportReceiveStream) -> None:
        nonlocal running
        assert isinstance(stream, wt.WebTransportStream)
        request = await read_all(stream)
        running += 1
        if running == streams:
            all_running.set()
        await all_running.wait()
        await stream.send(request.upper(), eof=True)

    @app.route("/serve")
    async def serve(session: wt.WebTransportSession) -> None:
        await session.serve_streams(handle)
        served.set()

    async def ask(session: wt.WebTransportSession, i: int, answers: dict[int, bytes]) -> None:
        stream = await session.open_stream()
        await stream.send(b"stream %d" % i, eof=True)
        answers[i] = await read_all(stream)

    answers: dict[int, bytes] = {}
    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            url = f"https://localhost:{port}/serve"
            async with wt.open_webtransport_session(url, config=h3_client_config) as session:
                async with anyio.create_task_group() as tg:
                    for i in range(streams):
                        tg.start_soon(ask, session, i, answers)
            await served.wait()
    assert answers == {i: b"STREAM %d" % i for i in range(streams)}


served_by: contextvars.ContextVar[str] = contextvars.ContextVar("served_by")


async def test_serve_streams_handlers_run_in_a_copy_of_the_sessions_context(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    """Handlers start from the event dispatch, but see the context vars of the
    session's task (and their own changes stay their own)."""
    seen: list[str | None] = []
    app = wt.WebTransportApp()

    async def handle(stream: wt.WebTransportStream | wt.WebTransportReceiveStream) -> None:
        seen.append(served_by.get(None))
        served_by.set("changed by a handler")
        assert isinstance(stream, wt.WebTransportStream)
        await stream.send(await read_all(stream), eof=True)

    @app.route("/context")
    async def serve(session: wt.WebTransportSession) -> None:
        served_by.set("the session's task")
        await session.serve_streams(handle)

    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            url = f"https://localhost:{port}/context"
            async with wt.open_webtransport_session(url, config=h3_client_config) as session:
                for payload in (b"one", b"two", b"three"):
                    stream = await session.open_stream()
                    await stream.send(payload, eof=True)
                    assert await read_all(stream) == payload
    assert seen == ["the session's task"] * 3



async def test_a_session_ends_with_its_connection_as_session_closed(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    """The peer closes the connection under a session: whatever the session's
    operations were doing, they end with SessionClosed (its error code the
    connection's), not the connection's own error, even before the session has
    noticed on its own."""
    raised: list[BaseException] = []
    done = anyio.Event()
    app = wt.WebTransportApp()

    @app.route("/until-closed")
    async def send_until_closed(session: wt.WebTransportSession) -> None:
        # Shielded: the server cancels the handlers of a closed connection, and
        # this one must meet the end in its own calls.
        with anyio.CancelScope(shield=True):
            try:
                while True:
                    await session.send_datagram(b"ping")
            except Exception as exc:
                raised.append(exc)
            try:
                await session.open_stream()
            except Exception as exc:
                raised.append(exc)
            done.set()

    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            url = f"https://localhost:{port}/until-closed"
            async with wt.open_webtransport_session(url, config=h3_client_config) as session:
                assert await session.receive_datagram() == b"ping"
                session.connection.close(0x77, "gone")
            await done.wait()
    assert [type(exc) for exc in raised] == [wt.SessionClosed, wt.SessionClosed]
    assert all(exc.error_code == 0x77 and exc.by_peer for exc in raised)  # type: ignore[attr-defined]
