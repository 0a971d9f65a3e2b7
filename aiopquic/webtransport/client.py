"""The WebTransport client: ``open_webtransport_session``."""

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
from ..quic.client import open_quic_connection
from ..quic.config import QuicConfig
from ..quic.stream import QuicStream
from ._dialects import client_dialect, client_settings, request_headers
from .errors import SessionRejected
from .server import DATAGRAM_FRAME_SIZE, LIMITS, SETTINGS_TIMEOUT
from .session import SessionRouter, WebTransportSession

__all__ = ["open_webtransport_session"]

logger = logging.getLogger("aiopquic.webtransport.client")

HeaderInput = Iterable[tuple[str | bytes, str | bytes]]


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


class _ClientSessions(SessionRouter):
    """The sessions of our client connection: the server's streams go to them."""

    async def take_server_stream(self, stream: QuicStream) -> None:
        if await self.take_bidi_stream(stream) is not None:  # HTTP/3 has no server-opened requests
            self.h3.fail(ProtocolError(ErrorCode.H3_STREAM_CREATION_ERROR, "the server opened a bidirectional HTTP/3 stream"))


class _OpenSession:
    """What :func:`open_webtransport_session` returns: an async context manager."""

    def __init__(self, url: str, config: QuicConfig, headers: HeaderInput) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"a WebTransport URL is https://host[:port]/path, not {url!r}")
        if not isinstance(config, QuicConfig):
            raise TypeError("config must be a QuicConfig")
        if "h3" not in config.alpn:
            raise ValueError(f"WebTransport needs 'h3' in QuicConfig.alpn (it is {list(config.alpn)!r})")
        self._host = parts.hostname
        self._port = parts.port or 443
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if config.max_datagram_frame_size == 0:
            config = dataclasses.replace(config, max_datagram_frame_size=DATAGRAM_FRAME_SIZE)
        self._config = config
        self._headers = [(_to_bytes(name).lower(), _to_bytes(value)) for name, value in headers]
        self._h3: H3Connection | None = None
        self._task_group: TaskGroup | None = None
        self._session: WebTransportSession | None = None

    def __await__(self) -> Generator[Any, None, WebTransportSession]:
        raise TypeError(
            "use `async with open_webtransport_session(...) as session:` - a session needs the block's tasks"
        )

    async def __aenter__(self) -> WebTransportSession:
        settings = H3Settings(h3_datagram=True, extra={k: v for k, v in client_settings(LIMITS).items() if v})
        quic = await open_quic_connection(self._host, self._port, config=self._config)
        authority = _authority(self._host, self._port)
        self._h3 = h3 = H3Connection(quic, authority, settings=settings)
        router = _ClientSessions(quic, h3.session)
        h3.on_peer_stream = router.take_server_stream
        await h3.__aenter__()
        try:
            self._task_group = await anyio.create_task_group().__aenter__()
            self._task_group.start_soon(router.read_datagrams)
            self._session = await self._connect(h3, router, authority)
            self._task_group.start_soon(self._session._run)
        except BaseException as exc:
            await self._exit(type(exc), exc, exc.__traceback__)
            raise
        return self._session

    async def _connect(self, h3: H3Connection, router: SessionRouter, authority: str) -> WebTransportSession:
        with anyio.fail_after(SETTINGS_TIMEOUT):
            await h3.session.settings_received.wait()
        peer = h3.session.protocol.peer_settings or {}
        dialect = client_dialect(peer)
        if dialect is None:
            raise SessionRejected(
                f"{authority} offers no WebTransport draft we speak (its SETTINGS: "
                f"{', '.join(f'0x{k:x}={v}' for k, v in sorted(peer.items()))})",
                status=0,
            )
        request = await h3._open_request("CONNECT")
        headers = request_headers(dialect, authority=authority, path=self._path, extra=self._headers)
        origin = next((value.decode("latin-1") for name, value in self._headers if name == b"origin"), None)
        session = WebTransportSession(
            router, request, dialect=dialect, path=self._path.partition("?")[0], headers=headers, origin=origin
        )
        router.sessions[session.session_id] = session  # the server's streams may come before its answer
        await request.send_headers(headers)
        response = await request.receive_event()
        status = _status(response)
        if not 200 <= status < 300:
            router.sessions.pop(session.session_id, None)
            request.close()
            raise SessionRejected(f"the server answered the WebTransport CONNECT to {self._path!r} with {status}", status=status)
        logger.debug("session %d open to %s%s (%s)", session.session_id, authority, self._path, dialect.name)
        return session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._exit(exc_type, exc, tb)

    async def _exit(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._h3 is not None
        if self._session is not None:
            self._session.close()
        try:
            with anyio.CancelScope(shield=True):  # the close capsule goes out before the connection ends
                await self._h3.quic.aclose(ErrorCode.H3_NO_ERROR, "")
        finally:
            try:
                if self._task_group is not None:
                    self._task_group.cancel_scope.cancel()
                    await self._task_group.__aexit__(None, None, None)
            finally:
                await self._h3.__aexit__(exc_type, exc, tb)


def _status(event: object) -> int:
    if not isinstance(event, HeadersReceived):
        return 0
    for name, value in event.headers:
        if name == b":status":
            return int(value)
    return 0


def open_webtransport_session(url: str, *, config: QuicConfig, headers: HeaderInput = ()) -> _OpenSession:
    """Open a WebTransport session to ``url`` (``https://host:port/path``).

    ``async with open_webtransport_session(url, config=config) as session:``;
    leaving the block closes the session (code 0) and its connection. The
    client waits for the server's SETTINGS and speaks the newest draft both
    sides know (``session.dialect``). ``headers`` are added to the CONNECT
    (an ``origin``, say). A refused CONNECT raises :class:`SessionRejected`
    with the server's status. ``config.alpn`` must offer ``"h3"``; QUIC
    datagrams are turned on if it has none.
    """
    return _OpenSession(url, config, headers)
