"""A session's CONNECT stream and a connection's routing of streams and datagrams, sans I/O."""

from __future__ import annotations

from aiopquic.h3._frames import ErrorCode, encode_varint
from aiopquic.webtransport._capsules import (
    CloseSession,
    DataBlocked,
    DrainSession,
    MaxData,
    MaxStreams,
    encode_capsule,
)
from aiopquic.webtransport._codes import CapsuleType, WTErrorCode
from aiopquic.webtransport._dialects import Dialect, SessionLimits
from aiopquic.webtransport._flow import SessionFlowControl
from aiopquic.webtransport._session_state import (
    Buffered,
    Deliver,
    DrainRequested,
    Reject,
    Released,
    SendCreditGranted,
    SessionCloseRequested,
    SessionCore,
    SessionFailed,
    SessionPhase,
    SessionRegistry,
)


def session(session_id: int = 0, dialect: Dialect = Dialect.DRAFT15, *, flow_control: bool = True) -> SessionCore:
    flow = SessionFlowControl(enabled=flow_control, ours=SessionLimits(), theirs={0x2B61: 100, 0x2B65: 1})
    return SessionCore(session_id, dialect, flow)


# --- the CONNECT stream -------------------------------------------------------------------


def test_close_capsule_then_fin_ends_the_session_with_code_and_reason() -> None:
    core = session()
    wire = CloseSession(42, "done ✓").encode()
    assert core.receive_capsule_data(wire[:3]) == []
    assert core.receive_capsule_data(wire[3:]) == [SessionCloseRequested(42, "done ✓")]
    assert core.phase is SessionPhase.OPEN  # until the stream ends
    assert core.close(0, "ignored") == b""  # the peer closed first: we only end the stream
    assert core.phase is SessionPhase.CLOSED
    assert core.receive_capsule_data(b"", fin=True) == []


def test_a_clean_fin_without_a_capsule_is_a_close_with_zero() -> None:
    core = session()
    assert core.receive_capsule_data(b"", fin=True) == [SessionCloseRequested(0, "")]
    assert core.phase is SessionPhase.CLOSED
    assert core.close(1, "late") == b""
    assert core.receive_capsule_data(DrainSession().encode()) == []


def test_anything_after_close_is_a_message_error() -> None:
    core = session()
    events = core.receive_capsule_data(CloseSession(1).encode() + DrainSession().encode())
    assert events[0] == SessionCloseRequested(1, "")
    assert events[1] == SessionFailed(ErrorCode.H3_MESSAGE_ERROR, "a capsule after CLOSE_WEBTRANSPORT_SESSION")
    later = session()
    later.receive_capsule_data(CloseSession(1).encode())
    (failed,) = later.receive_capsule_data(b"\x00")
    assert isinstance(failed, SessionFailed) and failed.error_code == ErrorCode.H3_MESSAGE_ERROR


def test_drain_unknown_and_flow_control_capsules() -> None:
    core = session()
    grease = encode_capsule(0x29, b"whatever")
    events = core.receive_capsule_data(DrainSession().encode() + grease + MaxData(500).encode() + DataBlocked(9).encode())
    assert events == [DrainRequested(), SendCreditGranted()]
    assert core.flow.send_credit() == 500
    assert core.receive_capsule_data(MaxStreams(True, 5).encode()) == [SendCreditGranted()]
    assert core.flow.can_open_stream(True)


def test_flow_control_capsules_are_ignored_when_flow_control_is_off() -> None:
    core = session(flow_control=False)
    assert core.receive_capsule_data(MaxData(1).encode() + MaxStreams(False, 0).encode()) == []
    assert core.flow.send_credit() is None


def test_a_flow_control_violation_fails_the_session() -> None:
    core = session()
    (failed,) = core.receive_capsule_data(MaxData(50).encode())  # lower than the initial 100
    assert failed == SessionFailed(WTErrorCode.FLOW_CONTROL_ERROR, "WT_MAX_DATA 50 does not raise the current limit 100")
    assert core.phase is SessionPhase.CLOSED


def test_malformed_oversized_and_http2_only_capsules_fail_the_session() -> None:
    (failed,) = session().receive_capsule_data(encode_capsule(CapsuleType.MAX_DATA, b""))
    assert isinstance(failed, SessionFailed) and failed.error_code == ErrorCode.H3_DATAGRAM_ERROR
    (failed,) = session().receive_capsule_data(encode_varint(CapsuleType.CLOSE_SESSION) + encode_varint(1 << 20))
    assert isinstance(failed, SessionFailed) and "announces" in failed.reason
    (failed,) = session().receive_capsule_data(encode_capsule(CapsuleType.MAX_STREAM_DATA, b"\x00\x01"))
    assert isinstance(failed, SessionFailed) and "not allowed here" in failed.reason
    # draft-02 knows nothing of those capsules: unknown, ignored
    assert session(dialect=Dialect.DRAFT02).receive_capsule_data(encode_capsule(CapsuleType.MAX_STREAM_DATA, b"\x00\x01")) == []
    (failed,) = session().receive_capsule_data(MaxData(200).encode()[:-1], fin=True)
    assert isinstance(failed, SessionFailed) and "ended inside a capsule" in failed.reason


def test_our_close_and_drain() -> None:
    core = session()
    assert core.drain() == DrainSession().encode()
    assert core.close(7, "bye") == CloseSession(7, "bye").encode()
    assert core.phase is SessionPhase.CLOSING
    assert core.drain() == b"" and core.close() == b""
    # the peer answers with its own close and FIN: no event, the session is over
    assert core.receive_capsule_data(CloseSession(0).encode(), fin=True) == []
    assert core.phase is SessionPhase.CLOSED


def test_a_reset_connect_stream_closes_the_session() -> None:
    core = session()
    assert core.connect_stream_reset() == [SessionCloseRequested(0, "")]
    assert core.connect_stream_reset() == []
    closing = session()
    closing.close(3)
    assert closing.connect_stream_reset() == []


# --- routing -------------------------------------------------------------------------------


def test_streams_for_an_established_session_are_delivered() -> None:
    registry = SessionRegistry()
    core = session(4)
    assert registry.establish(core) == Released([], [])
    assert registry.route_stream(8, 4, now=0.0) == Deliver(core)
    assert registry.route_datagram(4, b"d", now=0.0) is core


def test_streams_that_arrive_before_their_session_wait_for_it() -> None:
    registry = SessionRegistry()
    assert registry.route_stream(1, 0, now=0.0) == Buffered()  # before the CONNECT itself
    registry.expect(0)
    assert registry.route_stream(5, 0, now=0.1) == Buffered()
    assert registry.route_stream(9, 4, now=0.2) == Buffered()  # another session
    assert registry.route_datagram(0, b"early", now=0.2) is None  # held: the CONNECT is known
    assert registry.route_datagram(4, b"lost", now=0.2) is None  # dropped: no CONNECT for 4
    assert registry.dropped_datagrams == 1
    assert registry.establish(session(0)) == Released([1, 5], [b"early"])
    assert registry.next_expiry() == 0.2 + registry.buffer_timeout


def test_too_many_waiting_streams_are_rejected_with_buffered_stream_rejected() -> None:
    registry = SessionRegistry(max_buffered_streams=2)
    assert registry.route_stream(1, 0, now=0) == Buffered()
    assert registry.route_stream(5, 0, now=0) == Buffered()
    route = registry.route_stream(9, 0, now=0)
    assert isinstance(route, Reject) and route.error_code == WTErrorCode.BUFFERED_STREAM_REJECTED == 0x3994BD84
    registry.stream_gone(1)  # the peer reset one: room for another
    assert registry.route_stream(13, 0, now=0) == Buffered()


def test_waiting_streams_and_datagrams_expire() -> None:
    registry = SessionRegistry(buffer_timeout=1.0)
    registry.expect(0)
    registry.route_stream(1, 0, now=10.0)
    registry.route_datagram(0, b"x", now=10.0)
    registry.route_stream(5, 0, now=10.5)
    assert registry.next_expiry() == 11.0
    assert registry.expire(now=10.9) == []
    assert registry.expire(now=11.0) == [1]
    assert registry.dropped_datagrams == 1
    assert registry.expire(now=11.5) == [5]
    assert registry.next_expiry() is None


def test_a_closed_or_refused_session_rejects_its_streams_as_gone() -> None:
    registry = SessionRegistry()
    registry.expect(0)
    registry.route_stream(1, 0, now=0)
    registry.route_datagram(0, b"x", now=0)
    assert registry.forget(0) == [1]  # the CONNECT was refused: reject what waited
    assert registry.dropped_datagrams == 1
    route = registry.route_stream(5, 0, now=0)
    assert isinstance(route, Reject) and route.error_code == WTErrorCode.SESSION_GONE
    assert registry.route_datagram(0, b"y", now=0) is None
    assert registry.dropped_datagrams == 2
    registry.establish(session(4))
    assert registry.forget(4) == []
    assert 4 not in registry.sessions
