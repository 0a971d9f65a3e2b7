"""``WebTransportSession``: one session over an HTTP/3 connection, and the
connection-wide routing of streams and datagrams to sessions."""

from __future__ import annotations

import logging
import weakref
from types import TracebackType
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..h3._events import DataReceived, UnknownStream
from ..h3._frames import ErrorCode, decode_varint, encode_varint
from ..h3._headers import Headers
from ..h3._protocol import H3Protocol, ProtocolError
from ..h3._session import H3Session, RequestStream
from ..quic.connection import QuicConnection
from ..quic.errors import ConnectionClosed, StreamReset
from ..quic.stream import QuicReceiveStream, QuicSendStream, QuicStream
from ._codes import UNI_STREAM_TYPE, WTErrorCode, app_error_to_h3
from ._dialects import Dialect, SessionLimits
from ._flow import SessionFlowControl
from ._session_state import SessionCloseRequested, SessionCore, SessionFailed
from ._streams import OtherStream, StreamHeaderError, StreamHeaderReader, bidi_stream_header, uni_stream_header
from .errors import SessionClosed
from .stream import WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

__all__ = ["WebTransportSession"]

logger = logging.getLogger("aiopquic.webtransport")

AnyWebTransportStream = WebTransportStream | WebTransportReceiveStream
#: Streams the peer opened that the application has not accepted yet; beyond
#: this the peer waits (its streams are read by nobody until then).
MAX_QUEUED_STREAMS = 64
#: Datagrams received and not read yet; more are dropped (and counted).
MAX_QUEUED_DATAGRAMS = 256
_PEER_GONE = (ConnectionClosed, StreamReset, anyio.ClosedResourceError, anyio.BrokenResourceError)


class WebTransportSession:
    """One WebTransport session: streams and datagrams, like a ``QuicConnection``.

    ``async for stream in session`` yields the peer's streams (bidirectional
    :class:`WebTransportStream` or receive-only :class:`WebTransportReceiveStream`)
    until the session closes. Once closed, its operations raise
    :class:`SessionClosed`. Leaving ``async with session`` closes it with code 0.
    """

    def __init__(
        self,
        router: SessionRouter,
        request: RequestStream,
        *,
        dialect: Dialect,
        path: str,
        headers: Headers,
        origin: str | None,
        path_params: dict[str, str] | None = None,
    ) -> None:
        self._router = router
        self._request = request
        self.session_id = request.stream_id
        #: The draft the two sides agreed on.
        self.dialect = dialect
        #: The path of the CONNECT (percent-decoded, without the query).
        self.path = path
        #: The CONNECT request's header fields.
        self.headers = headers
        #: The CONNECT's ``origin`` header (a browser's page origin), if any.
        self.origin = origin
        #: What the route's pattern took from the path (``/rooms/{name}``).
        self.path_params = path_params or {}
        #: Datagrams dropped because nobody read them fast enough.
        self.datagrams_dropped = 0
        flow = SessionFlowControl(enabled=False, ours=SessionLimits(), theirs={})
        self._core = SessionCore(self.session_id, dialect, flow)
        self._streams_in: tuple[MemoryObjectSendStream[AnyWebTransportStream], MemoryObjectReceiveStream[AnyWebTransportStream]]
        self._streams_in = anyio.create_memory_object_stream[AnyWebTransportStream](MAX_QUEUED_STREAMS)
        self._datagrams_in: tuple[MemoryObjectSendStream[bytes], MemoryObjectReceiveStream[bytes]]
        self._datagrams_in = anyio.create_memory_object_stream[bytes](MAX_QUEUED_DATAGRAMS)
        self._closed: SessionClosed | None = None
        self._closed_event = anyio.Event()
        self._ours: weakref.WeakSet[WebTransportStream | WebTransportSendStream | WebTransportReceiveStream]
        self._ours = weakref.WeakSet()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<WebTransportSession {self.session_id} {self.path!r} {self.dialect.name} {state}>"

    @property
    def closed(self) -> bool:
        """True once the session is closed (either side, or its connection)."""
        return self._closed is not None

    @property
    def connection(self) -> QuicConnection:
        """The QUIC connection under the session."""
        return self._router.conn

    # --- streams ----------------------------------------------------------------------

    async def open_stream(self) -> WebTransportStream:
        """Open a bidirectional stream in this session."""
        self._raise_if_closed()
        quic = await self._router.conn.open_stream()
        quic.send_nowait(bidi_stream_header(self.session_id))
        stream = WebTransportStream(quic)
        self._ours.add(stream)
        return stream

    async def open_uni_stream(self) -> WebTransportSendStream:
        """Open a unidirectional (send-only) stream in this session."""
        self._raise_if_closed()
        quic = await self._router.conn.open_uni_stream()
        quic.send_nowait(uni_stream_header(self.session_id))
        stream = WebTransportSendStream(quic)
        self._ours.add(stream)
        return stream

    async def accept_stream(self) -> AnyWebTransportStream:
        """The next stream the peer opened; :class:`SessionClosed` once the session is over."""
        try:
            return await self._streams_in[1].receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._closed_error() from None

    def __aiter__(self) -> WebTransportSession:
        return self

    async def __anext__(self) -> AnyWebTransportStream:
        try:
            return await self.accept_stream()
        except SessionClosed:
            raise StopAsyncIteration from None

    # --- datagrams --------------------------------------------------------------------

    @property
    def max_datagram_size(self) -> int:
        """The largest payload :meth:`send_datagram` takes now (0: the peer takes none)."""
        size = self._router.conn.max_datagram_size - len(encode_varint(self.session_id // 4))
        return max(size, 0)

    async def send_datagram(self, data: bytes | bytearray | memoryview) -> None:
        """Send an unreliable datagram in this session."""
        self._raise_if_closed()
        await self._router.conn.send_datagram(H3Protocol.encode_datagram(self.session_id, bytes(data)))

    async def receive_datagram(self) -> bytes:
        """The next datagram of this session; :class:`SessionClosed` once it is over."""
        try:
            return await self._datagrams_in[1].receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise self._closed_error() from None

    # --- closing ----------------------------------------------------------------------

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the session with a 32-bit application ``error_code`` and ``reason``.

        The peer gets CLOSE_WEBTRANSPORT_SESSION and the end of the CONNECT
        stream; the session's streams are reset (WT_SESSION_GONE). The
        connection and its other sessions go on.
        """
        app_error_to_h3(error_code)  # checks the code before anything changes
        if not isinstance(reason, str):
            raise TypeError(f"reason must be a str, not {type(reason).__name__}")
        if self._closed is not None:
            return
        capsule = self._core.close(error_code, reason)
        try:
            frame = self._router.h3.protocol.data_frame_header(len(capsule)) + capsule if capsule else b""
            self._request.stream.send_nowait(frame, eof=True)
        except _PEER_GONE:
            pass
        self._set_closed(SessionClosed(
            f"session {self.session_id} closed by us (error code {error_code})", error_code=error_code, reason=reason
        ))

    async def aclose(self) -> None:
        """Close the session with code 0 (see :meth:`close`)."""
        self.close()
        await anyio.lowlevel.checkpoint()

    async def wait_closed(self) -> None:
        """Wait until the session is closed, by either side."""
        await self._closed_event.wait()

    async def __aenter__(self) -> WebTransportSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # --- the driver's side ------------------------------------------------------------

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise self._closed.copy()

    def _closed_error(self) -> SessionClosed:
        assert self._closed is not None
        return self._closed.copy()

    def _set_closed(self, error: SessionClosed) -> None:
        if self._closed is not None:
            return
        self._closed = error
        self._router.sessions.pop(self.session_id, None)
        self._streams_in[0].close()
        self._datagrams_in[0].close()
        for stream in list(self._ours):  # what is finished already stays as it is
            quic = stream._quic
            if not isinstance(quic, QuicSendStream):
                quic.stop_sending(WTErrorCode.SESSION_GONE)
            if not isinstance(quic, QuicReceiveStream):
                quic.reset(WTErrorCode.SESSION_GONE)
        self._closed_event.set()
        logger.debug("%r: %s", self, error)

    def _deliver_stream(self, stream: AnyWebTransportStream) -> bool:
        if self._closed is not None:
            return False
        try:
            self._streams_in[0].send_nowait(stream)
        except anyio.WouldBlock:
            return False
        self._ours.add(stream)
        return True

    def _deliver_datagram(self, payload: bytes) -> None:
        if self._closed is not None:
            return
        try:
            self._datagrams_in[0].send_nowait(payload)
        except anyio.WouldBlock:
            self.datagrams_dropped += 1

    async def _run(self) -> None:
        """Read the CONNECT stream's capsules until the session ends."""
        try:
            while self._closed is None:
                event = await self._request.receive_event()
                if event is None:
                    events = self._core.receive_capsule_data(b"", True)
                elif isinstance(event, DataReceived):
                    events = self._core.receive_capsule_data(bytes(event.data), event.stream_ended)
                else:  # trailers or a malformed message: the session cannot go on
                    events = [SessionFailed(ErrorCode.H3_MESSAGE_ERROR, f"unexpected {type(event).__name__} on the CONNECT stream")]
                for session_event in events:
                    self._on_event(session_event)
        except StreamReset:
            for session_event in self._core.connect_stream_reset():
                self._on_event(session_event)
        except ConnectionClosed as exc:
            self._set_closed(SessionClosed(
                f"session {self.session_id}: its connection closed ({exc})",
                error_code=exc.error_code, reason=exc.reason, by_peer=exc.by_peer,
            ))
        except anyio.ClosedResourceError:  # we closed the connection (or the CONNECT stream)
            pass
        finally:
            if self._closed is None:  # cancelled, or the H3 layer failed
                self._set_closed(SessionClosed(f"session {self.session_id} is over"))

    def _on_event(self, event: object) -> None:
        if isinstance(event, SessionCloseRequested):
            try:  # our answer: the end of our side of the CONNECT stream
                self._request.stream.send_nowait(b"", eof=True)
            except _PEER_GONE:
                pass
            self._set_closed(SessionClosed(
                f"session {self.session_id} closed by the peer (error code {event.error_code})",
                error_code=event.error_code, reason=event.reason, by_peer=True,
            ))
        elif isinstance(event, SessionFailed):
            self._request.reset(event.error_code)
            self._set_closed(SessionClosed(
                f"session {self.session_id} failed: {event.reason}", error_code=event.error_code, reason=event.reason
            ))


class SessionRouter:
    """Hands an HTTP/3 connection's WebTransport streams and datagrams to their sessions."""

    def __init__(self, conn: QuicConnection, h3: H3Session) -> None:
        self.conn = conn
        self.h3 = h3
        self.sessions: dict[int, WebTransportSession] = {}
        #: Datagrams for no session we know (dropped).
        self.datagrams_dropped = 0
        h3.on_unknown_stream = self.take_uni_stream

    async def take_bidi_stream(self, stream: QuicStream) -> bytes | None:
        """Read a peer bidi stream's first bytes: ``None`` if it was WebTransport's
        (handed to its session, or refused), else the bytes read (an HTTP/3 request)."""
        reader = StreamHeaderReader(unidirectional=False)
        while True:
            try:
                data, fin = await stream.receive(), False
            except anyio.EndOfStream:
                data, fin = b"", True
            try:
                header = reader.feed(data, fin)
            except StreamHeaderError as exc:
                self._refuse_stream(stream, exc)
                return None
            if header is None:
                continue
            if isinstance(header, OtherStream):
                return header.data
            session = self.sessions.get(header.session_id)
            if session is None or not session._deliver_stream(WebTransportStream(stream, header.data)):
                self._reject(stream, header.session_id)
            return None

    async def take_uni_stream(self, stream: QuicReceiveStream, event: UnknownStream) -> bool:
        """H3Session's taker of unknown uni stream types: WebTransport's are 0x54."""
        if event.stream_type != UNI_STREAM_TYPE:
            return False
        buffer = event.data
        while (parsed := decode_varint(buffer)) is None:
            try:
                buffer += await stream.receive()
            except anyio.EndOfStream:
                stream.stop_sending(ErrorCode.H3_FRAME_ERROR)
                return True
        session_id, start = parsed
        session = self.sessions.get(session_id)
        if session is None or not session._deliver_stream(WebTransportReceiveStream(stream, buffer[start:])):
            self._reject(stream, session_id)
        return True

    async def read_datagrams(self) -> None:
        """Route the connection's datagrams to their sessions, until it closes."""
        try:
            while True:
                datagram = await self.conn.receive_datagram()
                try:
                    session_id, payload = H3Protocol.decode_datagram(datagram)
                except ProtocolError as exc:
                    raise self.h3.fail(exc) from None
                session = self.sessions.get(session_id)
                if session is None:
                    self.datagrams_dropped += 1
                else:
                    session._deliver_datagram(payload)
        except (ConnectionClosed, anyio.ClosedResourceError):
            pass

    def close_all(self, error: ConnectionClosed | None = None) -> None:
        """The connection is going: every session ends."""
        for session in list(self.sessions.values()):
            session._set_closed(SessionClosed(
                f"session {session.session_id}: its connection closed",
                error_code=error.error_code if error else 0,
                reason=error.reason if error else "",
                by_peer=error.by_peer if error else False,
            ))

    def _refuse_stream(self, stream: Any, exc: StreamHeaderError) -> None:
        if exc.connection_error:
            self.h3.fail(ProtocolError(exc.error_code, exc.reason))
        else:
            stream.stop_sending(exc.error_code)
            if isinstance(stream, QuicStream):
                stream.reset(exc.error_code)

    @staticmethod
    def _reject(stream: QuicStream | QuicReceiveStream, session_id: int) -> None:
        """A stream for no session we know (or one that takes no more streams)."""
        logger.debug("stream %d for unknown session %d refused", stream.stream_id, session_id)
        stream.stop_sending(WTErrorCode.BUFFERED_STREAM_REJECTED)
        if isinstance(stream, QuicStream):
            stream.reset(WTErrorCode.BUFFERED_STREAM_REJECTED)
