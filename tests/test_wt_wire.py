"""WebTransport's wire pieces on their own: error code mapping, capsules, stream headers."""

from __future__ import annotations

import pytest

from aiopquic.h3._frames import ErrorCode, encode_varint, is_reserved
from aiopquic.h3._protocol import H3Protocol
from aiopquic.webtransport._capsules import (
    CapsuleError,
    CapsuleReader,
    CapsuleTooLarge,
    CloseSession,
    DataBlocked,
    DrainSession,
    MaxData,
    MaxStreams,
    StreamsBlocked,
    UnknownCapsule,
    encode_capsule,
    truncate_reason,
)
from aiopquic.webtransport._codes import (
    APPLICATION_ERROR_FIRST,
    APPLICATION_ERROR_LAST,
    CapsuleType,
    app_error_to_h3,
    h3_to_app_error,
)
from aiopquic.webtransport._streams import (
    OtherStream,
    StreamHeaderError,
    StreamHeaderReader,
    SessionStreamHeader,
    bidi_stream_header,
    uni_stream_header,
)

# --- application error codes ----------------------------------------------------


def test_error_code_range_ends_match_the_drafts() -> None:
    assert app_error_to_h3(0) == APPLICATION_ERROR_FIRST == 0x52E4A40FA8DB
    assert app_error_to_h3(0xFFFFFFFF) == APPLICATION_ERROR_LAST == 0x52E5AC983162
    # draft-02's 8-bit range ends at 0x52e4a40fa9e2, with the same formula
    assert app_error_to_h3(0xFF) == 0x52E4A40FA9E2


def test_error_codes_skip_the_grease_values_and_round_trip() -> None:
    codes = [*range(0, 3000), *range(0xFFFF_F000, 0x1_0000_0000)]
    mapped = [app_error_to_h3(code) for code in codes]
    assert not any(is_reserved(h) for h in mapped)
    assert [h3_to_app_error(h) for h in mapped] == codes
    # draft-02's IANA list: the reserved values inside its range are skipped
    assert 0x52E4A40FA8F9 not in mapped
    assert app_error_to_h3(0x1D) + 2 == app_error_to_h3(0x1E) == 0x52E4A40FA8FA


def test_h3_codes_that_carry_no_application_error_map_to_none() -> None:
    assert h3_to_app_error(ErrorCode.H3_NO_ERROR) is None
    assert h3_to_app_error(APPLICATION_ERROR_FIRST - 1) is None
    assert h3_to_app_error(APPLICATION_ERROR_LAST + 1) is None
    assert h3_to_app_error(0x52E4A40FA8F9) is None  # a GREASE value inside the range


@pytest.mark.parametrize("code", [-1, 0x1_0000_0000])
def test_application_error_codes_are_32_bit(code: int) -> None:
    with pytest.raises(ValueError, match="32-bit"):
        app_error_to_h3(code)


# --- capsules ---------------------------------------------------------------


ALL_CAPSULES = [
    CloseSession(0xDEADBEEF, "bye ✓"),
    CloseSession(0),
    DrainSession(),
    MaxData(1 << 40),
    MaxStreams(True, 100),
    MaxStreams(False, 7),
    DataBlocked(65536),
    StreamsBlocked(True, 3),
    StreamsBlocked(False, 0),
]


def read_all(reader: CapsuleReader, data: bytes) -> list[object]:
    reader.append(data)
    return list(reader.capsules())


def test_every_capsule_round_trips_even_one_byte_at_a_time() -> None:
    wire = b"".join(capsule.encode() for capsule in ALL_CAPSULES)
    assert read_all(CapsuleReader(), wire) == ALL_CAPSULES
    reader = CapsuleReader()
    got = [capsule for byte in wire for capsule in read_all(reader, bytes([byte]))]
    assert got == ALL_CAPSULES
    assert reader.at_boundary


def test_capsule_type_values_on_the_wire() -> None:
    assert CloseSession(1, "x").encode() == encode_varint(0x2843) + b"\x05" + b"\x00\x00\x00\x01x"
    assert DrainSession().encode() == encode_varint(0x78AE) + b"\x00"
    assert MaxData(5).encode()[:4] == encode_varint(0x190B4D3D)
    assert MaxStreams(True, 1).encode()[:4] == encode_varint(0x190B4D3F)
    assert MaxStreams(False, 1).encode()[:4] == encode_varint(0x190B4D40)
    assert DataBlocked(1).encode()[:4] == encode_varint(0x190B4D41)
    assert StreamsBlocked(True, 1).encode()[:4] == encode_varint(0x190B4D43)
    assert StreamsBlocked(False, 1).encode()[:4] == encode_varint(0x190B4D44)


def test_close_reason_is_cut_to_1024_bytes_on_a_character_boundary() -> None:
    reason = "é" * 600  # 1200 bytes, two per character
    wire = CloseSession(7, reason).encode()
    (capsule,) = read_all(CapsuleReader(), wire)
    assert isinstance(capsule, CloseSession)
    assert capsule.reason == "é" * 512
    assert truncate_reason("a" + "€" * 400) == ("a" + "€" * 341).encode()  # 1 + 3*341 = 1024
    assert truncate_reason("short") == b"short"


def test_close_with_a_code_over_32_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="32-bit"):
        CloseSession(1 << 32).encode()


def test_unknown_capsules_are_reported_and_skipped_without_buffering_them() -> None:
    reader = CapsuleReader(max_capsule_size=100)
    big = 1_000_000
    header = encode_varint(0x29) + encode_varint(big)  # a GREASE capsule type, far over the limit
    assert read_all(reader, header + b"x" * 10) == [UnknownCapsule(0x29, big)]
    assert not reader.at_boundary
    for _ in range(99):
        assert read_all(reader, b"y" * 10_000) == []
    assert len(reader._data) == 0  # nothing of the skipped payload is kept
    tail = b"z" * (big - 10 - 990_000)
    assert read_all(reader, tail + DrainSession().encode()) == [DrainSession()]
    assert reader.at_boundary


def test_a_known_capsule_over_the_limit_raises_before_its_payload_arrives() -> None:
    reader = CapsuleReader(max_capsule_size=64)
    with pytest.raises(CapsuleTooLarge, match="0x2843 announces 2000 bytes") as info:
        read_all(reader, encode_varint(CapsuleType.CLOSE_SESSION) + encode_varint(2000))
    assert isinstance(info.value, CapsuleError)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (encode_capsule(CapsuleType.CLOSE_SESSION, b"\x00\x01"), "shorter than its 32-bit error code"),
        (encode_capsule(CapsuleType.CLOSE_SESSION, b"\x00" * 4 + b"\xff\xfe"), "not UTF-8"),
        (encode_capsule(CapsuleType.CLOSE_SESSION, b"\x00" * 4 + b"a" * 1025), "longer than 1024 bytes"),
        (encode_capsule(CapsuleType.DRAIN_SESSION, b"\x00"), "must be empty"),
        (encode_capsule(CapsuleType.MAX_DATA, b""), "exactly one varint"),
        (encode_capsule(CapsuleType.MAX_STREAMS_UNI, encode_varint(1) + b"\x00"), "exactly one varint"),
    ],
)
def test_malformed_capsules_raise(wire: bytes, message: str) -> None:
    with pytest.raises(CapsuleError, match=message) as info:
        read_all(CapsuleReader(), wire)
    close_reason = message in ("not UTF-8", "longer than 1024 bytes")
    assert info.value.error_code == (ErrorCode.H3_MESSAGE_ERROR if close_reason else ErrorCode.H3_DATAGRAM_ERROR)


def test_a_stream_that_ends_inside_a_capsule_is_an_error() -> None:
    reader = CapsuleReader()
    read_all(reader, MaxData(10).encode()[:-1])
    with pytest.raises(CapsuleError, match="ended inside a capsule"):
        reader.end()
    clean = CapsuleReader()
    read_all(clean, MaxData(10).encode())
    clean.end()


# --- stream headers -----------------------------------------------------------


def test_stream_headers_on_the_wire() -> None:
    assert bidi_stream_header(0) == b"\x40\x41\x00"
    assert uni_stream_header(4) == b"\x40\x54\x04"
    with pytest.raises(StreamHeaderError) as info:
        bidi_stream_header(1)
    assert info.value.error_code == ErrorCode.H3_ID_ERROR


@pytest.mark.parametrize("unidirectional", [False, True])
def test_header_split_anywhere_gives_session_and_first_body_bytes(unidirectional: bool) -> None:
    header = uni_stream_header(1 << 20) if unidirectional else bidi_stream_header(1 << 20)
    wire = header + b"body"
    for cut in range(len(wire) + 1):
        reader = StreamHeaderReader(unidirectional=unidirectional)
        first = reader.feed(wire[:cut])
        if first is None:
            assert cut < len(header)
            assert reader.feed(wire[cut:]) == SessionStreamHeader(1 << 20, b"body")
        else:  # complete: what follows goes straight to the session's stream
            assert first == SessionStreamHeader(1 << 20, wire[len(header) : cut])


def test_an_http3_request_stream_is_handed_back_whole() -> None:
    reader = StreamHeaderReader(unidirectional=False)
    assert reader.feed(b"\x01\x05hello") == OtherStream(b"\x01\x05hello")
    # an HTTP/3 control stream type on a unidirectional stream
    assert StreamHeaderReader(unidirectional=True).feed(b"\x00\x04\x00") == OtherStream(b"\x00\x04\x00")
    # the bidi signal means nothing on a uni stream, and the reverse
    assert StreamHeaderReader(unidirectional=True).feed(bidi_stream_header(0)) == OtherStream(bidi_stream_header(0))
    # a two-byte first varint that arrives split is held, then handed back
    split = StreamHeaderReader(unidirectional=False)
    assert split.feed(b"\x40") is None
    assert split.feed(b"\x21rest") == OtherStream(b"\x40\x21rest")


def test_truncated_headers() -> None:
    assert StreamHeaderReader(unidirectional=False).feed(b"\x40", fin=True) == OtherStream(b"\x40")
    with pytest.raises(StreamHeaderError, match="ended inside its WebTransport header") as info:
        StreamHeaderReader(unidirectional=True).feed(b"\x40\x54", fin=True)
    assert not info.value.connection_error


def test_a_session_id_that_is_not_a_client_bidi_stream_closes_the_connection() -> None:
    with pytest.raises(StreamHeaderError) as info:
        StreamHeaderReader(unidirectional=True).feed(b"\x40\x54\x02")
    assert info.value.error_code == ErrorCode.H3_ID_ERROR
    assert info.value.connection_error


def test_datagrams_carry_the_quarter_session_id_through_the_h3_codec() -> None:
    datagram = H3Protocol.encode_datagram(8, b"tick")
    assert datagram == b"\x02tick"
    assert H3Protocol.decode_datagram(datagram) == (8, b"tick")
