"""Session flow control (draft-13+) as a plain state machine."""

from __future__ import annotations

import pytest

from aiopquic.webtransport._capsules import CloseSession, DataBlocked, MaxData, MaxStreams, StreamsBlocked
from aiopquic.webtransport._codes import WTErrorCode
from aiopquic.webtransport._dialects import Dialect, SessionLimits
from aiopquic.webtransport._flow import FlowControlError, SessionFlowControl

OURS = SessionLimits(initial_max_data=1000, initial_max_streams_bidi=2, initial_max_streams_uni=4)


def flow(theirs: dict[int, int] | None = None, *, enabled: bool = True, strict: bool = True) -> SessionFlowControl:
    return SessionFlowControl(enabled=enabled, ours=OURS, theirs=theirs or {}, strict=strict)


def test_initial_limits_of_zero_allow_nothing_until_a_capsule_grants_it() -> None:
    fc = flow({})
    assert fc.send_credit() == 0
    assert not fc.can_open_stream(True) and not fc.can_open_stream(False)
    assert fc.data_blocked() == DataBlocked(0)
    assert fc.data_blocked() is None  # once per limit
    assert fc.streams_blocked(True) == StreamsBlocked(True, 0)
    assert fc.streams_blocked(True) is None
    with pytest.raises(ValueError, match="allows no more bidirectional streams"):
        fc.on_stream_opened(True)
    fc.on_capsule(MaxData(10))
    fc.on_capsule(MaxStreams(True, 1))
    assert fc.send_credit() == 10
    fc.on_stream_opened(True)
    assert not fc.can_open_stream(True)
    assert fc.streams_blocked(True) == StreamsBlocked(True, 1)  # a new limit: blocked again, reported again
    fc.on_data_sent(10)
    assert fc.data_blocked() == DataBlocked(10)
    with pytest.raises(ValueError, match="exceeds the session's credit of 0"):
        fc.on_data_sent(1)


def test_initial_limits_come_from_the_peer_settings() -> None:
    fc = flow({0x2B61: 500, 0x2B65: 3, 0x2B64: 1})
    assert fc.send_credit() == 500
    for _ in range(3):
        fc.on_stream_opened(True)
    fc.on_stream_opened(False)
    assert not fc.can_open_stream(True) and not fc.can_open_stream(False)
    assert fc.data_blocked() is None  # not blocked: credit is left


def test_a_peer_over_its_stream_limit_is_a_flow_control_error() -> None:
    fc = flow()
    fc.on_peer_stream(True)
    fc.on_peer_stream(True)
    with pytest.raises(FlowControlError, match="bidirectional stream number 3 in a session that allows 2") as info:
        fc.on_peer_stream(True)
    assert info.value.error_code == WTErrorCode.FLOW_CONTROL_ERROR == 0x045D4487


def test_a_peer_over_its_data_limit_is_a_flow_control_error() -> None:
    fc = flow()
    fc.on_data_received(1000)
    with pytest.raises(FlowControlError, match="sent 1001 bytes in a session that allows 1000"):
        fc.on_data_received(1)


def test_credit_is_granted_again_as_the_application_reads() -> None:
    fc = flow()
    fc.on_data_received(1000)
    assert fc.on_data_consumed(499) is None
    assert fc.on_data_consumed(1) == MaxData(1500)  # half the window used: the window is open again
    fc.on_data_received(500)  # up to the new limit: fine
    with pytest.raises(FlowControlError):
        fc.on_data_received(1)


def test_a_peer_at_its_stream_limit_gets_credit_back_with_each_close() -> None:
    fc = flow()  # bidi window 2
    fc.on_peer_stream(True)
    fc.on_peer_stream(True)  # the limit is reached
    assert fc.on_peer_stream_closed(True) == MaxStreams(True, 3)
    fc.on_peer_stream(True)
    assert fc.on_peer_stream_closed(True) == MaxStreams(True, 4)
    fc.on_peer_stream(True)
    with pytest.raises(FlowControlError):
        fc.on_peer_stream(True)  # two open, two closed: the fifth is one too many


def test_stream_grants_are_batched_while_the_peer_has_credit() -> None:
    fc = flow()  # uni window 4
    fc.on_peer_stream(False)
    assert fc.on_peer_stream_closed(False) is None  # 3 of 4 left: nothing due yet
    fc.on_peer_stream(False)
    assert fc.on_peer_stream_closed(False) == MaxStreams(False, 6)  # two closed: half the window


def test_limits_may_only_go_up() -> None:
    fc = flow({0x2B61: 100, 0x2B64: 5})
    with pytest.raises(FlowControlError, match="WT_MAX_DATA 50 does not raise the current limit 100"):
        fc.on_capsule(MaxData(50))
    with pytest.raises(FlowControlError, match="WT_MAX_DATA 100 does not raise"):
        fc.on_capsule(MaxData(100))  # draft-16: a repeat is an error too
    draft14 = flow({0x2B61: 100}, strict=False)
    draft14.on_capsule(MaxData(100))  # draft-14 only forbids lowering
    with pytest.raises(FlowControlError, match="unidirectional"):
        fc.on_capsule(MaxStreams(False, 4))


def test_stream_counts_over_two_to_the_sixty_are_errors() -> None:
    fc = flow()
    with pytest.raises(FlowControlError, match="over 2\\*\\*60"):
        fc.on_capsule(MaxStreams(True, (1 << 60) + 1))
    with pytest.raises(FlowControlError, match="WT_STREAMS_BLOCKED"):
        fc.on_capsule(StreamsBlocked(False, (1 << 60) + 1))
    fc.on_capsule(MaxStreams(True, 1 << 60))
    fc.on_capsule(CloseSession(0))  # not a flow-control capsule: passes


def test_a_reset_stream_counts_up_to_its_final_size() -> None:
    fc = flow()
    fc.on_data_received(100)
    # the 500 bytes never delivered count as received and used (the 100 read are not used yet)
    assert fc.on_stream_final_size(100, 600) == MaxData(1500)
    with pytest.raises(FlowControlError):
        fc.on_stream_final_size(0, 1001)
    with pytest.raises(ValueError, match="below the 10 bytes"):
        flow().on_stream_final_size(10, 5)


def test_without_flow_control_everything_passes_and_capsules_are_ignored() -> None:
    fc = flow(enabled=False)
    assert fc.send_credit() is None
    assert fc.can_open_stream(True)
    fc.on_stream_opened(True)
    fc.on_data_sent(10**9)
    assert fc.data_blocked() is None and fc.streams_blocked(False) is None
    for _ in range(10):
        fc.on_peer_stream(True)
    fc.on_data_received(10**9)
    assert fc.on_data_consumed(10**9) is None
    assert fc.on_peer_stream_closed(True) is None
    fc.on_capsule(MaxData(0))  # would lower the limit: ignored
    assert fc.send_credit() is None


def test_negotiate_follows_the_dialect() -> None:
    peer = {0x2B61: 10, 0x2B65: 1}
    draft15 = SessionFlowControl.negotiate(Dialect.DRAFT15, OURS, peer)
    assert draft15.enabled and draft15.strict and draft15.send_credit() == 10
    draft13 = SessionFlowControl.negotiate(Dialect.DRAFT13, OURS, peer)
    assert draft13.enabled and not draft13.strict
    assert not SessionFlowControl.negotiate(Dialect.DRAFT02, OURS, peer).enabled
    assert not SessionFlowControl.negotiate(Dialect.DRAFT15, OURS, {}).enabled  # the peer declared nothing
