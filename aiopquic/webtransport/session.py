"""``WebTransportSession``: one session over an HTTP/3 connection.

The session owns its CONNECT stream (capsules both ways) and its flow control
(draft-13+: :class:`~._flow.SessionFlowControl`): opening a stream or sending
body bytes waits for the peer's credit, reading gives the peer credit back,
and a peer that goes over our limits ends the session with
WT_FLOW_CONTROL_ERROR (the connection and other sessions go on). The
connection-wide routing of streams and datagrams is ``_router.py``'s.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from .._taskgroup import TaskSpawner, serve_each_from_dispatch
from ..h3._events import DataReceived, FrameReceived
from ..h3._frames import ErrorCode, encode_varint
from ..h3._headers import Headers
from ..h3._protocol import H3Protocol
from ..h3._session import RequestStream
from ..quic.connection import QuicConnection
from ..quic.errors import ConnectionClosed, StreamReset
from ..quic.stream import QuicReceiveStream, QuicSendStream, QuicStream
from ._capsules import KNOWN_CAPSULE_TYPES, encode_capsule
from ._codes import WTErrorCode, app_error_to_h3
from ._dialects import Dialect, SessionLimits
from ._flow import FlowControlError, SessionFlowControl
from ._inbox import Inbox
from ._session_state import (
    DrainRequested,
    SendCreditGranted,
    SessionCloseRequested,
    SessionCore,
    SessionEvent,
    SessionFailed,
)
from ._streams import bidi_stream_header, uni_stream_header
from .errors import SessionClosed
from .stream import WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

if TYPE_CHECKING:
    from ._router import SessionRouter

__all__ = ["WebTransportSession"]

logger = logging.getLogger("aiopquic.webtransport.session")

AnyWebTransportStream = WebTransportStream | WebTransportReceiveStream
#: Streams the peer opened that the application has not accepted yet; beyond
#: this they are refused (WT_BUFFERED_STREAM_REJECTED).
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
        flow: SessionFlowControl | None = None,
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
        if flow is None:
            flow = SessionFlowControl(enabled=False, ours=SessionLimits(), theirs={})
        self._core = SessionCore(self.session_id, dialect, flow)
        lowlevel = router.conn._ll
        self._streams_in = Inbox[AnyWebTransportStream](MAX_QUEUED_STREAMS, lowlevel, "accepting streams from")
        self._datagrams_in = Inbox[bytes](MAX_QUEUED_DATAGRAMS, lowlevel, "receiving datagrams from")
        self._closed: SessionClosed | None = None
        self._closed_event = anyio.Event()
        self._drain_requested = anyio.Event()
        self._credit = anyio.Event()  # set (and replaced) when the peer grants more
        #: The peer sends its capsules as bare frames on the CONNECT stream, not
        #: inside DATA frames as RFC 9297 says (pywebtransport 0.8, picoquic's
        #: h3zero before 2025-10): we read them, and answer in kind.
        self._unframed_capsules = False
        self._ours: weakref.WeakSet[WebTransportStream | WebTransportSendStream | WebTransportReceiveStream]
        self._ours = weakref.WeakSet()
        #: Run after the session is closed by ``aclose()`` (the connection of a
        #: session that has one of its own).
        self._on_aclose: Callable[[], Awaitable[None]] | None = None
        request.session.protocol.keep_frames(self.session_id, KNOWN_CAPSULE_TYPES)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<WebTransportSession {self.session_id} {self.path!r} {self.dialect.name} {state}>"

    @property
    def closed(self) -> bool:
        """True once the session is closed (either side, or its connection)."""
        return self._closed is not None

    @property
    def close_error(self) -> SessionClosed | None:
        """How the session ended (``error_code``, ``reason``, ``by_peer``), or
        None while it is open. A handler cancelled because the peer closed its
        session reads the peer's code and reason here."""
        return self._closed

    @property
    def connection(self) -> QuicConnection:
        """The QUIC connection under the session."""
        return self._router.conn

    @property
    def flow_control(self) -> bool:
        """True when session flow control applies (draft-13+, both sides declared limits)."""
        return self._core.flow.enabled

    # --- streams ----------------------------------------------------------------------

    async def open_stream(self) -> WebTransportStream:
        """Open a bidirectional stream in this session (waits while the peer allows no more)."""
        await self._take_stream_credit(True)
        with self._ending_with_connection():
            quic = await self._router.conn.open_stream()
        quic.send_nowait(bidi_stream_header(self.session_id))
        stream = WebTransportStream(quic, session=self)
        self._ours.add(stream)
        return stream

    async def open_uni_stream(self) -> WebTransportSendStream:
        """Open a unidirectional (send-only) stream in this session (waits while the peer allows no more)."""
        await self._take_stream_credit(False)
        with self._ending_with_connection():
            quic = await self._router.conn.open_uni_stream()
        quic.send_nowait(uni_stream_header(self.session_id))
        stream = WebTransportSendStream(quic, session=self)
        self._ours.add(stream)
        return stream

    async def accept_stream(self) -> AnyWebTransportStream:
        """The next stream the peer opened; :class:`SessionClosed` once the session is over.

        One task accepts at a time (:class:`anyio.BusyResourceError` for a second
        one), as with ``QuicConnection.accept_stream``."""
        try:
            return await self._streams_in.get()
        except anyio.EndOfStream:
            raise self._closed_error() from None

    async def serve_streams(
        self,
        handler: Callable[[AnyWebTransportStream], Coroutine[Any, Any, object]],
        task_group: TaskSpawner | None = None,
    ) -> None:
        """Run ``handler(stream)`` in a task of its own for each stream the peer
        opens in this session, until the session is over; as
        ``QuicConnection.serve_streams`` (the backend's own task group unless
        ``task_group`` is given; it returns once every handler has returned)."""
        await serve_each_from_dispatch(self, handler, self._install_stream_starter, task_group)

    def _install_stream_starter(self, start: Callable[[AnyWebTransportStream], bool] | None) -> None:
        self._streams_in.starter = start

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
        with self._ending_with_connection():
            await self._router.conn.send_datagram(H3Protocol.encode_datagram(self.session_id, bytes(data)))

    async def receive_datagram(self) -> bytes:
        """The next datagram of this session; :class:`SessionClosed` once it is over.

        One task receives at a time (:class:`anyio.BusyResourceError` for a second one)."""
        try:
            return await self._datagrams_in.get()
        except anyio.EndOfStream:
            raise self._closed_error() from None

    # --- winding down -----------------------------------------------------------------

    def drain(self) -> None:
        """Ask the peer to wind the session down (DRAIN_WEBTRANSPORT_SESSION):
        it should finish what it is doing and close. The session stays usable."""
        self._raise_if_closed()
        capsule = self._core.drain()
        if capsule:
            self._send_capsule(capsule)

    @property
    def drain_requested(self) -> bool:
        """True once the peer asked us to wind the session down (see :meth:`drain`)."""
        return self._drain_requested.is_set()

    async def wait_drain_requested(self) -> None:
        """Wait until the peer asks us to wind the session down."""
        await self._drain_requested.wait()

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
            self._request.stream.send_nowait(self._framed(capsule) if capsule else b"", eof=True)
        except _PEER_GONE:
            pass
        self._set_closed(SessionClosed(
            f"session {self.session_id} closed by us (error code {error_code})", error_code=error_code, reason=reason
        ))

    async def aclose(self) -> None:
        """Close the session with code 0 (see :meth:`close`); a session opened
        with ``await open_webtransport_session(...)`` closes its connection too."""
        self.close()
        on_aclose, self._on_aclose = self._on_aclose, None
        if on_aclose is not None:
            await on_aclose()
        else:
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

    # --- flow control (the streams call these) --------------------------------------------

    async def _take_stream_credit(self, bidirectional: bool) -> None:
        """Count a stream we open, waiting while the peer's limit says no (WT_STREAMS_BLOCKED once)."""
        flow = self._core.flow
        while True:
            self._raise_if_closed()
            if flow.can_open_stream(bidirectional):
                flow.on_stream_opened(bidirectional)
                return
            blocked = flow.streams_blocked(bidirectional)
            if blocked is not None:
                self._send_capsule(blocked.encode())
            await self._credit.wait()

    async def _send_body(
        self, quic: QuicStream | QuicSendStream, data: bytes | bytearray | memoryview, eof: bool
    ) -> None:
        """Send a stream's body bytes within the session's credit, waiting for more as needed."""
        flow = self._core.flow
        if not flow.enabled:
            await quic.send(data, eof=eof)
            return
        view = memoryview(data).cast("B")
        while True:
            self._raise_if_closed()
            credit = flow.send_credit()
            assert credit is not None
            if view and not credit:
                blocked = flow.data_blocked()
                if blocked is not None:
                    self._send_capsule(blocked.encode())
                await self._credit.wait()
                continue
            n = min(credit, len(view))
            chunk, view = view[:n], view[n:]
            flow.on_data_sent(n)
            await quic.send(chunk, eof=eof and not view)
            if not view:
                return

    def _body_read(self, n: int) -> None:
        """The application read ``n`` body bytes: check them against our limit, grant more."""
        flow = self._core.flow
        if not flow.enabled or self._closed is not None or not n:
            return
        try:
            flow.on_data_received(n)
        except FlowControlError as exc:
            self._fail(exc.error_code, exc.reason)
            raise self._closed_error() from None
        grant = flow.on_data_consumed(n)
        if grant is not None:
            self._send_capsule(grant.encode())

    def _peer_stream_done(self, bidirectional: bool) -> None:
        """One of the peer's streams is over: it may open another."""
        grant = self._core.flow.on_peer_stream_closed(bidirectional)
        if grant is not None:
            self._send_capsule(grant.encode())

    def _gone(self) -> SessionClosed | None:
        """What a stream of this closed session raises (None while it is open)."""
        return self._closed.copy() if self._closed is not None else None

    def _wake_credit(self) -> None:
        self._credit.set()
        self._credit = anyio.Event()

    # --- the driver's side ------------------------------------------------------------

    def _framed(self, capsule: bytes) -> bytes:
        if self._unframed_capsules:
            return capsule
        return self._request.session.protocol.data_frame_header(len(capsule)) + capsule

    def _send_capsule(self, capsule: bytes) -> None:
        if self._closed is not None:
            return
        try:
            self._request.stream.send_nowait(self._framed(capsule))
        except _PEER_GONE:
            pass

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise self._closed.copy()

    def _closed_error(self) -> SessionClosed:
        assert self._closed is not None
        return self._closed.copy()

    @contextmanager
    def _ending_with_connection(self) -> Iterator[None]:
        """Around a call on the connection: its end, met before the session's own
        task has noticed it, ends the session and raises SessionClosed."""
        try:
            yield
        except ConnectionClosed as exc:
            raise self._closed_with_connection(exc) from None

    def _closed_with_connection(self, exc: ConnectionClosed) -> SessionClosed:
        """The session ends with its connection (``exc``), if it has not ended
        already; returns what its operations raise now. Operations that meet the
        connection's end before the session's own task does raise this too."""
        self._set_closed(SessionClosed(
            f"session {self.session_id}: its connection closed ({exc})",
            error_code=exc.error_code, reason=exc.reason, by_peer=exc.by_peer,
        ))
        return self._closed_error()

    def _set_closed(self, error: SessionClosed) -> None:
        if self._closed is not None:
            return
        self._closed = error
        self._router.forget(self.session_id)
        self._streams_in.close()
        self._datagrams_in.close()
        for stream in list(self._ours):  # what is finished already stays as it is
            quic = stream._quic
            if not isinstance(quic, QuicSendStream):
                quic.stop_sending(WTErrorCode.SESSION_GONE)
            if not isinstance(quic, QuicReceiveStream):
                quic.reset(WTErrorCode.SESSION_GONE)
        self._wake_credit()
        self._closed_event.set()
        logger.debug("%r: %s", self, error)

    def _fail(self, error_code: int, reason: str) -> None:
        """The peer broke the protocol in this session: reset the CONNECT stream, end the session."""
        logger.info("session %d failed: %s", self.session_id, reason)
        try:
            self._request.reset(error_code)
        except _PEER_GONE:
            pass
        self._set_closed(SessionClosed(f"session {self.session_id} failed: {reason}", error_code=error_code, reason=reason))

    def _deliver_stream(self, quic: QuicStream | QuicReceiveStream, prefix: bytes) -> int | None:
        """Take a stream the peer opened; the code to refuse it with, or None."""
        if self._closed is not None:
            return WTErrorCode.SESSION_GONE
        bidirectional = isinstance(quic, QuicStream)
        try:
            self._core.flow.on_peer_stream(bidirectional)
        except FlowControlError as exc:
            self._fail(exc.error_code, exc.reason)
            return WTErrorCode.SESSION_GONE
        stream: AnyWebTransportStream
        if isinstance(quic, QuicStream):
            stream = WebTransportStream(quic, prefix, session=self, peer_opened=True)
        else:
            stream = WebTransportReceiveStream(quic, prefix, session=self)
        if not self._streams_in.put_nowait(stream):
            self._peer_stream_done(bidirectional)
            return WTErrorCode.BUFFERED_STREAM_REJECTED
        self._ours.add(stream)
        return None

    def _deliver_datagram(self, payload: bytes) -> None:
        if self._closed is not None:
            return
        if not self._datagrams_in.put_nowait(payload):
            self.datagrams_dropped += 1

    async def _run(self) -> None:
        """Read the CONNECT stream's capsules until the session ends."""
        try:
            while self._closed is None:
                event = await self._request.receive_event()
                events: list[SessionEvent]
                if event is None:
                    events = self._core.receive_capsule_data(b"", True)
                elif isinstance(event, DataReceived):
                    events = self._core.receive_capsule_data(bytes(event.data), event.stream_ended)
                elif isinstance(event, FrameReceived):
                    if not self._unframed_capsules:
                        logger.info("session %d: the peer sends capsules outside DATA frames; answering in kind", self.session_id)
                        self._unframed_capsules = True
                    events = self._core.receive_capsule_data(encode_capsule(event.frame_type, event.payload))
                else:  # trailers or a malformed message: the session cannot go on
                    events = [SessionFailed(ErrorCode.H3_MESSAGE_ERROR, f"unexpected {type(event).__name__} on the CONNECT stream")]
                for session_event in events:
                    self._on_event(session_event)
        except StreamReset as exc:
            if self._core.connect_stream_reset():  # the session was open: say why it ended
                self._set_closed(SessionClosed(
                    f"session {self.session_id}: the peer reset its CONNECT stream (error code 0x{exc.error_code:x})",
                    error_code=exc.error_code, reason="", by_peer=True,
                ))
        except ConnectionClosed as exc:
            self._closed_with_connection(exc)
        except anyio.ClosedResourceError:  # we closed the connection (or the CONNECT stream)
            pass
        finally:
            if self._closed is None:  # cancelled, or the H3 layer failed
                self._set_closed(SessionClosed(f"session {self.session_id} is over"))

    def _on_event(self, event: SessionEvent) -> None:
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
            self._fail(event.error_code, event.reason)
        elif isinstance(event, SendCreditGranted):
            self._wake_credit()
        elif isinstance(event, DrainRequested):
            logger.debug("%r: the peer asks to wind the session down", self)
            self._drain_requested.set()
