"""``serve_h3``: any ASGI 3 application over HTTP/3."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from .._taskgroup import TaskSpawner, from_dispatch, open_task_group
from ..quic.config import QuicConfig
from ..quic.connection import AnyQuicStream, QuicConnection
from ..quic.errors import ConnectionClosed
from ..quic.server import QuicListener, serve_quic
from ..quic.stream import QuicReceiveStream, QuicStream
from ._asgi import _PEER_GONE, ASGIApp, RequestCycle, build_scope, response_headers
from ._events import HeadersReceived, StreamError
from ._frames import ErrorCode
from ._headers import Headers
from ._lifespan import Lifespan
from ._protocol import H3Settings
from ._session import H3Session, RequestStream

if TYPE_CHECKING:
    from ..webtransport._routing import WebTransportApp
    from ..webtransport._streams import StreamHeaderReader
    from ..webtransport.server import ServerSessions, WebTransportServer

__all__ = ["serve_h3"]

logger = logging.getLogger("aiopquic.h3.server")


class _Server:
    """What every connection of one ``serve_h3`` shares."""

    def __init__(
        self,
        app: ASGIApp,
        root_path: str,
        state: dict[str, Any] | None,
        webtransport: WebTransportServer | None,
        settings: H3Settings,
    ) -> None:
        self.app = app
        self.root_path = root_path
        self.state = state
        self.settings = settings
        #: WebTransport sessions served beside the app (its CONNECTs, streams, datagrams).
        self.webtransport = webtransport
        if webtransport is not None:
            self.settings = webtransport.h3_settings(self.settings)
        self.extra_headers: Headers = []
        self.connections: set[_ServerConnection] = set()
        self.shutting_down = False

    async def handle(self, conn: QuicConnection) -> None:
        connection = _ServerConnection(self, conn)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)


class _ServerConnection:
    """One client's HTTP/3 connection: its session, its requests in flight."""

    def __init__(self, server: _Server, conn: QuicConnection) -> None:
        self.server = server
        self.conn = conn
        self.session = H3Session(conn, is_client=False, settings=server.settings)
        self.webtransport: ServerSessions | None = None
        self.in_flight = 0
        self.idle = anyio.Event()
        self.highest_request = -4
        self.accepting = True
        self._draining = anyio.Event()

    async def run(self) -> None:
        async with self.conn, open_task_group() as tg:  # one task per request: see _taskgroup
            if self.server.webtransport is not None:
                self.webtransport = self.server.webtransport.attach(self.conn, self.session, tg)
            try:
                await self.session.open()
                take = self._stream_taker(tg)
                self.conn._install_stream_starter(take)
                tg.start_soon(self._accept, take)
                if self.server.shutting_down:
                    await self.stop_accepting()
                await self._draining.wait()  # GOAWAY sent, or the client went away
                await self._wait_idle()
                # Gracefully: the last responses may still sit in the send buffers,
                # and close() would drop them.
                await self.conn.aclose(ErrorCode.H3_NO_ERROR, "server shutting down")
            except ConnectionClosed:
                pass
            finally:
                self.conn._install_stream_starter(None)
            tg.cancel_scope.cancel()

    def _stream_taker(self, tg: TaskSpawner) -> Callable[[AnyQuicStream], bool]:
        """What takes each new stream, in a copy of this task's context: straight
        from the event dispatch (a request's task, a WebTransport stream's
        handler, starts one scheduler pass sooner than through :meth:`_accept`),
        and in :meth:`_accept` for those that arrived before it was installed.
        It raises nothing: not into the dispatch, nor into the group."""
        take_here = from_dispatch(functools.partial(self._take, tg))

        def take(stream: AnyQuicStream) -> bool:
            try:
                if not take_here(stream):  # the group takes no more tasks: the connection is ending
                    self._refuse(stream)
            except Exception:  # a bug: this connection fails, not the endpoint's dispatch
                logger.exception("HTTP/3: taking a new stream failed")
                self.conn.close(ErrorCode.H3_INTERNAL_ERROR, "internal error")
            return True

        return take

    async def _accept(self, take: Callable[[AnyQuicStream], bool]) -> None:
        try:
            async for stream in self.conn:  # those the dispatch did not take
                take(stream)
        except (ConnectionClosed, anyio.ClosedResourceError):
            pass
        finally:
            self._draining.set()

    def _take(self, tg: TaskSpawner, stream: AnyQuicStream) -> None:
        if isinstance(stream, QuicStream):
            if self.webtransport is None:
                self._start_request(tg, stream)
            else:  # a request, or a WebTransport session's stream: its first bytes tell
                self._sort_stream_now(tg, stream)
        elif isinstance(stream, QuicReceiveStream):
            tg.start_soon(self.session.read_uni_stream, stream)

    def _sort_stream_now(self, tg: TaskSpawner, stream: QuicStream) -> None:
        assert self.webtransport is not None
        try:
            done, prefix, reader = self.webtransport.sort_bidi_stream(stream)
        except _PEER_GONE:
            return
        if not done:  # its first bytes are still on their way
            tg.start_soon(self._sort_stream, tg, stream, reader)
        elif prefix is not None:
            self._start_request(tg, stream, prefix)

    async def _sort_stream(self, tg: TaskSpawner, stream: QuicStream, reader: StreamHeaderReader) -> None:
        assert self.webtransport is not None
        try:
            prefix = await self.webtransport.take_bidi_stream(stream, reader)
        except _PEER_GONE:
            return
        if prefix is not None:
            self._start_request(tg, stream, prefix)

    def _start_request(self, tg: TaskSpawner, stream: QuicStream, prefix: bytes = b"") -> None:
        if not self.accepting:
            self._refuse(stream)
            return
        self.highest_request = max(self.highest_request, stream.stream_id)
        self.in_flight += 1
        tg.start_soon(self._serve_request, self.session.request_stream(stream, prefix))

    @staticmethod
    def _refuse(stream: AnyQuicStream) -> None:
        if isinstance(stream, QuicStream):
            stream.reset(ErrorCode.H3_REQUEST_REJECTED)
        stream.stop_sending(ErrorCode.H3_REQUEST_REJECTED)

    async def stop_accepting(self) -> None:
        """GOAWAY: requests after the last one accepted are refused."""
        if not self.accepting:
            return
        self.accepting = False
        self._draining.set()
        try:
            await self.session.send_goaway(self.highest_request + 4)
        except _PEER_GONE:
            pass

    async def _wait_idle(self) -> None:
        while self.in_flight:
            await self.idle.wait()
            self.idle = anyio.Event()

    async def _serve_request(self, request: RequestStream) -> None:
        try:
            await self._serve(request)
        finally:
            request.close()
            self.in_flight -= 1
            self.idle.set()

    async def _serve(self, request: RequestStream) -> None:
        try:
            first = await request.receive_event()
        except _PEER_GONE:
            return
        if isinstance(first, StreamError):
            await self._reject(request, first)
            return
        if not isinstance(first, HeadersReceived):
            return  # the stream ended before its headers: nothing to answer
        if self.webtransport is not None and self.webtransport.wants(first.headers):
            await self.webtransport.serve(request, first)
            return
        scope = build_scope(
            first.headers,
            client=self.conn.remote_address,
            server=self.conn.local_address,
            root_path=self.server.root_path,
            state=self.server.state,
        )
        await RequestCycle(request, self.server.app, scope, self.server.extra_headers, first).run()

    async def _reject(self, request: RequestStream, error: StreamError) -> None:
        logger.info("request on stream %d refused: %s", request.stream_id, error.reason)
        if error.http_status is None:
            request.reset(error.error_code)
            return
        body = error.reason.encode()
        try:
            await request.send_headers(
                response_headers(error.http_status, [(b"content-length", str(len(body)).encode())], []),
            )
            await request.send_data(body, end_stream=True)
        except _PEER_GONE:
            pass


async def _serve_shielded(
    shield: anyio.CancelScope,
    server: _Server,
    host: str | None,
    port: int,
    config: QuicConfig,
    *,
    task_status: TaskStatus[QuicListener],
) -> None:
    """serve_quic inside ``shield``: the server's own cancellation does not reach the
    connections; cancelling ``shield`` after the drain does."""
    with shield:
        await serve_quic(server.handle, host, port, config, task_status=task_status)


async def serve_h3(
    app: ASGIApp,
    host: str | None,
    port: int,
    config: QuicConfig,
    *,
    webtransport: WebTransportApp | None = None,
    root_path: str = "",
    shutdown_timeout: float = 5.0,
    alt_svc: bool = True,
    qpack_encoder_table_capacity: int = 0,
    task_status: TaskStatus[QuicListener] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI 3 application ``app`` over HTTP/3 on ``host``:``port`` until cancelled.

    Like :func:`aiopquic.serve_quic`, it reports a :class:`QuicListener`
    through ``task_status``. The app's ``lifespan`` startup runs before the
    port opens and its shutdown after it closes. Cancelling the server sends
    GOAWAY on every connection and lets the requests in flight finish for up
    to ``shutdown_timeout`` seconds before closing. With ``alt_svc`` every
    response advertises this port with an ``alt-svc`` header.
    ``qpack_encoder_table_capacity``: how many bytes of the dynamic table a
    client offers our QPACK encoder may use; 0 (the default) sends every
    response's fields without it (see :class:`aiopquic.h3.H3Settings`).

    ``config.alpn`` should offer ``"h3"``. With ``webtransport`` (a
    :class:`aiopquic.webtransport.WebTransportApp`) the same port also serves
    its WebTransport sessions (QUIC datagrams are then turned on if ``config``
    has none).
    """
    if not isinstance(config, QuicConfig):
        raise TypeError("config must be a QuicConfig")
    extension: WebTransportServer | None = None
    if webtransport is not None:
        from ..webtransport.server import WebTransportServer

        extension = WebTransportServer(webtransport)
        config = extension.quic_config(config)
    if "h3" not in config.alpn:
        raise ValueError(f"serving HTTP/3 needs 'h3' in QuicConfig.alpn (it is {list(config.alpn)!r})")
    if not (isinstance(shutdown_timeout, (int, float)) and shutdown_timeout >= 0 and not math.isnan(shutdown_timeout)):
        raise ValueError(f"shutdown_timeout must be a number of seconds >= 0, got {shutdown_timeout!r}")
    settings = H3Settings(
        h3_datagram=config.max_datagram_frame_size > 0, qpack_encoder_table_capacity=qpack_encoder_table_capacity
    )
    lifespan = Lifespan(app)
    # Errors are raised after the task group, so they come out as themselves,
    # not wrapped in an ExceptionGroup.
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        server = _Server(app, root_path, lifespan.state, extension, settings)
        shield = anyio.CancelScope(shield=True)
        try:
            await lifespan.startup(tg)
            if not lifespan.supported:
                server.state = None
            listener = await tg.start(_serve_shielded, shield, server, host, port, config)
        except Exception as exc:
            error = exc
            lifespan.abandon()
            tg.cancel_scope.cancel()
        else:
            if alt_svc:
                server.extra_headers.append((b"alt-svc", f'h3=":{listener.port}"; ma=86400'.encode()))
            task_status.started(listener)
            try:
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await _shut_down(server, shutdown_timeout)
                    shield.cancel()
                    await lifespan.shutdown()
                tg.cancel_scope.cancel()
    if error is not None:
        raise error


async def _shut_down(server: _Server, timeout: float) -> None:
    server.shutting_down = True
    with anyio.move_on_after(timeout):
        for connection in list(server.connections):
            await connection.stop_accepting()
        for connection in list(server.connections):
            await connection._wait_idle()
