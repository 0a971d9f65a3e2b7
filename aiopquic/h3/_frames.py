"""HTTP/3 wire format (RFC 9114 section 7): varints, frames, SETTINGS, codes.

Pure functions and one incremental reader; nothing here knows about streams
or QPACK.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum


class ErrorCode(IntEnum):
    """HTTP/3 and QPACK error codes (RFC 9114 section 8.1, RFC 9204 section 6)."""

    H3_NO_ERROR = 0x100
    H3_GENERAL_PROTOCOL_ERROR = 0x101
    H3_INTERNAL_ERROR = 0x102
    H3_STREAM_CREATION_ERROR = 0x103
    H3_CLOSED_CRITICAL_STREAM = 0x104
    H3_FRAME_UNEXPECTED = 0x105
    H3_FRAME_ERROR = 0x106
    H3_EXCESSIVE_LOAD = 0x107
    H3_ID_ERROR = 0x108
    H3_SETTINGS_ERROR = 0x109
    H3_MISSING_SETTINGS = 0x10A
    H3_REQUEST_REJECTED = 0x10B
    H3_REQUEST_CANCELLED = 0x10C
    H3_REQUEST_INCOMPLETE = 0x10D
    H3_MESSAGE_ERROR = 0x10E
    H3_CONNECT_ERROR = 0x10F
    H3_VERSION_FALLBACK = 0x110
    QPACK_DECOMPRESSION_FAILED = 0x200
    QPACK_ENCODER_STREAM_ERROR = 0x201
    QPACK_DECODER_STREAM_ERROR = 0x202
    H3_DATAGRAM_ERROR = 0x33


class FrameType(IntEnum):
    """The frame types HTTP/3 defines."""

    DATA = 0x0
    HEADERS = 0x1
    CANCEL_PUSH = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    GOAWAY = 0x7
    MAX_PUSH_ID = 0xD


#: HTTP/2 frame types with no HTTP/3 meaning: receiving one is H3_FRAME_UNEXPECTED.
HTTP2_ONLY_FRAMES = frozenset({0x2, 0x6, 0x8, 0x9})
#: Frame types a reader hands on (all others are skipped unread).
KNOWN_FRAMES = frozenset(int(t) for t in FrameType) | HTTP2_ONLY_FRAMES


class StreamType(IntEnum):
    """Unidirectional stream types (RFC 9114 section 6.2, RFC 9204 section 4.2)."""

    CONTROL = 0x0
    PUSH = 0x1
    QPACK_ENCODER = 0x2
    QPACK_DECODER = 0x3


class Setting(IntEnum):
    """SETTINGS identifiers we read or send."""

    QPACK_MAX_TABLE_CAPACITY = 0x1
    MAX_FIELD_SECTION_SIZE = 0x6
    QPACK_BLOCKED_STREAMS = 0x7
    ENABLE_CONNECT_PROTOCOL = 0x8
    H3_DATAGRAM = 0x33


#: HTTP/2 settings with no HTTP/3 meaning: receiving one is H3_SETTINGS_ERROR.
HTTP2_ONLY_SETTINGS = frozenset({0x2, 0x3, 0x4, 0x5})

VARINT_MAX = (1 << 62) - 1


class FrameError(ValueError):
    """A frame or varint could not be decoded (H3_FRAME_ERROR)."""


def encode_varint(value: int) -> bytes:
    """Encode ``value`` as a QUIC variable-length integer (RFC 9000 section 16)."""
    if value < 0x40:
        return bytes((value,))
    if value < 0x4000:
        return (value | 0x4000).to_bytes(2, "big")
    if value < 0x4000_0000:
        return (value | 0x8000_0000).to_bytes(4, "big")
    if value <= VARINT_MAX:
        return (value | 0xC000_0000_0000_0000).to_bytes(8, "big")
    raise ValueError(f"{value} does not fit in a QUIC varint (at most 2**62 - 1)")


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``data[pos:]``: ``(value, next_pos)``, or None if incomplete."""
    if pos >= len(data):
        return None
    first = data[pos]
    if first < 0x40:  # one byte: frame types and short lengths, most varints here
        return first, pos + 1
    end = pos + (1 << (first >> 6))
    if end > len(data):
        return None
    value = int.from_bytes(data[pos:end], "big")
    return value & ~(0xC0 << (8 * (end - pos - 1))), end


def encode_frame(frame_type: int, payload: bytes = b"") -> bytes:
    """A whole frame: type, length, payload."""
    return encode_varint(frame_type) + encode_varint(len(payload)) + payload


def data_frame_header(length: int) -> bytes:
    """The type and length that precede ``length`` bytes of a DATA frame."""
    return b"\x00" + encode_varint(length)


def encode_settings(settings: dict[int, int]) -> bytes:
    """A SETTINGS frame carrying ``settings`` in the order given."""
    payload = b"".join(encode_varint(k) + encode_varint(v) for k, v in settings.items())
    return encode_frame(FrameType.SETTINGS, payload)


def decode_settings(payload: bytes) -> dict[int, int]:
    """Parse a SETTINGS payload; a repeated or HTTP/2-only identifier is an error.

    Raises :class:`FrameError` for a truncated payload and :class:`SettingsError`
    for a repeated or forbidden identifier.
    """
    settings: dict[int, int] = {}
    pos = 0
    while pos < len(payload):
        key = decode_varint(payload, pos)
        if key is None:
            raise FrameError("SETTINGS payload ends inside an identifier")
        value = decode_varint(payload, key[1])
        if value is None:
            raise FrameError("SETTINGS payload ends inside a value")
        if key[0] in settings:
            raise SettingsError(f"setting 0x{key[0]:x} sent twice")
        if key[0] in HTTP2_ONLY_SETTINGS:
            raise SettingsError(f"HTTP/2 setting 0x{key[0]:x} is forbidden in HTTP/3")
        settings[key[0]] = value[0]
        pos = value[1]
    return settings


class SettingsError(ValueError):
    """A SETTINGS frame repeats or uses a forbidden identifier (H3_SETTINGS_ERROR)."""


def decode_single_varint(payload: bytes, what: str) -> int:
    """The payload of GOAWAY, MAX_PUSH_ID or CANCEL_PUSH: exactly one varint."""
    parsed = decode_varint(payload)
    if parsed is None or parsed[1] != len(payload):
        raise FrameError(f"{what} must carry exactly one varint")
    return parsed[0]


def grease_value() -> int:
    """A reserved identifier (0x1f * N + 0x21) for GREASE settings, frames and streams."""
    n = int.from_bytes(os.urandom(2), "big") % 0x2000
    return 0x1F * n + 0x21


def is_reserved(value: int) -> bool:
    """True for the GREASE identifiers that every peer must ignore."""
    return value >= 0x21 and (value - 0x21) % 0x1F == 0


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole non-DATA frame, as read from a stream."""

    type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DataChunk:
    """Part of a DATA frame's payload; DATA is passed on as it arrives, never buffered whole."""

    data: bytes


class FrameReader:
    """Splits one stream's bytes into frames.

    DATA payloads come out in pieces as they arrive (a read that holds only
    DATA payload passes through uncopied); other frames are buffered whole up
    to ``max_frame_size`` (:class:`FrameTooLarge` beyond it), except frames of
    unknown type, whose payload is skipped as it arrives, unless their type is
    in ``kept`` (an extension's frames: buffered whole like known ones).
    """

    __slots__ = ("_data", "_frame_type", "_pos", "_remaining", "_skipping", "kept", "max_frame_size")

    def __init__(self, max_frame_size: int) -> None:
        self._data = b""  # bytes taken and not yet parsed start at _pos
        self._pos = 0
        self._frame_type: int | None = None
        self._remaining = 0
        self._skipping = False
        self.max_frame_size = max_frame_size
        #: Frame types HTTP/3 does not know that are yielded instead of skipped.
        self.kept: frozenset[int] = frozenset()

    @property
    def at_frame_boundary(self) -> bool:
        """True when no frame is partly read (a FIN here is a clean end)."""
        return self._frame_type is None and self._pos == len(self._data)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes that arrived; :meth:`frames` parses them."""
        if self._pos < len(self._data):
            self._data = self._data[self._pos :] + bytes(data)
        else:
            self._data = data if isinstance(data, bytes) else bytes(data)
        self._pos = 0

    def frames(self) -> Iterator[Frame | DataChunk]:
        """Yield every frame (or DATA piece) the bytes taken so far complete.

        Stopping the iteration early loses nothing: the rest stays buffered
        for the next call.
        """
        while True:
            if self._frame_type is None and not self._read_frame_header():
                return
            frame_type = self._frame_type
            available = len(self._data) - self._pos
            if frame_type == FrameType.DATA or self._skipping:
                take = min(self._remaining, available)
                start = self._pos
                self._pos += take
                self._remaining -= take
                if not self._remaining:
                    self._frame_type = None
                if frame_type == FrameType.DATA and take:
                    whole = start == 0 and take == len(self._data)
                    yield DataChunk(self._data if whole else self._data[start : start + take])
                if self._frame_type is not None:
                    return  # the frame goes on in bytes still to come
                continue
            if available < self._remaining:
                return
            start = self._pos
            self._pos += self._remaining
            self._frame_type = None
            assert frame_type is not None
            yield Frame(frame_type, self._data[start : self._pos])

    def _read_frame_header(self) -> bool:
        frame_type = decode_varint(self._data, self._pos)
        if frame_type is None:
            return False
        length = decode_varint(self._data, frame_type[1])
        if length is None:
            return False
        self._pos = length[1]
        self._frame_type = frame_type[0]
        self._remaining = length[0]
        known = self._frame_type in KNOWN_FRAMES or self._frame_type in self.kept
        self._skipping = not known
        if known and self._frame_type != FrameType.DATA and self._remaining > self.max_frame_size:
            raise FrameTooLarge(self._frame_type, self._remaining)
        return True


class FrameTooLarge(Exception):
    """A non-DATA frame longer than the reader accepts (H3_EXCESSIVE_LOAD)."""

    def __init__(self, frame_type: int, length: int) -> None:
        super().__init__(f"a frame of type 0x{frame_type:x} announces {length} bytes, more than we accept")
        self.frame_type = frame_type
        self.length = length
