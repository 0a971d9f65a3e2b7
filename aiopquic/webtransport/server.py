"""The WebTransport server: ``serve_webtransport``, and the part of ``serve_h3``
that answers WebTransport CONNECTs when it is given ``webtransport=app``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .._taskgroup import TaskSpawner
from ..h3._asgi import Receive, Scope, Send
from ..h3._events import HeadersReceived
from ..h3._headers import Headers
from ..h3._protocol import H3Settings
from ..h3._session import H3Session, RequestStream
from ..h3.errors import H3Error
from ..quic.config import QuicConfig
from ..quic.connection import QuicConnection
from ..quic.errors import ConnectionClosed, StreamReset
from ..quic.server import QuicListener
from ._dialects import (
    ConnectRequest,
    InvalidConnect,
    flow_control_enabled,
    is_webtransport_request,
    parse_connect,
    response_headers,
    server_settings,
)
from ._flow import SessionFlowControl
from ._quirks import expects_bare_capsules
from ._router import SessionRouter
from ._routing import SessionRequest, WebTransportApp
from .errors import SessionClosed
from .session import WebTransportSession

__all__ = ["serve_webtransport"]

logger = logging.getLogger("aiopquic.webtransport.server")

#: The status of a CONNECT beyond the sessions a connection may carry.
TOO_MANY_SESSIONS = 429
#: The application error code of a session whose handler raised.
HANDLER_ERROR_CODE = 1
#: How long a CONNECT may wait for the client's SETTINGS (the drafts forbid
#: accepting a session before they arrive).
SETTINGS_TIMEOUT = 5.0
#: How long a session we closed waits for the client to end the CONNECT stream
#: before we stop reading it. Not at once: Chromium takes a STOP_SENDING that
#: overtakes our close capsule for a reset of the session ("Connection lost").
CLOSE_TIMEOUT = 2.0
#: Datagram frames we accept, when the config asks for none (RFC 9297 needs them).
DATAGRAM_FRAME_SIZE = 65536
_PEER_GONE = (ConnectionClosed, StreamReset, anyio.ClosedResourceError, anyio.BrokenResourceError)


class WebTransportServer:
    """What ``serve_h3(..., webtransport=app)`` asks of the WebTransport side."""

    def __init__(self, app: WebTransportApp) -> None:
        if not isinstance(app, WebTransportApp):
            raise TypeError(f"webtransport= takes a WebTransportApp, not {type(app).__name__}")
        self.app = app

    def h3_settings(self, base: H3Settings) -> H3Settings:
        """Our SETTINGS with extended CONNECT, HTTP datagrams and every dialect's."""
        extra = {**base.extra, **server_settings(self.app.limits)}
        return dataclasses.replace(base, enable_connect_protocol=True, h3_datagram=True, extra=extra)

    @staticmethod
    def quic_config(config: QuicConfig) -> QuicConfig:
        """``config`` with QUIC datagrams on (WebTransport sessions carry them)."""
        if config.max_datagram_frame_size > 0:
            return config
        return dataclasses.replace(config, max_datagram_frame_size=DATAGRAM_FRAME_SIZE)

    def attach(self, conn: QuicConnection, h3: H3Session, task_group: TaskSpawner) -> ServerSessions:
        """The sessions of one connection; its datagrams are read in ``task_group``."""
        sessions = ServerSessions(self.app, conn, h3)
        task_group.start_soon(sessions.read_datagrams)
        task_group.start_soon(sessions.expire_held)
        return sessions


class ServerSessions(SessionRouter):
    """One connection's WebTransport sessions, on the server."""

    def __init__(self, app: WebTransportApp, conn: QuicConnection, h3: H3Session) -> None:
        super().__init__(conn, h3)
        self.app = app
        self._admitting = 0

    @staticmethod
    def wants(headers: Headers) -> bool:
        """True for a request that asks for a WebTransport session."""
        return is_webtransport_request(headers)

    async def serve(self, request: RequestStream, first: HeadersReceived) -> None:
        """Answer a WebTransport CONNECT, and run its session's handler if accepted."""
        self.expect(request.stream_id)  # its datagrams and streams may come first
        with anyio.move_on_after(SETTINGS_TIMEOUT):
            await self.h3.settings_received.wait()
        settings = self.h3.protocol.peer_settings
        if settings is None:
            await self._refuse(request, 400, "a WebTransport CONNECT before the client's SETTINGS")
            return
        try:
            connect = parse_connect(first.headers, settings)
        except InvalidConnect as exc:
            await self._refuse(request, exc.status, str(exc))
            return
        limit = self._session_limit(connect, settings)
        if len(self.sessions) + self._admitting >= limit:
            await self._refuse(request, TOO_MANY_SESSIONS, f"this connection carries its limit of {limit} session(s)")
            return
        self._admitting += 1  # counted while the middleware decides
        try:
            status, match = await self.app.admit(SessionRequest.from_connect(connect))
        finally:
            self._admitting -= 1
        if match is None:
            await self._refuse(request, status, f"{connect.path!r} refused with {status}")
            return
        session = WebTransportSession(
            self, request, dialect=connect.dialect, path=connect.path, headers=connect.headers,
            origin=connect.origin, path_params=match.path_params,
            flow=SessionFlowControl.negotiate(connect.dialect, self.app.limits, settings),
        )
        session._unframed_capsules = expects_bare_capsules(settings)
        self.establish(session)
        try:
            await request.send_headers(response_headers(connect.dialect))
        except _PEER_GONE:
            session._set_closed(SessionClosed(f"session {session.session_id}: the client went away"))
            return
        logger.debug("session %d accepted: %s (%s)", session.session_id, connect.path, connect.dialect.name)
        async with anyio.create_task_group() as tg:

            async def run_handler() -> None:
                try:
                    await match.handler(session)
                except Exception:
                    logger.exception("WebTransport handler for %s raised; closing its session", connect.path)
                    session.close(HANDLER_ERROR_CODE, "the server's handler failed")
                else:
                    session.close()
                tg.cancel_scope.cancel()

            tg.start_soon(run_handler, name=f"aiopquic webtransport {connect.path}")
            await session._run()
            tg.cancel_scope.cancel()  # closed by the peer or with the connection: the handler is done
        await self._await_client_end(request)

    @staticmethod
    async def _await_client_end(request: RequestStream) -> None:
        """Read the CONNECT stream to its end (for at most CLOSE_TIMEOUT seconds).

        After our CLOSE_WEBTRANSPORT_SESSION the client answers with the end
        of the stream; whatever is left unread then is stopped with
        STOP_SENDING when the request is closed.
        """
        with anyio.move_on_after(CLOSE_TIMEOUT):
            try:
                while await request.receive_event() is not None:
                    pass
            except (*_PEER_GONE, H3Error):  # the connection failed: nothing to wait for
                pass

    def _session_limit(self, connect: ConnectRequest, settings: dict[int, int]) -> int:
        """How many sessions this connection may carry at once in the request's dialect."""
        limits = self.app.limits
        if not connect.dialect.has_flow_control:
            return limits.max_sessions  # draft-02 sets no limit: ours
        if flow_control_enabled(connect.dialect, limits.to_settings(), settings):
            return limits.max_sessions
        return 1  # without session flow control a connection carries one session

    async def _refuse(self, request: RequestStream, status: int, why: str) -> None:
        self.forget(request.stream_id)
        logger.info("WebTransport CONNECT on stream %d answered %d: %s", request.stream_id, status, why)
        try:
            await request.send_headers([(b":status", str(status).encode()), (b"content-length", b"0")], end_stream=True)
        except _PEER_GONE:
            pass


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app of ``serve_webtransport``: 404 for any plain HTTP request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


async def serve_webtransport(
    app: WebTransportApp,
    host: str | None,
    port: int,
    config: QuicConfig,
    *,
    shutdown_timeout: float = 5.0,
    task_status: TaskStatus[QuicListener] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the WebTransport ``app`` on ``host``:``port`` until cancelled.

    Reports a :class:`~aiopquic.QuicListener` through ``task_status`` (use it
    with ``await tg.start(...)``). Plain HTTP/3 requests get 404; to serve an
    ASGI app on the same port, use ``h3.serve_h3(asgi_app, ..., webtransport=app)``.
    ``config.alpn`` must offer ``"h3"``; QUIC datagrams are turned on if it
    has none.
    """
    from ..h3.server import serve_h3

    await serve_h3(
        _not_found, host, port, config, webtransport=app, alt_svc=False,
        shutdown_timeout=shutdown_timeout, task_status=task_status,
    )
