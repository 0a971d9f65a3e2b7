"""The WebTransport client: ``open_webtransport_session`` and ``WebTransportClient``.

:class:`WebTransportClient` keeps its connections on one
:class:`~aiopquic.QuicClient` (one UDP socket, one network thread); sessions
to one origin share a connection while its server lets them (session flow
control on both sides, and its WT_MAX_SESSIONS), else each gets its own.
:func:`open_webtransport_session` is one session with a connection of its own.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup

from ..h3._events import HeadersReceived
from ..h3._frames import ErrorCode
from ..h3._protocol import H3Settings, ProtocolError
from ..h3.client import H3Connection, _authority
from ..quic.client import QuicClient, enter_with_task_group
from ..quic.config import QuicConfig
from ..quic.errors import ConnectionClosed
from ..quic.stream import QuicStream
from ._codes import WTSetting
from ._dialects import Dialect, SessionLimits, client_dialect, client_settings, flow_control_enabled, request_headers
from ._flow import SessionFlowControl
from ._quirks import expects_bare_capsules
from ._router import SessionRouter
from .errors import SessionRejected
from .server import DATAGRAM_FRAME_SIZE, SETTINGS_TIMEOUT, TOO_MANY_SESSIONS
from .session import WebTransportSession

__all__ = ["WebTransportClient", "open_webtransport_session"]

logger = logging.getLogger("aiopquic.webtransport.client")

HeaderInput = Iterable[tuple[str | bytes, str | bytes]]
Origin = tuple[str, int]

#: What our client allows a server per session unless told otherwise (draft-13+
#: flow control): the server's streams and bytes in each session before we
#: grant more.
DEFAULT_LIMITS = SessionLimits(max_sessions=1)


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


class _ClientSessions(SessionRouter):
    """The sessions of one client connection: the server's streams go to them."""

    async def take_server_stream(self, stream: QuicStream) -> None:
        if await self.take_bidi_stream(stream) is not None:  # HTTP/3 has no server-opened requests
            self.h3.fail(ProtocolError(ErrorCode.H3_STREAM_CREATION_ERROR, "the server opened a bidirectional HTTP/3 stream"))


class _Connection:
    """One HTTP/3 connection of the client and the sessions on it."""

    def __init__(self, h3: H3Connection, limits: SessionLimits) -> None:
        self.h3 = h3
        self.limits = limits
        self.router = _ClientSessions(h3.quic, h3.session)
        h3.on_peer_stream = self.router.take_server_stream
        self.opening = 0  # sessions whose CONNECT awaits its answer
        #: How many sessions the connection had when the server answered 429.
        self.refused_at: int | None = None

    async def start(self, task_group: TaskGroup) -> None:
        await self.h3._start(task_group)
        task_group.start_soon(self.router.read_datagrams)
        task_group.start_soon(self.router.expire_held)

    async def dialect(self) -> Dialect:
        """The newest dialect both sides speak (waits for the server's SETTINGS)."""
        with anyio.fail_after(SETTINGS_TIMEOUT):
            await self.h3.session.settings_received.wait()
        peer = self.h3.session.protocol.peer_settings or {}
        dialect = client_dialect(peer)
        if dialect is None:
            raise SessionRejected(
                f"{self.h3.authority} offers no WebTransport draft we speak (its SETTINGS: "
                f"{', '.join(f'0x{k:x}={v}' for k, v in sorted(peer.items()))})",
                status=0,
            )
        return dialect

    def takes_another(self) -> bool:
        """True if one more session may go on this connection now."""
        if not self.h3.available:
            return False
        peer = self.h3.session.protocol.peer_settings
        if peer is None:
            return False  # not known yet: the one session being opened is all
        dialect = client_dialect(peer)
        if dialect is None:
            return False
        count = len(self.router.sessions) + self.opening
        if self.refused_at is not None and count >= self.refused_at:
            return False
        if dialect is Dialect.DRAFT02:
            return True
        if not flow_control_enabled(dialect, self.limits.to_settings(), peer):
            return count == 0
        max_sessions = peer.get(WTSetting.WT_MAX_SESSIONS)
        return max_sessions is None or count < max_sessions

    async def open_session(self, task_group: TaskGroup, path: str, headers: list[tuple[bytes, bytes]]) -> WebTransportSession:
        """Send the CONNECT and wait for its answer (:class:`SessionRejected` if refused).

        The caller counts the session in ``opening`` meanwhile."""
        dialect = await self.dialect()
        h3 = self.h3
        request = await h3._open_request("CONNECT")
        connect = request_headers(dialect, authority=h3.authority, path=path, extra=headers)
        origin = next((value.decode("latin-1") for name, value in headers if name == b"origin"), None)
        flow = SessionFlowControl.negotiate(dialect, self.limits, h3.session.protocol.peer_settings or {})
        session = WebTransportSession(
            self.router, request, dialect=dialect, path=path.partition("?")[0], headers=connect, origin=origin, flow=flow
        )
        session._unframed_capsules = expects_bare_capsules(h3.session.protocol.peer_settings or {})
        self.router.expect(session.session_id)  # the server's streams may come before its answer
        try:
            await request.send_headers(connect)
            status = _status(await request.receive_event())
        except BaseException:
            self.router.forget(session.session_id)
            request.reset(ErrorCode.H3_REQUEST_CANCELLED)
            request.close()
            raise
        if not 200 <= status < 300:
            self.router.forget(session.session_id)
            request.close()
            raise SessionRejected(f"the server answered the WebTransport CONNECT to {path!r} with {status}", status=status)
        self.router.establish(session)
        task_group.start_soon(session._run, name=f"aiopquic webtransport session {session.session_id}")
        logger.debug("session %d open to %s%s (%s)", session.session_id, h3.authority, path, dialect.name)
        return session

    def close(self) -> None:
        """Close at once (sessions still on it end)."""
        self.router.close_all()
        self.h3.quic.close(ErrorCode.H3_NO_ERROR, "")

    async def aclose(self) -> None:
        """Close gracefully: what the sessions sent last (their close capsules) goes out first."""
        with anyio.CancelScope(shield=True):
            try:
                await self.h3.quic.aclose(ErrorCode.H3_NO_ERROR, "")
            except (ConnectionClosed, anyio.ClosedResourceError):
                pass
        self.router.close_all()


def _status(event: object) -> int:
    if not isinstance(event, HeadersReceived):
        return 0
    for name, value in event.headers:
        if name == b":status":
            return int(value)
    return 0


def _client_config(config: QuicConfig) -> QuicConfig:
    if not isinstance(config, QuicConfig):
        raise TypeError("config must be a QuicConfig")
    if "h3" not in config.alpn:
        raise ValueError(f"WebTransport needs 'h3' in QuicConfig.alpn (it is {list(config.alpn)!r})")
    if config.max_datagram_frame_size == 0:
        config = dataclasses.replace(config, max_datagram_frame_size=DATAGRAM_FRAME_SIZE)
    return config


def _parse_url(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"a WebTransport URL is https://host[:port]/path, not {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 443, path


class WebTransportClient:
    """Opens WebTransport sessions, all through one :class:`~aiopquic.QuicClient`.

    ::

        async with wt.WebTransportClient(config) as client:
            async with client.open_session("https://example.org/a") as a, \\
                       client.open_session("https://example.org/b") as b:
                ...   # one connection carries both, if the server allows it

    Sessions to one origin share a connection while its server allows more
    (draft-13+ with session flow control on both sides: up to its
    WT_MAX_SESSIONS; draft-02: no limit); otherwise a session gets a
    connection of its own. Leaving the ``async with`` closes every session and
    connection. ``config.alpn`` must offer ``"h3"``; QUIC datagrams are turned
    on if it has none. ``limits`` is what a server may open and send in each
    session before we grant more (draft-13+ flow control).
    """

    def __init__(
        self,
        config: QuicConfig,
        *,
        limits: SessionLimits | None = None,
        local_host: str | None = None,
        local_port: int = 0,
    ) -> None:
        if limits is not None and not isinstance(limits, SessionLimits):
            raise TypeError(f"limits must be a SessionLimits, not {type(limits).__name__}")
        self.config = _client_config(config)
        self.limits = limits if limits is not None else DEFAULT_LIMITS
        self._quic = QuicClient(self.config, local_host=local_host, local_port=local_port)
        self._task_group: TaskGroup | None = None
        self._connections: dict[Origin, list[_Connection]] = {}
        self._locks: dict[Origin, anyio.Lock] = {}
        self._state = "new"

    async def __aenter__(self) -> WebTransportClient:
        if self._state != "new":
            raise RuntimeError("a WebTransportClient can be entered only once")
        self._task_group = await enter_with_task_group(self._quic)
        self._state = "open"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        try:
            for connections in self._connections.values():
                for conn in connections:
                    for session in list(conn.router.sessions.values()):
                        session.close()
                    await conn.aclose()
            self._connections.clear()
        finally:
            try:
                task_group, self._task_group = self._task_group, None
                assert task_group is not None
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
            finally:
                await self._quic.__aexit__(exc_type, exc, tb)

    def open_session(self, url: str, *, headers: HeaderInput = ()) -> _OpenSession:
        """Open a session to ``url`` (``https://host:port/path``), sharing a connection if it may.

        ``async with client.open_session(url) as session:``, or ``session =
        await client.open_session(url)`` (close it with ``session.aclose()``).
        ``headers`` are added to the CONNECT (an ``origin``, say). A refused
        CONNECT raises :class:`SessionRejected` with the server's status.
        """
        return _OpenSession(self, url, headers)

    @property
    def connection_count(self) -> int:
        """How many connections the client holds open."""
        return sum(len(conns) for conns in self._connections.values())

    async def _open(self, url: str, headers: HeaderInput) -> WebTransportSession:
        if self._state != "open" or self._task_group is None:
            raise RuntimeError("use the client inside `async with WebTransportClient(config) as client:`")
        host, port, path = _parse_url(url)
        extra = [(_to_bytes(name).lower(), _to_bytes(value)) for name, value in headers]
        origin: Origin = (host, port)
        for attempt in range(2):
            async with self._locks.setdefault(origin, anyio.Lock()):
                conns = self._connections.setdefault(origin, [])
                for done in [c for c in conns if not c.h3.available and not c.router.sessions]:
                    conns.remove(done)  # closed, or GOAWAY and no session left on it
                    done.close()
                conn = next((c for c in conns if c.takes_another()), None)
                if conn is None:
                    conn = await self._connect(host, port)
                    conns.append(conn)
                conn.opening += 1  # the session counts on this connection while it opens
            others = len(conn.router.sessions)
            try:
                return await conn.open_session(self._task_group, path, extra)
            except SessionRejected as exc:
                # A server that carries no more sessions on this connection than it
                # has (draft-15+ announces no WT_MAX_SESSIONS) answers 429: once more,
                # on another connection.
                if exc.status != TOO_MANY_SESSIONS or not others or attempt:
                    raise
                conn.refused_at = others
                logger.debug("%s carries %d session(s) per connection: opening another", conn.h3.authority, others)
            finally:
                conn.opening -= 1
        raise AssertionError("unreachable")

    async def _connect(self, host: str, port: int) -> _Connection:
        assert self._task_group is not None
        quic = await self._quic.connect(host, port)
        try:
            await quic.__aenter__()
            settings = H3Settings(h3_datagram=True, extra={k: v for k, v in client_settings(self.limits).items() if v})
            conn = _Connection(H3Connection(quic, _authority(host, port), settings=settings), self.limits)
            await conn.start(self._task_group)
        except BaseException:
            quic.close(ErrorCode.H3_INTERNAL_ERROR, "")
            raise
        logger.debug("WebTransport connection to %s:%d opened", host, port)
        return conn


class _OpenSession:
    """What :meth:`WebTransportClient.open_session` and :func:`open_webtransport_session`
    return: awaitable, and an async context manager."""

    def __init__(
        self,
        client: WebTransportClient | None,
        url: str,
        headers: HeaderInput,
        config: QuicConfig | None = None,
        limits: SessionLimits | None = None,
    ) -> None:
        _parse_url(url)
        self._client = client
        self._own_client = WebTransportClient(config, limits=limits) if client is None and config is not None else None
        self._url = url
        self._headers = list(headers)
        self._session: WebTransportSession | None = None

    async def _open(self) -> WebTransportSession:
        if self._own_client is None:
            assert self._client is not None
            return await self._client._open(self._url, self._headers)
        await self._own_client.__aenter__()
        try:
            session = await self._own_client._open(self._url, self._headers)
        except BaseException as exc:
            await self._own_client.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return session

    def __await__(self) -> Generator[Any, None, WebTransportSession]:
        return self._awaited().__await__()

    async def _awaited(self) -> WebTransportSession:
        session = await self._open()
        if self._own_client is not None:
            own = self._own_client

            async def close_connection() -> None:
                await own.__aexit__(None, None, None)

            session._on_aclose = close_connection
        return session

    async def __aenter__(self) -> WebTransportSession:
        self._session = await self._open()
        return self._session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        self._session.close()
        if self._own_client is not None:
            await self._own_client.__aexit__(exc_type, exc, tb)
        else:
            await anyio.lowlevel.checkpoint()


def open_webtransport_session(
    url: str, *, config: QuicConfig, headers: HeaderInput = (), limits: SessionLimits | None = None
) -> _OpenSession:
    """Open a WebTransport session to ``url`` (``https://host:port/path``) on a connection of its own.

    ``async with open_webtransport_session(url, config=config) as session:``,
    or ``session = await open_webtransport_session(...)`` then ``async with
    session:`` (or ``await session.aclose()``, in the same task); leaving
    closes the session (code 0) and its connection. The client waits for the
    server's SETTINGS and speaks the newest draft both sides know
    (``session.dialect``). ``headers`` are added to the CONNECT (an
    ``origin``, say). A refused CONNECT raises :class:`SessionRejected` with
    the server's status. ``config.alpn`` must offer ``"h3"``; QUIC datagrams
    are turned on if it has none. ``limits``: as for :class:`WebTransportClient`.
    Several sessions sharing connections: :class:`WebTransportClient`.
    """
    return _OpenSession(None, url, headers, _client_config(config), limits)
