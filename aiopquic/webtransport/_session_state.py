"""Per-session and per-connection WebTransport state, sans I/O.

- :class:`SessionCore` is one established session: it reads the capsules
  arriving on its CONNECT stream and turns them into events, keeps its flow
  control, and builds the capsules that close or drain it.
- :class:`SessionRegistry` is one connection's sessions: it routes the
  peer's streams and datagrams to them by session id, buffers a few streams
  (and datagrams) that arrive before their session is established, and says
  which streams to reset and why.

The driver owns the streams and the clock: it passes ``now`` (any monotonic
time, e.g. ``anyio.current_time()``) and acts on what comes back.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from ..h3._frames import ErrorCode
from ._capsules import (
    Capsule,
    CapsuleError,
    CapsuleReader,
    CloseSession,
    DataBlocked,
    DrainSession,
    MaxData,
    MaxStreams,
    StreamsBlocked,
    UnknownCapsule,
)
from ._codes import PROHIBITED_CAPSULES, WTErrorCode
from ._dialects import Dialect
from ._flow import FlowControlError, SessionFlowControl

# --- events a session's CONNECT stream produces ------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionCloseRequested:
    """The peer closed the session: with CLOSE_WEBTRANSPORT_SESSION, or by ending the stream (0, "")."""

    error_code: int
    reason: str


@dataclass(frozen=True, slots=True)
class DrainRequested:
    """The peer asks the application to wind the session down (it stays usable)."""


@dataclass(frozen=True, slots=True)
class SendCreditGranted:
    """A WT_MAX_DATA or WT_MAX_STREAMS raised what we may send: wake blocked senders."""


@dataclass(frozen=True, slots=True)
class SessionFailed:
    """The peer broke the protocol in this session: reset its CONNECT stream with ``error_code``.

    The session ends; the connection and other sessions go on.
    """

    error_code: int
    reason: str


SessionEvent = SessionCloseRequested | DrainRequested | SendCreditGranted | SessionFailed


class SessionPhase(Enum):
    """Where a session is in its life."""

    OPEN = "open"
    #: We sent CLOSE_WEBTRANSPORT_SESSION (and FIN); the peer's end is awaited.
    CLOSING = "closing"
    #: Over: by the peer's close or FIN, by a protocol error, or after ours was answered.
    CLOSED = "closed"


class SessionCore:
    """One established session's protocol state.

    ``receive_capsule_data`` takes the payload of the DATA frames on the
    CONNECT stream (``fin`` when the stream ended) and returns events.
    ``close`` and ``drain`` return the capsule bytes to write as DATA (after
    ``close``, the driver ends the CONNECT stream).
    """

    __slots__ = ("_close_received", "_reader", "dialect", "flow", "phase", "session_id")

    def __init__(self, session_id: int, dialect: Dialect, flow: SessionFlowControl, *, max_capsule_size: int = 16 * 1024) -> None:
        self.session_id = session_id
        self.dialect = dialect
        self.flow = flow
        self.phase = SessionPhase.OPEN
        self._reader = CapsuleReader(max_capsule_size)
        self._close_received = False

    def receive_capsule_data(self, data: bytes, fin: bool = False) -> list[SessionEvent]:
        """Capsule bytes from the CONNECT stream; events for the driver."""
        if self.phase is SessionPhase.CLOSED:
            return []
        events: list[SessionEvent] = []
        if self._close_received and data:
            return self._fail(events, ErrorCode.H3_MESSAGE_ERROR, "data on the CONNECT stream after CLOSE_WEBTRANSPORT_SESSION")
        self._reader.append(data)
        try:
            for capsule in self._reader.capsules():
                if self._close_received:
                    return self._fail(events, ErrorCode.H3_MESSAGE_ERROR, "a capsule after CLOSE_WEBTRANSPORT_SESSION")
                self._on_capsule(capsule, events)
            if fin:
                self._reader.end()
        except CapsuleError as exc:
            return self._fail(events, exc.error_code, exc.reason)
        except FlowControlError as exc:
            return self._fail(events, exc.error_code, exc.reason)
        if fin:
            if not self._close_received and self.phase is SessionPhase.OPEN:
                events.append(SessionCloseRequested(0, ""))  # a clean end is a close with 0 and no reason
            self.phase = SessionPhase.CLOSED
        return events

    def _on_capsule(self, capsule: Capsule, events: list[SessionEvent]) -> None:
        if isinstance(capsule, CloseSession):
            self._close_received = True
            if self.phase is SessionPhase.OPEN:
                events.append(SessionCloseRequested(capsule.error_code, capsule.reason))
        elif isinstance(capsule, DrainSession):
            events.append(DrainRequested())
        elif isinstance(capsule, (MaxData, MaxStreams)):
            if self.flow.enabled:
                self.flow.on_capsule(capsule)
                events.append(SendCreditGranted())
        elif isinstance(capsule, (DataBlocked, StreamsBlocked)):
            self.flow.on_capsule(capsule)  # only checked: our grants never wait for these
        elif isinstance(capsule, UnknownCapsule) and capsule.type in PROHIBITED_CAPSULES and self.dialect.has_flow_control:
            raise CapsuleError(f"capsule 0x{capsule.type:x} belongs to WebTransport over HTTP/2 and is not allowed here")

    def _fail(self, events: list[SessionEvent], code: int, reason: str) -> list[SessionEvent]:
        self.phase = SessionPhase.CLOSED
        events.append(SessionFailed(code, reason))
        return events

    def close(self, error_code: int = 0, reason: str = "") -> bytes:
        """The CLOSE_WEBTRANSPORT_SESSION to send, then end the CONNECT stream.

        b"" when the session is already over or the peer closed it first
        (then ending the stream is the whole answer).
        """
        if self.phase is not SessionPhase.OPEN:
            return b""
        if self._close_received:
            self.phase = SessionPhase.CLOSED
            return b""
        self.phase = SessionPhase.CLOSING
        return CloseSession(error_code, reason).encode()

    def drain(self) -> bytes:
        """The DRAIN_WEBTRANSPORT_SESSION to send (b"" once the session is closing)."""
        return DrainSession().encode() if self.phase is SessionPhase.OPEN else b""

    def connect_stream_reset(self) -> list[SessionEvent]:
        """The peer reset the CONNECT stream: the session is over (error 0 unless a close said more)."""
        if self.phase is SessionPhase.CLOSED:
            return []
        was_open = self.phase is SessionPhase.OPEN and not self._close_received
        self.phase = SessionPhase.CLOSED
        return [SessionCloseRequested(0, "")] if was_open else []


# --- the connection's sessions: routing streams and datagrams -------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand the stream to this established session."""

    session: SessionCore


@dataclass(frozen=True, slots=True)
class Buffered:
    """Hold the stream: its session may still be established (see :meth:`SessionRegistry.expire`)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Reset the stream (and stop sending) with ``error_code``."""

    error_code: int
    reason: str


StreamRoute = Deliver | Buffered | Reject


@dataclass(frozen=True, slots=True)
class _Pending:
    stream_id: int
    session_id: int
    since: float


@dataclass(frozen=True, slots=True)
class Released:
    """What was waiting for a session that is now established: streams and datagrams, in arrival order."""

    stream_ids: list[int]
    datagrams: list[bytes]


class SessionRegistry:
    """One connection's sessions, and the streams and datagrams waiting for theirs.

    At most ``max_buffered_streams`` streams wait for an unknown session, each
    for at most ``buffer_timeout`` seconds; beyond either they are rejected
    with WT_BUFFERED_STREAM_REJECTED. Datagrams wait only for a session whose
    CONNECT is known and not yet answered (at most ``max_buffered_datagrams``);
    any other datagram for a session that is not established is dropped and
    counted in ``dropped_datagrams``.
    """

    def __init__(self, *, max_buffered_streams: int = 16, max_buffered_datagrams: int = 16, buffer_timeout: float = 2.0) -> None:
        self.max_buffered_streams = max_buffered_streams
        self.max_buffered_datagrams = max_buffered_datagrams
        self.buffer_timeout = buffer_timeout
        self.sessions: dict[int, SessionCore] = {}
        self.dropped_datagrams = 0
        self._expected: set[int] = set()
        self._closed: set[int] = set()
        self._streams: deque[_Pending] = deque()
        self._datagrams: dict[int, deque[tuple[float, bytes]]] = {}

    def expect(self, session_id: int) -> None:
        """A CONNECT for ``session_id`` was sent (client) or received and awaits a decision (server)."""
        self._expected.add(session_id)

    def establish(self, session: SessionCore) -> Released:
        """The session is established (2xx sent or received): what was waiting for it."""
        session_id = session.session_id
        self._expected.discard(session_id)
        self.sessions[session_id] = session
        streams = [p.stream_id for p in self._streams if p.session_id == session_id]
        self._streams = deque(p for p in self._streams if p.session_id != session_id)
        datagrams = [payload for _, payload in self._datagrams.pop(session_id, ())]
        return Released(streams, datagrams)

    def forget(self, session_id: int) -> list[int]:
        """The session ended or was refused: it becomes "gone"; the streams held for it, to reject."""
        self._expected.discard(session_id)
        self.sessions.pop(session_id, None)
        self._closed.add(session_id)
        self.dropped_datagrams += len(self._datagrams.pop(session_id, ()))
        held = [p.stream_id for p in self._streams if p.session_id == session_id]
        self._streams = deque(p for p in self._streams if p.session_id != session_id)
        return held

    def route_stream(self, stream_id: int, session_id: int, now: float) -> StreamRoute:
        """Where a peer's stream for ``session_id`` goes (its header was read)."""
        session = self.sessions.get(session_id)
        if session is not None:
            return Deliver(session)
        if session_id in self._closed:
            return Reject(WTErrorCode.SESSION_GONE, f"session {session_id} is closed")
        if len(self._streams) >= self.max_buffered_streams:
            return Reject(
                WTErrorCode.BUFFERED_STREAM_REJECTED,
                f"{self.max_buffered_streams} streams already wait for sessions that are not established",
            )
        self._streams.append(_Pending(stream_id, session_id, now))
        return Buffered()

    def stream_gone(self, stream_id: int) -> None:
        """A held stream was reset or ended before its session came: stop holding it."""
        self._streams = deque(p for p in self._streams if p.stream_id != stream_id)

    def route_datagram(self, session_id: int, payload: bytes, now: float) -> SessionCore | None:
        """The session a datagram is for, or None (held for an expected session, or dropped and counted)."""
        session = self.sessions.get(session_id)
        if session is not None:
            return session
        queue = self._datagrams.setdefault(session_id, deque()) if session_id in self._expected else None
        if queue is None or len(queue) >= self.max_buffered_datagrams:
            self.dropped_datagrams += 1
        else:
            queue.append((now, payload))
        return None

    def expire(self, now: float) -> list[int]:
        """Held streams that waited too long (reject them with WT_BUFFERED_STREAM_REJECTED); stale datagrams are dropped."""
        deadline = now - self.buffer_timeout
        expired = [p.stream_id for p in self._streams if p.since <= deadline]
        self._streams = deque(p for p in self._streams if p.since > deadline)
        for session_id, queue in list(self._datagrams.items()):
            while queue and queue[0][0] <= deadline:
                queue.popleft()
                self.dropped_datagrams += 1
            if not queue:
                del self._datagrams[session_id]
        return expired

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing is held)."""
        times = [p.since for p in self._streams] + [q[0][0] for q in self._datagrams.values() if q]
        return min(times) + self.buffer_timeout if times else None
