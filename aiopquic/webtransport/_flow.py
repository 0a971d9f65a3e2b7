"""Session-level flow control (draft-13+ section 5): streams and bytes per session.

One :class:`SessionFlowControl` per session, both directions, as a plain
state machine the driver calls:

- before opening a stream or sending stream body bytes: :meth:`can_open_stream`
  / :meth:`send_credit`, then :meth:`on_stream_opened` / :meth:`on_data_sent`;
  when blocked, :meth:`streams_blocked` / :meth:`data_blocked` give the
  capsule to send (once per limit);
- for the peer's streams and bytes: :meth:`on_peer_stream` and
  :meth:`on_data_received` raise :class:`FlowControlError` when the peer goes
  over what we granted; :meth:`on_data_consumed` and :meth:`on_peer_stream_closed`
  return the WT_MAX_DATA / WT_MAX_STREAMS capsule to send when the
  application has used enough (the window is kept open, QUIC style);
- :meth:`on_capsule` for the flow-control capsules that arrive.

Only stream *body* bytes count: the stream header (0x41/0x54 + session id)
and the CONNECT stream's capsules do not. When flow control is not enabled
(draft-02, or a side that did not declare it) every check passes and every
capsule is ignored, as the drafts require.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._capsules import Capsule, DataBlocked, MaxData, MaxStreams, StreamsBlocked
from ._codes import WTErrorCode, WTSetting
from ._dialects import Dialect, SessionLimits, flow_control_enabled

#: Stream counts beyond this cannot be encoded as stream ids (draft-13+ section 5.6.1).
MAX_STREAMS_LIMIT = 1 << 60


class FlowControlError(Exception):
    """The peer broke session flow control: close the session with ``error_code``."""

    error_code = WTErrorCode.FLOW_CONTROL_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _direction(bidirectional: bool) -> str:
    return "bidirectional" if bidirectional else "unidirectional"


class SessionFlowControl:
    """Flow control of one session, both directions.

    ``ours`` are the limits we announced (the peer's initial credit and the
    windows we keep open); ``theirs`` is the peer's SETTINGS (our initial
    credit: 0 means nothing until a capsule grants it). ``strict`` (draft-15+)
    also treats a WT_MAX_* capsule that repeats the current limit as an error;
    draft-14 only forbids lowering it.
    """

    __slots__ = (
        "_blocked_data_at",
        "_blocked_streams_at",
        "_consumed",
        "_data_window",
        "_peer_closed",
        "_peer_opened",
        "_received",
        "_recv_max_data",
        "_recv_max_streams",
        "_stream_window",
        "enabled",
        "send_max_data",
        "send_max_streams",
        "sent",
        "opened",
        "strict",
    )

    def __init__(self, *, enabled: bool, ours: SessionLimits, theirs: Mapping[int, int], strict: bool = True) -> None:
        self.enabled = enabled
        self.strict = strict
        # what we may send / open (granted by the peer)
        self.send_max_data = theirs.get(WTSetting.WT_INITIAL_MAX_DATA, 0)
        self.send_max_streams = {
            True: theirs.get(WTSetting.WT_INITIAL_MAX_STREAMS_BIDI, 0),
            False: theirs.get(WTSetting.WT_INITIAL_MAX_STREAMS_UNI, 0),
        }
        self.sent = 0
        self.opened = {True: 0, False: 0}
        self._blocked_data_at: int | None = None
        self._blocked_streams_at: dict[bool, int | None] = {True: None, False: None}
        # what the peer may send / open (granted by us)
        self._data_window = ours.initial_max_data
        self._recv_max_data = ours.initial_max_data
        self._received = 0
        self._consumed = 0
        self._stream_window = {True: ours.initial_max_streams_bidi, False: ours.initial_max_streams_uni}
        self._recv_max_streams = dict(self._stream_window)
        self._peer_opened = {True: 0, False: 0}
        self._peer_closed = {True: 0, False: 0}

    @classmethod
    def negotiate(cls, dialect: Dialect, ours: SessionLimits, theirs: Mapping[int, int]) -> SessionFlowControl:
        """The flow control of a new session in ``dialect``, given our limits and the peer's SETTINGS."""
        enabled = flow_control_enabled(dialect, ours.to_settings(), theirs)
        return cls(enabled=enabled, ours=ours, theirs=theirs, strict=dialect >= Dialect.DRAFT15)

    # --- our side: what we may send ------------------------------------------------

    def send_credit(self) -> int | None:
        """How many more body bytes we may send in the session (None: no limit)."""
        return self.send_max_data - self.sent if self.enabled else None

    def on_data_sent(self, n: int) -> None:
        """We sent ``n`` body bytes (at most :meth:`send_credit`)."""
        if self.enabled and n > self.send_max_data - self.sent:
            raise ValueError(f"sending {n} bytes exceeds the session's credit of {self.send_max_data - self.sent}")
        self.sent += n

    def data_blocked(self) -> DataBlocked | None:
        """The WT_DATA_BLOCKED to send when we have data and no credit (once per limit)."""
        if not self.enabled or self.sent < self.send_max_data or self._blocked_data_at == self.send_max_data:
            return None
        self._blocked_data_at = self.send_max_data
        return DataBlocked(self.send_max_data)

    def can_open_stream(self, bidirectional: bool) -> bool:
        """True if the peer lets us open another stream of this direction now."""
        return not self.enabled or self.opened[bidirectional] < self.send_max_streams[bidirectional]

    def on_stream_opened(self, bidirectional: bool) -> None:
        """We opened a stream (only when :meth:`can_open_stream` said so)."""
        if not self.can_open_stream(bidirectional):
            raise ValueError(f"the peer allows no more {_direction(bidirectional)} streams in this session")
        self.opened[bidirectional] += 1

    def streams_blocked(self, bidirectional: bool) -> StreamsBlocked | None:
        """The WT_STREAMS_BLOCKED to send when we want a stream and may not (once per limit)."""
        limit = self.send_max_streams[bidirectional]
        if self.can_open_stream(bidirectional) or self._blocked_streams_at[bidirectional] == limit:
            return None
        self._blocked_streams_at[bidirectional] = limit
        return StreamsBlocked(bidirectional, limit)

    # --- the peer's side: what it may send ---------------------------------------------

    def on_peer_stream(self, bidirectional: bool) -> None:
        """The peer opened a stream in this session (:class:`FlowControlError` beyond its limit)."""
        self._peer_opened[bidirectional] += 1
        if self.enabled and self._peer_opened[bidirectional] > self._recv_max_streams[bidirectional]:
            raise FlowControlError(
                f"the peer opened {_direction(bidirectional)} stream number {self._peer_opened[bidirectional]}"
                f" in a session that allows {self._recv_max_streams[bidirectional]}"
            )

    def on_peer_stream_closed(self, bidirectional: bool) -> MaxStreams | None:
        """A peer's stream is done with; the WT_MAX_STREAMS to send, if one is due."""
        self._peer_closed[bidirectional] += 1
        if not self.enabled:
            return None
        window = self._stream_window[bidirectional]
        target = self._peer_closed[bidirectional] + window
        current = self._recv_max_streams[bidirectional]
        exhausted = self._peer_opened[bidirectional] >= current
        if target > current and (exhausted or target - current >= max(1, window // 2)):
            self._recv_max_streams[bidirectional] = target
            return MaxStreams(bidirectional, target)
        return None

    def on_data_received(self, n: int) -> None:
        """``n`` new body bytes arrived (:class:`FlowControlError` beyond what we granted)."""
        self._received += n
        if self.enabled and self._received > self._recv_max_data:
            raise FlowControlError(f"the peer sent {self._received} bytes in a session that allows {self._recv_max_data}")

    def on_data_consumed(self, n: int) -> MaxData | None:
        """The application read ``n`` body bytes; the WT_MAX_DATA to send, if one is due.

        Credit is granted again once half the window is used, so a reader
        that keeps up never stalls the sender.
        """
        self._consumed += n
        if not self.enabled:
            return None
        target = self._consumed + self._data_window
        if target - self._recv_max_data >= max(1, self._data_window // 2):
            self._recv_max_data = target
            return MaxData(target)
        return None

    def on_stream_final_size(self, body_received: int, final_size: int) -> MaxData | None:
        """A peer's stream was reset: the bytes up to its final size count as sent and used.

        ``body_received`` and ``final_size`` exclude the stream header.
        """
        unseen = final_size - body_received
        if unseen < 0:
            raise ValueError(f"final size {final_size} is below the {body_received} bytes already received")
        self.on_data_received(unseen)
        return self.on_data_consumed(unseen)

    # --- capsules from the peer ----------------------------------------------------------

    def on_capsule(self, capsule: Capsule) -> None:
        """Apply a flow-control capsule from the peer (others are not for us and pass).

        Raises :class:`FlowControlError` for a limit that goes down (or, when
        ``strict``, stays the same) or a stream count beyond 2**60.
        """
        if not self.enabled:
            return
        if isinstance(capsule, MaxData):
            self.send_max_data = self._raised("WT_MAX_DATA", self.send_max_data, capsule.maximum)
        elif isinstance(capsule, MaxStreams):
            self._check_stream_count("WT_MAX_STREAMS", capsule.maximum)
            name = f"WT_MAX_STREAMS ({_direction(capsule.bidirectional)})"
            current = self.send_max_streams[capsule.bidirectional]
            self.send_max_streams[capsule.bidirectional] = self._raised(name, current, capsule.maximum)
        elif isinstance(capsule, StreamsBlocked):
            self._check_stream_count("WT_STREAMS_BLOCKED", capsule.maximum)

    def _raised(self, name: str, current: int, new: int) -> int:
        if new < current or (self.strict and new == current):
            raise FlowControlError(f"{name} {new} does not raise the current limit {current}")
        return new

    @staticmethod
    def _check_stream_count(name: str, maximum: int) -> None:
        if maximum > MAX_STREAMS_LIMIT:
            raise FlowControlError(f"{name} {maximum} is over 2**60")
