"""One HTTP/3 connection's WebTransport sessions: the peer's streams and
datagrams, routed to their session by session id.

The bookkeeping is :class:`~._session_state.SessionRegistry`'s (sans I/O);
this is its driver. A stream for a session that is not established yet
(its CONNECT still on the way, or its answer) waits a little: at most
:data:`MAX_BUFFERED_STREAMS` streams, each :data:`BUFFER_TIMEOUT` seconds,
then it is reset with WT_BUFFERED_STREAM_REJECTED. A datagram for a session
that is not established is dropped and counted (``datagrams_dropped``),
unless that session's CONNECT is known and awaits its answer.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import TYPE_CHECKING

import anyio

from ..h3._events import UnknownStream
from ..h3._frames import ErrorCode, decode_varint
from ..h3._protocol import H3Protocol, ProtocolError
from ..h3._session import H3Session
from ..quic.connection import QuicConnection
from ..quic.errors import ConnectionClosed
from ..quic.stream import QuicReceiveStream, QuicStream
from ._codes import UNI_STREAM_TYPE, WTErrorCode
from ._session_state import Buffered, Deliver, SessionRegistry
from ._streams import OtherStream, StreamHeaderError, StreamHeaderReader
from .errors import SessionClosed

if TYPE_CHECKING:
    from .session import WebTransportSession

logger = logging.getLogger("aiopquic.webtransport.router")

#: Streams that may wait for sessions not yet established, in all.
MAX_BUFFERED_STREAMS = 8
#: Datagrams that may wait for one session whose CONNECT awaits its answer.
MAX_BUFFERED_DATAGRAMS = 8
#: How long such a stream waits before it is rejected.
BUFFER_TIMEOUT = 2.0


class Unsorted(enum.Enum):
    """A stream whose first bytes do not say yet what it is."""

    UNSORTED = enum.auto()


UNSORTED = Unsorted.UNSORTED

PeerStream = QuicStream | QuicReceiveStream


class SessionRouter:
    """Hands an HTTP/3 connection's WebTransport streams and datagrams to their sessions."""

    def __init__(self, conn: QuicConnection, h3: H3Session, *, buffer_timeout: float = BUFFER_TIMEOUT) -> None:
        self.conn = conn
        self.h3 = h3
        self.registry = SessionRegistry(
            max_buffered_streams=MAX_BUFFERED_STREAMS,
            max_buffered_datagrams=MAX_BUFFERED_DATAGRAMS,
            buffer_timeout=buffer_timeout,
        )
        #: The established sessions, by session id.
        self.sessions: dict[int, WebTransportSession] = {}
        self._held: dict[int, tuple[PeerStream, bytes]] = {}
        self._held_changed = anyio.Event()
        h3.on_unknown_stream = self.take_uni_stream

    @property
    def datagrams_dropped(self) -> int:
        """Datagrams for no established session (dropped)."""
        return self.registry.dropped_datagrams

    # --- sessions come and go -----------------------------------------------------------

    def expect(self, session_id: int) -> None:
        """A CONNECT for ``session_id`` is on its way: hold its datagrams (and streams)."""
        self.registry.expect(session_id)

    def establish(self, session: WebTransportSession) -> None:
        """The session is accepted: hand it what waited for it."""
        self.sessions[session.session_id] = session
        released = self.registry.establish(session._core)
        for stream_id in released.stream_ids:
            held = self._held.pop(stream_id, None)
            if held is not None:
                self._hand(session, *held)
        for payload in released.datagrams:
            session._deliver_datagram(payload)

    def forget(self, session_id: int) -> None:
        """The session ended or was refused: streams still held for it are rejected."""
        self.sessions.pop(session_id, None)
        for stream_id in self.registry.forget(session_id):
            held = self._held.pop(stream_id, None)
            if held is not None:
                _refuse(held[0], WTErrorCode.SESSION_GONE)

    def close_all(self, error: ConnectionClosed | None = None) -> None:
        """The connection is going: every session ends."""
        for session in list(self.sessions.values()):
            session._set_closed(SessionClosed(
                f"session {session.session_id}: its connection closed",
                error_code=error.error_code if error else 0,
                reason=error.reason if error else "",
                by_peer=error.by_peer if error else False,
            ))

    # --- the peer's streams -------------------------------------------------------------

    def sort_bidi_stream(self, stream: QuicStream) -> tuple[bool, bytes | None, StreamHeaderReader]:
        """Sort a peer bidi stream by the bytes already received, without waiting:
        ``(True, what take_bidi_stream would return, _)``, or ``(False, None,
        reader)`` if its first bytes are not all in yet (go on with
        ``take_bidi_stream(stream, reader)``). Most streams arrive with their
        first bytes, so most need no task of their own to be sorted."""
        reader = StreamHeaderReader(unidirectional=False)
        while True:
            try:
                data, fin = stream.receive_nowait(), False
            except anyio.WouldBlock:
                return False, None, reader
            except anyio.EndOfStream:
                data, fin = b"", True
            sorted_ = self._sort(stream, reader, data, fin)
            if not isinstance(sorted_, Unsorted):
                return True, sorted_, reader

    async def take_bidi_stream(self, stream: QuicStream, reader: StreamHeaderReader | None = None) -> bytes | None:
        """Read a peer bidi stream's first bytes: ``None`` if it was WebTransport's
        (handed to its session, held, or refused), else the bytes read (an HTTP/3 request).
        ``reader`` goes on from :meth:`sort_bidi_stream`."""
        if reader is None:
            reader = StreamHeaderReader(unidirectional=False)
        while True:
            try:
                data, fin = await stream.receive(), False
            except anyio.EndOfStream:
                data, fin = b"", True
            sorted_ = self._sort(stream, reader, data, fin)
            if not isinstance(sorted_, Unsorted):
                return sorted_

    def _sort(self, stream: QuicStream, reader: StreamHeaderReader, data: bytes, fin: bool) -> bytes | None | Unsorted:
        try:
            header = reader.feed(data, fin)
        except StreamHeaderError as exc:
            self._refuse_stream(stream, exc)
            return None
        if header is None:
            return UNSORTED
        if isinstance(header, OtherStream):
            return header.data
        self._route(stream, header.session_id, header.data)
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
        if session_id % 4:
            self.h3.fail(ProtocolError(ErrorCode.H3_ID_ERROR, f"session id {session_id} is not a client bidirectional stream"))
            return True
        self._route(stream, session_id, buffer[start:])
        return True

    def _route(self, stream: PeerStream, session_id: int, prefix: bytes) -> None:
        route = self.registry.route_stream(stream.stream_id, session_id, self.conn._ll.current_time())
        if isinstance(route, Deliver):
            self._hand(self.sessions[route.session.session_id], stream, prefix)
        elif isinstance(route, Buffered):
            logger.debug("stream %d waits for session %d", stream.stream_id, session_id)
            self._held[stream.stream_id] = (stream, prefix)
            self._held_changed.set()
        else:
            logger.debug("stream %d for session %d refused: %s", stream.stream_id, session_id, route.reason)
            _refuse(stream, route.error_code)

    @staticmethod
    def _hand(session: WebTransportSession, stream: PeerStream, prefix: bytes) -> None:
        code = session._deliver_stream(stream, prefix)
        if code is not None:
            _refuse(stream, code)

    async def expire_held(self) -> None:
        """Reject held streams that waited too long (WT_BUFFERED_STREAM_REJECTED), until cancelled."""
        while True:
            deadline = self.registry.next_expiry()
            self._held_changed = anyio.Event()
            delay = math.inf if deadline is None else max(0.0, deadline - self.conn._ll.current_time())
            with anyio.move_on_after(delay):
                await self._held_changed.wait()
            for stream_id in self.registry.expire(self.conn._ll.current_time()):
                held = self._held.pop(stream_id, None)
                if held is not None:
                    logger.debug("stream %d waited too long for its session", stream_id)
                    _refuse(held[0], WTErrorCode.BUFFERED_STREAM_REJECTED)

    def _refuse_stream(self, stream: QuicStream, exc: StreamHeaderError) -> None:
        if exc.connection_error:
            self.h3.fail(ProtocolError(exc.error_code, exc.reason))
        else:
            _refuse(stream, exc.error_code)

    # --- datagrams ------------------------------------------------------------------

    async def read_datagrams(self) -> None:
        """Route the connection's datagrams to their sessions, until it closes."""
        try:
            while True:
                datagram = await self.conn.receive_datagram()
                try:
                    session_id, payload = H3Protocol.decode_datagram(datagram)
                except ProtocolError as exc:
                    raise self.h3.fail(exc) from None
                core = self.registry.route_datagram(session_id, payload, self.conn._ll.current_time())
                if core is not None:
                    self.sessions[core.session_id]._deliver_datagram(payload)
                elif self.registry.next_expiry() is not None:
                    self._held_changed.set()  # held datagrams expire too
        except (ConnectionClosed, anyio.ClosedResourceError):
            pass


def _refuse(stream: PeerStream, error_code: int) -> None:
    """Reset (and stop reading) a peer's stream we do not take."""
    try:
        stream.stop_sending(error_code)
        if isinstance(stream, QuicStream):
            stream.reset(error_code)
    except (ConnectionClosed, anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
