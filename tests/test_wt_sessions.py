"""Session flow control on the wire and several sessions per connection, our
client against our server, on asyncio and trio: credit granted as the
application reads and respected by the sender (blocking, not failing), a
peer over our limits ending only its own session, sessions sharing a
connection (and a second one beyond WT_MAX_SESSIONS), streams and datagrams
for sessions that are not established."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aiopquic import QuicConfig, StreamReset
from aiopquic import webtransport as wt
from aiopquic.h3._protocol import H3Protocol
from aiopquic.webtransport import server as wt_server_module
from aiopquic.webtransport._codes import WTErrorCode
from aiopquic.webtransport._dialects import server_settings
from aiopquic.webtransport._streams import bidi_stream_header

from .helpers import read_all
from .test_wt_session import echo_app, wt_server

pytestmark = pytest.mark.anyio

SMALL = wt.SessionLimits(max_sessions=16, initial_max_data=4096, initial_max_streams_bidi=2, initial_max_streams_uni=1)


def tracking_app(seen: dict[str, Any], limits: wt.SessionLimits | None = None) -> wt.WebTransportApp:
    """Echo bidi streams; every session's end goes into seen["closed"] (by session id)."""
    app = wt.WebTransportApp(limits=limits)
    seen.setdefault("closed", {})
    seen.setdefault("sessions", [])

    @app.route("/echo")
    async def echo(session: wt.WebTransportSession) -> None:
        seen["sessions"].append(session)
        async with anyio.create_task_group() as tg:

            async def answer(stream: wt.WebTransportStream | wt.WebTransportReceiveStream) -> None:
                try:
                    data = await read_all(stream)
                    if isinstance(stream, wt.WebTransportStream):
                        await stream.send(data, eof=True)
                except (wt.SessionClosed, StreamReset):
                    pass

            async def datagrams() -> None:
                try:
                    while True:
                        await session.send_datagram(await session.receive_datagram())
                except wt.SessionClosed:
                    pass

            tg.start_soon(datagrams)
            try:
                async for stream in session:
                    tg.start_soon(answer, stream)
            finally:
                seen["closed"][session.session_id] = session.close_error
                tg.cancel_scope.cancel()

    return app


async def wait_for(predicate: Any, timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_credit_is_granted_as_read_and_senders_wait_for_it(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    # 4 KiB and 2 bidi streams per session each way: 6 echoes of 20 KiB at once
    # only get through by waiting for credit, which reading grants.
    payloads = [bytes([i]) * 20_000 for i in range(6)]
    app = echo_app({})
    app.limits = SMALL
    with anyio.fail_after(20):
        async with wt_server(app, h3_server_config) as port:
            url = f"https://localhost:{port}/echo"
            async with wt.open_webtransport_session(url, config=h3_client_config, limits=SMALL) as session:
                assert session.flow_control
                flow = session._core.flow
                assert (flow.send_max_data, flow.send_max_streams[True]) == (4096, 2)

                async def echo(payload: bytes) -> None:
                    stream = await session.open_stream()
                    await stream.send(payload, eof=True)
                    assert await read_all(stream) == payload

                async with anyio.create_task_group() as tg:
                    for payload in payloads:
                        tg.start_soon(echo, payload)
                assert flow.sent == sum(map(len, payloads))
                assert flow.send_max_data > flow.sent - 4096  # granted again and again
                assert flow.send_max_streams[True] >= 6
                assert flow._blocked_data_at is not None and flow._blocked_streams_at[True] is not None
                # a uni stream: the server allows one at a time
                for _ in range(3):
                    uni = await session.open_uni_stream()
                    await uni.send(b"x" * 5000, eof=True)


async def test_a_peer_over_our_limits_ends_only_its_session(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    seen: dict[str, Any] = {}
    with anyio.fail_after(20):
        async with wt_server(tracking_app(seen, SMALL), h3_server_config) as port:
            url = f"https://localhost:{port}/echo"
            async with wt.WebTransportClient(h3_client_config) as client:
                bad_data = await client.open_session(url)
                bad_streams = await client.open_session(url)
                good = await client.open_session(url)
                assert client.connection_count == 1
                # a client that ignores the server's limits: bytes, then streams
                bad_data._core.flow.send_max_data = 1 << 40
                stream = await bad_data.open_stream()
                with pytest.raises((wt.SessionClosed, StreamReset)):
                    await stream.send(b"x" * 100_000, eof=True)
                    await read_all(stream)
                await bad_data.wait_closed()
                bad_streams._core.flow.send_max_streams[True] = 100
                opened = [await bad_streams.open_stream() for _ in range(3)]
                for one in opened:
                    try:
                        await one.send(b"hello")
                    except StreamReset as exc:  # the server ended the session already, and stopped it
                        assert exc.error_code == WTErrorCode.SESSION_GONE
                    except wt.SessionClosed:  # and we knew it already
                        pass
                await bad_streams.wait_closed()
                for bad in (bad_data, bad_streams):
                    with pytest.raises(wt.SessionClosed) as info:
                        await bad.open_stream()
                    assert info.value.error_code == WTErrorCode.FLOW_CONTROL_ERROR
                # the other session, on the same connection, goes on
                stream = await good.open_stream()
                await stream.send(b"still here", eof=True)
                assert await read_all(stream) == b"still here"
                assert not good.closed
                await wait_for(lambda: len(seen["closed"]) >= 2)
                for bad in (bad_data, bad_streams):
                    closed = seen["closed"][bad.session_id]
                    assert closed.error_code == WTErrorCode.FLOW_CONTROL_ERROR and not closed.by_peer


async def test_sessions_share_a_connection_until_the_server_says_no(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    seen: dict[str, Any] = {}
    with anyio.fail_after(20):
        async with wt_server(tracking_app(seen, wt.SessionLimits(max_sessions=3)), h3_server_config) as port:
            url = f"https://localhost:{port}/echo"
            async with wt.WebTransportClient(h3_client_config) as client:
                sessions = [await client.open_session(url) for _ in range(3)]
                assert client.connection_count == 1
                assert len({s.session_id for s in sessions}) == 3
                assert len({id(s.connection) for s in sessions}) == 1
                # streams and datagrams reach their own session's handler
                for i, session in enumerate(sessions):
                    stream = await session.open_stream()
                    await stream.send(b"session %d" % i, eof=True)
                    assert await read_all(stream) == b"session %d" % i
                    await session.send_datagram(b"tick %d" % i)
                for i, session in enumerate(sessions):
                    assert await session.receive_datagram() == b"tick %d" % i
                # a fourth is beyond WT_MAX_SESSIONS 3: a connection of its own
                fourth = await client.open_session(url)
                assert client.connection_count == 2
                assert fourth.connection is not sessions[0].connection
                # closing one session leaves the others
                sessions[0].close(5, "one down")
                await wait_for(lambda: sessions[0].session_id in seen["closed"])
                assert seen["closed"][sessions[0].session_id].error_code == 5
                stream = await sessions[1].open_stream()
                await stream.send(b"alive", eof=True)
                assert await read_all(stream) == b"alive"
                # closing the connection closes every session on it, both sides
                sessions[1].connection.close()
                for session in sessions[1:]:
                    await session.wait_closed()
                    with pytest.raises(wt.SessionClosed):
                        await session.open_stream()
                await wait_for(lambda: all(s.session_id in seen["closed"] for s in sessions))
                for session in sessions[1:]:
                    assert isinstance(seen["closed"][session.session_id], wt.SessionClosed)
                assert not fourth.closed


async def test_streams_and_datagrams_for_sessions_not_established(
    h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    seen: dict[str, Any] = {}
    with anyio.fail_after(20):
        async with wt_server(tracking_app(seen), h3_server_config) as port:
            url = f"https://localhost:{port}/echo"
            async with wt.WebTransportClient(h3_client_config) as client:
                first = await client.open_session(url)
                conn = first.connection
                # a stream for the session the next CONNECT will open waits for it
                early = await conn.open_stream()
                await early.send(bidi_stream_header(early.stream_id + 4) + b"before the CONNECT", eof=True)
                second = await client.open_session(url)
                assert second.session_id == early.stream_id + 4
                assert await read_all(early) == b"before the CONNECT"
                # streams for a session that never comes are rejected after a while
                orphans = []
                for i in range(3):
                    orphan = await conn.open_stream()
                    await orphan.send(bidi_stream_header(4000 + 4 * i) + b"nobody", eof=True)
                    orphans.append(orphan)
                for orphan in orphans:
                    with pytest.raises(StreamReset) as info:
                        await read_all(orphan)
                    assert info.value.error_code == WTErrorCode.BUFFERED_STREAM_REJECTED
                # a datagram for no session is dropped and counted
                router = seen["sessions"][0]._router
                dropped = router.datagrams_dropped
                await conn.send_datagram(H3Protocol.encode_datagram(8000, b"lost"))
                await wait_for(lambda: router.datagrams_dropped == dropped + 1)
                # and a stream for a closed session is refused at once
                first.close()
                await wait_for(lambda: first.session_id in seen["closed"])
                late = await conn.open_stream()
                await late.send(bidi_stream_header(first.session_id) + b"too late", eof=True)
                with anyio.fail_after(1.5), pytest.raises(StreamReset) as info:
                    await read_all(late)
                assert info.value.error_code == WTErrorCode.SESSION_GONE


async def test_a_429_from_a_shared_connection_opens_another(
    monkeypatch: pytest.MonkeyPatch, h3_server_config: QuicConfig, h3_client_config: QuicConfig
) -> None:
    # A draft-15 server announces no WT_MAX_SESSIONS: it answers 429 when a
    # connection carries all it takes, and the client goes on another.
    def without_max_sessions(limits: wt.SessionLimits) -> dict[int, int]:
        settings = server_settings(limits)
        del settings[0x14E9CD29]
        return settings

    monkeypatch.setattr(wt_server_module, "server_settings", without_max_sessions)
    with anyio.fail_after(20):
        async with wt_server(tracking_app({}, wt.SessionLimits(max_sessions=2)), h3_server_config) as port:
            url = f"https://localhost:{port}/echo"
            async with wt.WebTransportClient(h3_client_config) as client:
                sessions = [await client.open_session(url) for _ in range(5)]
                assert [s.dialect for s in sessions] == [wt.Dialect.DRAFT15] * 5
                assert client.connection_count == 3
                for session in sessions:
                    stream = await session.open_stream()
                    await stream.send(b"ok", eof=True)
                    assert await read_all(stream) == b"ok"
