"""The sans-I/O HTTP/3 core on its own: bytes in, events and errors out."""

from __future__ import annotations

import pytest

from aiopquic.h3._events import DataReceived, FrameReceived, HeadersReceived, SettingsReceived, StreamError, TrailersReceived, UnknownStream
from aiopquic.h3._frames import (
    DataChunk,
    ErrorCode,
    Frame,
    FrameReader,
    FrameType,
    decode_varint,
    encode_frame,
    encode_settings,
    encode_varint,
    is_reserved,
)
from aiopquic.h3._headers import _VALID_FIELDS, _VALID_FIELDS_MAX, MessageError, validate_request
from aiopquic.h3._protocol import H3Protocol, H3Settings, ProtocolError

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", b"/")]
CLIENT_CONTROL, CLIENT_ENCODER, CLIENT_DECODER = 2, 6, 10
SERVER_CONTROL, SERVER_ENCODER, SERVER_DECODER = 3, 7, 11


def connected_pair(
    server_settings: H3Settings | None = None, client_settings: H3Settings | None = None
) -> tuple[H3Protocol, H3Protocol]:
    """A client and a server that exchanged their control and QPACK streams."""
    client = H3Protocol(is_client=True, settings=client_settings)
    server = H3Protocol(is_client=False, settings=server_settings)
    server.receive_uni_data(CLIENT_CONTROL, client.control_stream_data(), False)
    client.receive_uni_data(SERVER_CONTROL, server.control_stream_data(), False)
    server.receive_uni_data(CLIENT_ENCODER, client.encoder_stream_data() + client.take_encoder_data(), False)
    client.receive_uni_data(SERVER_ENCODER, server.encoder_stream_data() + server.take_encoder_data(), False)
    server.receive_uni_data(CLIENT_DECODER, client.decoder_stream_data(), False)
    client.receive_uni_data(SERVER_DECODER, server.decoder_stream_data(), False)
    return client, server


def request_bytes(client: H3Protocol, headers: list[tuple[bytes, bytes]], body: bytes = b"", stream_id: int = 0) -> bytes:
    data = client.encode_headers(stream_id, headers)
    if body:
        data += client.data_frame_header(len(body)) + body
    return data


def send_request(
    client: H3Protocol, server: H3Protocol, headers: list[tuple[bytes, bytes]], body: bytes = b"", stream_id: int = 0
) -> list[object]:
    """The client's request arrives whole at the server, its encoder stream bytes first."""
    data = request_bytes(client, headers, body, stream_id)
    server.receive_uni_data(CLIENT_ENCODER, client.take_encoder_data(), False)
    return list(server.receive_request_data(stream_id, data, True))


def test_request_and_response_round_trip_with_trailers() -> None:
    client, server = connected_pair()
    headers = [*REQUEST[:1], (b":method", b"POST")][1:] + REQUEST[1:] + [(b"content-length", b"5")]
    events = server.receive_request_data(0, request_bytes(client, headers, b"hello"), True)
    server.receive_uni_data(CLIENT_ENCODER, client.take_encoder_data(), False)
    assert events == [
        HeadersReceived(0, headers, False),
        DataReceived(0, b"hello", False),
        DataReceived(0, b"", True),
    ]
    response = server.encode_headers(0, [(b":status", b"200"), (b"trailer", b"x-sum")])
    response += server.data_frame_header(2) + b"ok"
    response += server.encode_headers(0, [(b"x-sum", b"1")])
    client.receive_uni_data(SERVER_ENCODER, server.take_encoder_data(), False)
    events = client.receive_request_data(0, response, True)
    assert events == [
        HeadersReceived(0, [(b":status", b"200"), (b"trailer", b"x-sum")], False),
        DataReceived(0, b"ok", False),
        TrailersReceived(0, [(b"x-sum", b"1")]),
    ]


#: A client whose encoder uses up to 4096 bytes of the server's dynamic table.
INDEXING = H3Settings(qpack_encoder_table_capacity=4096)


def test_our_encoder_leaves_the_dynamic_table_alone_by_default() -> None:
    """By default no field goes into the peer's table, even one that repeats: no
    encoder stream bytes, and sections the peer decodes at once and never
    acknowledges; our decoder still offers its table to the peer."""
    client, server = connected_pair()
    headers = REQUEST + [(b"authorization", b"Bearer a long token that repeats on every request")]
    for stream_id in (0, 4, 8):
        data = request_bytes(client, headers, stream_id=stream_id)
        assert data[2:4] == b"\x00\x00"  # HEADERS frame; Required Insert Count 0, Base 0
        assert server.receive_request_data(stream_id, data, True)[0] == HeadersReceived(stream_id, headers, True)
        assert client.take_encoder_data() == b""
        assert server.take_decoder_data() == b""
    assert client.peer_settings is not None and server.peer_settings is not None
    assert client.peer_settings[0x01] == server.peer_settings[0x01] == 4096  # QPACK_MAX_TABLE_CAPACITY offered


def test_the_encoder_uses_no_more_of_the_table_than_both_sides_allow() -> None:
    """With qpack_encoder_table_capacity set, repeated fields are inserted and referred to."""
    client, server = connected_pair(client_settings=INDEXING)
    headers = REQUEST + [(b"authorization", b"Bearer a long token that repeats on every request")]
    sizes = []
    for stream_id in (0, 4):
        data = request_bytes(client, headers, stream_id=stream_id)
        server.receive_uni_data(CLIENT_ENCODER, client.take_encoder_data(), False)
        assert server.receive_request_data(stream_id, data, True)[0] == HeadersReceived(stream_id, headers, True)
        client.receive_uni_data(SERVER_DECODER, server.take_decoder_data(), False)
        sizes.append(len(data))
    assert sizes[1] < sizes[0] - 20  # the token is a reference the second time
    # A server that offers no table gets none, whatever the client would use.
    client, server = connected_pair(server_settings=H3Settings(qpack_max_table_capacity=0), client_settings=INDEXING)
    request_bytes(client, headers)
    request_bytes(client, headers, stream_id=4)
    assert client.take_encoder_data() == b""


@pytest.mark.parametrize("capacity", [-1, 1.5, "4096", True, None])
def test_a_bad_encoder_table_capacity_is_refused(capacity: object) -> None:
    with pytest.raises(ValueError, match="qpack_encoder_table_capacity must be a whole number of bytes >= 0"):
        H3Settings(qpack_encoder_table_capacity=capacity)  # type: ignore[arg-type]


def test_a_header_block_waiting_for_the_encoder_stream_resumes_when_it_arrives() -> None:
    client, server = connected_pair(client_settings=INDEXING)
    # Encoding into the dynamic table: the block refers to entries sent on the encoder stream.
    headers = REQUEST + [(b"x-custom", b"a value worth indexing")]
    first = request_bytes(client, headers)
    server.receive_uni_data(CLIENT_ENCODER, client.take_encoder_data(), False)
    assert server.receive_request_data(0, first, True)[0] == HeadersReceived(0, headers, True)
    server.receive_uni_data(CLIENT_DECODER, b"", False)
    client.receive_uni_data(SERVER_DECODER, server.take_decoder_data(), False)  # acknowledgements
    headers = REQUEST + [(b"x-custom", b"a value worth indexing"), (b"x-new", b"another fresh value")]
    second = request_bytes(client, headers, b"body", stream_id=4)
    encoder_data = client.take_encoder_data()
    assert encoder_data, "the second request should insert into the dynamic table"
    assert server.receive_request_data(4, second, True) == []
    assert server.is_blocked(4)
    events = server.receive_uni_data(CLIENT_ENCODER, encoder_data, False)
    assert events == [HeadersReceived(4, headers, False), DataReceived(4, b"body", False), DataReceived(4, b"", True)]
    assert not server.is_blocked(4)
    assert server.take_decoder_data(), "a section acknowledgement is due"


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (REQUEST + [(b"X-Upper", b"1")], "lowercase"),
        (REQUEST + [(b"connection", b"keep-alive")], "connection-specific"),
        (REQUEST + [(b"transfer-encoding", b"chunked")], "connection-specific"),
        (REQUEST + [(b"te", b"gzip")], "TE"),
        (REQUEST[:3], ":path"),
        (REQUEST[1:], ":method"),
        (REQUEST + [(b":method", b"GET")], "twice"),
        ([REQUEST[0], (b"x-a", b"1"), *REQUEST[1:]], "after a regular field"),
        (REQUEST + [(b":status", b"200")], "not allowed"),
        (REQUEST + [(b"x-a", b"bad\r\nvalue")], "CR or LF"),
        ([(b":method", b"CONNECT"), (b":protocol", b"websocket"), *REQUEST[1:]], ":protocol"),
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")], ":authority or host"),
    ],
)
def test_malformed_requests_are_a_stream_error(headers: list[tuple[bytes, bytes]], why: str) -> None:
    client, server = connected_pair()
    events = send_request(client, server, headers)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].error_code == ErrorCode.H3_MESSAGE_ERROR
    assert why in events[0].reason
    # The connection goes on: the next request is fine.
    assert isinstance(send_request(client, server, REQUEST, stream_id=4)[0], HeadersReceived)


def test_field_checks_remember_only_valid_fields_and_stay_bounded() -> None:
    """Valid fields are remembered (requests repeat them); a bad one never is,
    and the memory is cleared when full."""
    for _ in range(2):
        with pytest.raises(MessageError, match="lowercase"):
            validate_request(REQUEST + [(b"X-Upper", b"1")], extended_connect=False)
    for n in range(_VALID_FIELDS_MAX + 10):
        validate_request(REQUEST + [(b"x-n", str(n).encode())], extended_connect=False)
        assert len(_VALID_FIELDS) <= _VALID_FIELDS_MAX
    assert (b"X-Upper", b"1") not in _VALID_FIELDS


@pytest.mark.parametrize(("length", "body"), [(b"3", b"four"), (b"5", b"four"), (b"x", b"")])
def test_a_body_that_disagrees_with_content_length_is_a_stream_error(length: bytes, body: bytes) -> None:
    client, server = connected_pair()
    headers = [(b":method", b"POST"), *REQUEST[1:], (b"content-length", length)]
    events = send_request(client, server, headers, body)
    assert isinstance(events[-1], StreamError) and events[-1].error_code == ErrorCode.H3_MESSAGE_ERROR


def test_extended_connect_is_accepted_when_enabled() -> None:
    client, server = connected_pair(H3Settings(enable_connect_protocol=True))
    assert client.peer_settings is not None and client.peer_settings[0x8] == 1
    headers = [(b":method", b"CONNECT"), (b":protocol", b"webtransport"), *REQUEST[1:]]
    data = request_bytes(client, headers)
    server.receive_uni_data(CLIENT_ENCODER, client.take_encoder_data(), False)
    assert server.receive_request_data(0, data, False) == [HeadersReceived(0, headers, False)]


def test_a_header_section_over_the_limit_gets_431() -> None:
    _, server = connected_pair(H3Settings(max_field_section_size=1000))
    unaware = H3Protocol(is_client=True)  # has not seen the server's SETTINGS: static table only
    events = server.receive_request_data(0, request_bytes(unaware, REQUEST + [(b"x-big", b"v" * 1000)]), True)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert events[0].error_code == ErrorCode.H3_EXCESSIVE_LOAD and events[0].http_status == 431
    # A frame far over the limit is refused before it is buffered.
    events = server.receive_request_data(4, encode_varint(FrameType.HEADERS) + encode_varint(10**6), False)
    assert isinstance(events[0], StreamError) and events[0].error_code == ErrorCode.H3_EXCESSIVE_LOAD


def test_our_client_refuses_to_send_more_than_the_server_accepts() -> None:
    client, _ = connected_pair(H3Settings(max_field_section_size=1000))
    with pytest.raises(ValueError, match="larger than the peer accepts"):
        client.encode_headers(0, REQUEST + [(b"x-big", b"v" * 1000)])


def _control(*frames: bytes) -> bytes:
    return encode_varint(0) + b"".join(frames)


SETTINGS = encode_settings({0x6: 4096})


@pytest.mark.parametrize(
    ("stream_id", "data", "fin", "code"),
    [
        (CLIENT_CONTROL, _control(encode_frame(FrameType.GOAWAY, b"\x00")), False, ErrorCode.H3_MISSING_SETTINGS),
        (CLIENT_CONTROL, _control(SETTINGS, SETTINGS), False, ErrorCode.H3_FRAME_UNEXPECTED),
        (CLIENT_CONTROL, _control(encode_settings({0x2: 1})), False, ErrorCode.H3_SETTINGS_ERROR),
        (CLIENT_CONTROL, _control(encode_frame(FrameType.SETTINGS, b"\x06\x01\x06\x02")), False, ErrorCode.H3_SETTINGS_ERROR),
        (CLIENT_CONTROL, _control(encode_frame(FrameType.SETTINGS, b"\x06")), False, ErrorCode.H3_FRAME_ERROR),
        (CLIENT_CONTROL, _control(SETTINGS, encode_frame(FrameType.DATA, b"x")), False, ErrorCode.H3_FRAME_UNEXPECTED),
        (CLIENT_CONTROL, _control(SETTINGS, encode_frame(FrameType.HEADERS, b"x")), False, ErrorCode.H3_FRAME_UNEXPECTED),
        (CLIENT_CONTROL, _control(SETTINGS, encode_frame(FrameType.GOAWAY, b"\x00\x00")), False, ErrorCode.H3_FRAME_ERROR),
        (CLIENT_CONTROL, _control(SETTINGS, encode_frame(0x2, b"")), False, ErrorCode.H3_FRAME_UNEXPECTED),
        (CLIENT_CONTROL, _control(SETTINGS, encode_frame(FrameType.CANCEL_PUSH, b"\x00")), False, ErrorCode.H3_ID_ERROR),
        (CLIENT_CONTROL, _control(SETTINGS), True, ErrorCode.H3_CLOSED_CRITICAL_STREAM),
        (CLIENT_CONTROL, _control(encode_frame(FrameType.SETTINGS, b"x" * 20000)), False, ErrorCode.H3_EXCESSIVE_LOAD),
        (CLIENT_ENCODER, encode_varint(1), False, ErrorCode.H3_STREAM_CREATION_ERROR),  # a client's push stream
        (CLIENT_ENCODER, encode_varint(2) + b"\x00", False, ErrorCode.QPACK_ENCODER_STREAM_ERROR),
    ],
)
def test_control_and_qpack_stream_violations_close_the_connection(stream_id: int, data: bytes, fin: bool, code: int) -> None:
    server = H3Protocol(is_client=False)
    with pytest.raises(ProtocolError) as caught:
        server.receive_uni_data(stream_id, data, fin)
    assert caught.value.error_code == code


def test_a_second_control_stream_closes_the_connection() -> None:
    server = H3Protocol(is_client=False)
    server.receive_uni_data(CLIENT_CONTROL, _control(SETTINGS), False)
    with pytest.raises(ProtocolError) as caught:
        server.receive_uni_data(14, _control(SETTINGS), False)
    assert caught.value.error_code == ErrorCode.H3_STREAM_CREATION_ERROR


def test_a_reset_critical_stream_closes_the_connection() -> None:
    server = H3Protocol(is_client=False)
    server.receive_uni_data(CLIENT_CONTROL, _control(SETTINGS), False)
    with pytest.raises(ProtocolError) as caught:
        server.uni_stream_reset(CLIENT_CONTROL)
    assert caught.value.error_code == ErrorCode.H3_CLOSED_CRITICAL_STREAM


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (encode_frame(FrameType.DATA, b"early"), ErrorCode.H3_FRAME_UNEXPECTED),
        (encode_frame(FrameType.SETTINGS, b""), ErrorCode.H3_FRAME_UNEXPECTED),
        (encode_frame(0x6, b""), ErrorCode.H3_FRAME_UNEXPECTED),  # HTTP/2's PING
        (encode_frame(FrameType.HEADERS, b"\x00")[:-1], ErrorCode.H3_FRAME_ERROR),  # cut short at FIN
    ],
)
def test_request_stream_frame_violations_close_the_connection(data: bytes, code: int) -> None:
    _, server = connected_pair()
    with pytest.raises(ProtocolError) as caught:
        server.receive_request_data(0, data, True)
    assert caught.value.error_code == code


def test_client_checks_goaway_and_pushes() -> None:
    client = H3Protocol(is_client=True)
    client.receive_uni_data(SERVER_CONTROL, _control(SETTINGS, encode_frame(FrameType.GOAWAY, b"\x08")), False)
    assert client.goaway_received == 8
    with pytest.raises(ProtocolError) as caught:
        client.receive_uni_data(SERVER_CONTROL, encode_frame(FrameType.GOAWAY, b"\x0c"), False)
    assert caught.value.error_code == ErrorCode.H3_ID_ERROR
    with pytest.raises(ProtocolError) as caught:
        H3Protocol(is_client=True).receive_uni_data(SERVER_ENCODER, encode_varint(1), False)
    assert caught.value.error_code == ErrorCode.H3_ID_ERROR


def test_unknown_frames_settings_and_streams_are_ignored() -> None:
    client, server = connected_pair()
    grease = encode_frame(0x21, b"ignored") + encode_frame(0x5C0000, b"")  # reserved and unknown types
    events = server.receive_uni_data(CLIENT_CONTROL, grease, False)
    assert events == []
    stranger = H3Protocol(is_client=False)
    events = stranger.receive_uni_data(CLIENT_CONTROL, _control(encode_settings({0x21: 7, 0x6: 100})), False)
    assert events == [SettingsReceived({0x21: 7, 0x6: 100})]
    assert server.receive_uni_data(14, encode_varint(0x54) + b"\x00rest", False) == [UnknownStream(14, 0x54, b"\x00rest")]  # the bytes after the type, for an extension
    assert server.receive_uni_data(14, b"more", True) == []
    request = grease + request_bytes(client, REQUEST)
    server.receive_uni_data(CLIENT_ENCODER, client.take_encoder_data(), False)
    assert server.receive_request_data(0, request, True) == [HeadersReceived(0, REQUEST, True)]


def test_our_control_stream_carries_grease() -> None:
    server = H3Protocol(is_client=False)
    reader = FrameReader(1 << 16)
    data = server.control_stream_data()
    assert data[0] == 0
    reader.append(data[1:])
    (settings,) = reader.frames()  # the GREASE frame after SETTINGS is skipped by readers
    assert isinstance(settings, Frame) and settings.type == FrameType.SETTINGS
    grease_type = decode_varint(H3Protocol.grease_stream_data())
    assert grease_type is not None and is_reserved(grease_type[0])
    peer = H3Protocol(is_client=True)
    (event,) = peer.receive_uni_data(SERVER_CONTROL, data, False)
    assert isinstance(event, SettingsReceived)
    assert any(is_reserved(key) for key in event.settings)


def test_data_frames_stream_through_without_waiting_for_the_whole_frame() -> None:
    reader = FrameReader(100)
    reader.append(encode_varint(FrameType.DATA) + encode_varint(10_000_000) + b"abc")
    assert list(reader.frames()) == [DataChunk(b"abc")]
    reader.append(b"def")
    assert list(reader.frames()) == [DataChunk(b"def")]
    assert not reader.at_frame_boundary
    # An unknown frame's payload is dropped as it comes, whatever its length.
    skipper = FrameReader(100)
    skipper.append(encode_frame(0x21, b"x" * 1000) + encode_frame(FrameType.HEADERS, b"h"))
    assert list(skipper.frames()) == [Frame(FrameType.HEADERS, b"h")]


def test_kept_frame_types_come_up_after_the_headers_and_others_are_skipped() -> None:
    # WebTransport asks for its capsule types on a CONNECT stream: a peer that sends
    # capsules as bare frames (not inside DATA) is understood.
    client, server = connected_pair(H3Settings(enable_connect_protocol=True))
    headers = [(b":method", b"CONNECT"), (b":protocol", b"webtransport"), *REQUEST[1:]]
    server.keep_frames(0, frozenset({0x2843}))
    early = encode_frame(0x2843, b"before")  # before the headers: an unknown frame like any other
    data = early + request_bytes(client, headers)
    server.receive_uni_data(CLIENT_ENCODER, client.take_encoder_data(), False)
    assert server.receive_request_data(0, data, False) == [HeadersReceived(0, headers, False)]
    later = encode_frame(0x2843, b"\0\0\0\x2abye") + encode_frame(0x21, b"grease") + client.data_frame_header(2) + b"ok"
    assert server.receive_request_data(0, later[:5], False) == []
    assert server.receive_request_data(0, later[5:], False) == [
        FrameReceived(0, 0x2843, b"\0\0\0\x2abye"),
        DataReceived(0, b"ok", False),
    ]
