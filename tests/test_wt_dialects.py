"""Which WebTransport draft each side speaks, and the CONNECT request's checks."""

from __future__ import annotations

import pytest

from aiopquic.h3._frames import Setting, decode_settings, decode_varint, encode_settings
from aiopquic.h3._protocol import H3Settings
from aiopquic.webtransport._codes import WTSetting
from aiopquic.webtransport._dialects import (
    ALL_DIALECTS,
    ConnectRequest,
    Dialect,
    InvalidConnect,
    SessionLimits,
    client_dialect,
    client_settings,
    flow_control_enabled,
    is_webtransport_request,
    offered_dialects,
    parse_connect,
    request_headers,
    response_headers,
    server_settings,
    validate_peer_settings,
)

H3 = {int(Setting.ENABLE_CONNECT_PROTOCOL): 1, int(Setting.H3_DATAGRAM): 1}
# What the peers we meet send, as far as WebTransport is concerned.
CHROME_DRAFT02 = {int(Setting.H3_DATAGRAM): 1, 0xFFD277: 1, 0x2B603742: 1}
AIOQUIC_DRAFT02 = {**H3, 0x2B603742: 1}
PYWEBTRANSPORT_08 = {**H3, 0x14E9CD29: 1, 0x2B61: 0, 0x2B64: 0, 0x2B65: 0}
DRAFT15_CLIENT = {int(Setting.H3_DATAGRAM): 1, 0x2C7CF000: 1, 0x2B61: 65536}


def our_server_settings() -> dict[int, int]:
    """Our server's SETTINGS as they travel (through H3Settings, which adds a GREASE setting)."""
    settings = H3Settings(enable_connect_protocol=True, h3_datagram=True, extra=server_settings())
    wire = encode_settings(settings.to_wire())
    _, after_type = decode_varint(wire) or (0, 0)
    _, payload_start = decode_varint(wire, after_type) or (0, 0)
    return decode_settings(wire[payload_start:])


def test_settings_code_points() -> None:
    sent = server_settings(SessionLimits(max_sessions=5, initial_max_data=7, initial_max_streams_bidi=3, initial_max_streams_uni=2))
    assert sent == {
        0x2B603742: 1,
        0xFFD277: 1,
        0x2C7CF000: 1,
        0x14E9CD29: 5,
        0x2B61: 7,
        0x2B64: 2,
        0x2B65: 3,
    }
    assert client_settings()[0x14E9CD29] == 1


def test_our_server_offers_all_three_dialects_and_our_client_picks_the_newest() -> None:
    settings = our_server_settings()
    assert offered_dialects(settings) == ALL_DIALECTS
    assert client_dialect(settings) is Dialect.DRAFT15
    assert client_dialect(settings, spoken=[Dialect.DRAFT02, Dialect.DRAFT13]) is Dialect.DRAFT13


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (AIOQUIC_DRAFT02, Dialect.DRAFT02),
        (CHROME_DRAFT02, Dialect.DRAFT02),  # the old datagram setting is enough
        ({**H3, 0x14E9CD29: 4}, Dialect.DRAFT13),
        ({**H3, 0x2C7CF000: 1}, Dialect.DRAFT15),
        ({**H3, 0x2B603742: 1, 0x14E9CD29: 4}, Dialect.DRAFT13),
        ({0x2B603742: 1}, None),  # no HTTP datagrams at all
        ({int(Setting.H3_DATAGRAM): 1, 0x2C7CF000: 1}, None),  # draft-15 without extended CONNECT
        (H3, None),
    ],
)
def test_client_dialect_from_server_settings(settings: dict[int, int], expected: Dialect | None) -> None:
    assert client_dialect(settings) is expected


def test_peer_settings_with_values_the_drafts_forbid() -> None:
    assert validate_peer_settings(our_server_settings(), is_client=True) is None
    assert "ENABLE_WEBTRANSPORT" in (validate_peer_settings({0x2B603742: 2}, is_client=False) or "")
    assert "H3_DATAGRAM_DRAFT04" in (validate_peer_settings({0xFFD277: 5}, is_client=True) or "")
    assert "WT_ENABLED" in (validate_peer_settings({0x2C7CF000: 2}, is_client=True) or "")
    assert validate_peer_settings({0x2C7CF000: 2}, is_client=False) is None


def test_flow_control_needs_both_sides_to_declare_it() -> None:
    ours = server_settings()
    assert flow_control_enabled(Dialect.DRAFT15, ours, DRAFT15_CLIENT)
    assert not flow_control_enabled(Dialect.DRAFT02, ours, ours)
    # pywebtransport's defaults (one session, initial limits 0) declare nothing
    assert not flow_control_enabled(Dialect.DRAFT13, ours, PYWEBTRANSPORT_08)
    # draft-14 also counts WT_MAX_SESSIONS > 1; draft-16 does not
    many_sessions = {0x14E9CD29: 8}
    assert flow_control_enabled(Dialect.DRAFT13, ours, many_sessions)
    assert not flow_control_enabled(Dialect.DRAFT15, ours, many_sessions)
    assert not flow_control_enabled(Dialect.DRAFT15, server_settings(SessionLimits(0 + 1, 0, 0, 0)), DRAFT15_CLIENT)


def test_session_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="initial_max_data must be >= 0"):
        SessionLimits(initial_max_data=-1)
    with pytest.raises(TypeError, match="max_sessions must be an int"):
        SessionLimits(max_sessions=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        SessionLimits(max_sessions=0)


# --- the CONNECT request ----------------------------------------------------------


@pytest.mark.parametrize("dialect", list(Dialect))
def test_our_request_headers_are_understood_by_our_server_in_every_dialect(dialect: Dialect) -> None:
    headers = request_headers(dialect, authority="example.org:4433", path="/rooms/a%20b?x=1", origin="https://example.org")
    assert is_webtransport_request(headers)
    request = parse_connect(headers, client_settings(), offered=frozenset({dialect}))
    assert request == ConnectRequest(dialect, "example.org:4433", "/rooms/a b", "x=1", "https://example.org", headers)


def test_request_headers_per_dialect() -> None:
    draft02 = dict(request_headers(Dialect.DRAFT02, authority="h", path="/"))
    assert draft02[b":protocol"] == b"webtransport"
    assert draft02[b"sec-webtransport-http3-draft02"] == b"1"
    assert dict(request_headers(Dialect.DRAFT13, authority="h", path="/"))[b":protocol"] == b"webtransport"
    draft15 = dict(request_headers(Dialect.DRAFT15, authority="h", path="/"))
    assert draft15[b":protocol"] == b"webtransport-h3"
    assert b"sec-webtransport-http3-draft02" not in draft15


def test_response_headers_per_dialect() -> None:
    assert response_headers(Dialect.DRAFT02) == [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")]
    assert response_headers(Dialect.DRAFT15, 404) == [(b":status", b"404")]
    with pytest.raises(ValueError, match="200 to 599"):
        response_headers(Dialect.DRAFT13, 101)


def chrome_request(path: bytes = b"/echo") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"webtransport"),
        (b":scheme", b"https"),
        (b":authority", b"127.0.0.1:4433"),
        (b":path", path),
        (b"origin", b"https://example.org"),
        (b"sec-webtransport-http3-draft02", b"1"),
    ]


def test_server_tells_the_dialect_from_protocol_headers_and_client_settings() -> None:
    assert parse_connect(chrome_request(), CHROME_DRAFT02).dialect is Dialect.DRAFT02
    # aioquic's draft-02 client: the setting alone names the draft
    no_header = [h for h in chrome_request() if h[0] != b"sec-webtransport-http3-draft02"]
    assert parse_connect(no_header, AIOQUIC_DRAFT02).dialect is Dialect.DRAFT02
    assert parse_connect(no_header, PYWEBTRANSPORT_08).dialect is Dialect.DRAFT13
    # a client speaking both: the newest both sides speak wins
    assert parse_connect(chrome_request(), {**CHROME_DRAFT02, 0x14E9CD29: 1}).dialect is Dialect.DRAFT13
    assert parse_connect(chrome_request(), {**CHROME_DRAFT02, 0x14E9CD29: 1}, frozenset({Dialect.DRAFT02})).dialect is Dialect.DRAFT02
    h3 = [(n, b"webtransport-h3" if n == b":protocol" else v) for n, v in no_header]
    assert parse_connect(h3, DRAFT15_CLIENT).dialect is Dialect.DRAFT15


def test_a_webtransport_connect_naming_no_draft_we_speak_is_refused() -> None:
    no_header = [h for h in chrome_request() if h[0] != b"sec-webtransport-http3-draft02"]
    with pytest.raises(InvalidConnect, match="names no WebTransport draft") as info:
        parse_connect(no_header, {int(Setting.H3_DATAGRAM): 1})
    assert info.value.status == 400
    with pytest.raises(InvalidConnect, match="names no WebTransport draft"):
        parse_connect(chrome_request(), CHROME_DRAFT02, offered=frozenset({Dialect.DRAFT15}))


def replace(headers: list[tuple[bytes, bytes]], name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    out = [(n, v) for n, v in headers if n != name]
    return out if value is None else [(name, value), *out]


@pytest.mark.parametrize(
    ("name", "value", "reason", "status"),
    [
        (b":method", b"GET", "starts with a CONNECT", 405),
        (b":protocol", b"websocket", "is not WebTransport's", 400),
        (b":protocol", None, "is not WebTransport's", 400),
        (b":scheme", b"http", "needs :scheme https", 400),
        (b":authority", None, "without :authority", 400),
        (b":path", b"*", "absolute :path", 400),
        (b":path", b"/%ff", "badly encoded", 400),
    ],
)
def test_invalid_connect_requests_say_why(name: bytes, value: bytes | None, reason: str, status: int) -> None:
    with pytest.raises(InvalidConnect, match=reason) as info:
        parse_connect(replace(chrome_request(), name, value), CHROME_DRAFT02)
    assert info.value.status == status


def test_is_webtransport_request() -> None:
    assert is_webtransport_request(chrome_request())
    assert not is_webtransport_request(replace(chrome_request(), b":protocol", b"connect-udp"))
    assert not is_webtransport_request([(b":method", b"GET"), (b":path", b"/")])
    request = parse_connect(replace(chrome_request(), b"origin", None), CHROME_DRAFT02)
    assert request.origin is None  # optional outside browsers
    assert WTSetting.WT_ENABLED == 0x2C7CF000
