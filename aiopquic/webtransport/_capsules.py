"""The capsule protocol (RFC 9297 section 3) with WebTransport's capsules.

Capsules travel on a session's CONNECT stream, inside HTTP/3 DATA frames: the
driver hands the DATA payload bytes to a :class:`CapsuleReader` and writes what
the ``encode()`` methods return as DATA. A capsule is ``type (varint), length
(varint), payload``.

Every problem with a capsule (truncated, malformed, too large) is a
:class:`CapsuleError`: the CONNECT stream is reset with its ``error_code``
and the session ends. That is H3_DATAGRAM_ERROR, which RFC 9297 section 5.2
defines as "Datagram or Capsule Protocol parse error" (webtransport-go uses
it the same way), except for a close reason that is too long or not UTF-8,
which the drafts answer with H3_MESSAGE_ERROR (draft-16 section 6).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..h3._frames import ErrorCode, decode_varint, encode_varint
from ._codes import CapsuleType

#: The longest application error message a CLOSE_WEBTRANSPORT_SESSION may carry.
MAX_CLOSE_REASON = 1024
#: Default bound on a known capsule's payload (a close capsule needs 4 + 1024).
DEFAULT_MAX_CAPSULE_SIZE = 16 * 1024


class CapsuleError(ValueError):
    """A malformed capsule: reset the CONNECT stream with ``error_code``."""

    def __init__(self, reason: str, error_code: int = ErrorCode.H3_DATAGRAM_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code


class CapsuleTooLarge(CapsuleError):
    """A known capsule announces a payload longer than the reader accepts."""

    def __init__(self, capsule_type: int, length: int, limit: int) -> None:
        super().__init__(f"capsule 0x{capsule_type:x} announces {length} bytes, more than the {limit} we accept")
        self.capsule_type = capsule_type
        self.length = length
        self.limit = limit


def encode_capsule(capsule_type: int, payload: bytes = b"") -> bytes:
    """A whole capsule: type, length, payload."""
    return encode_varint(capsule_type) + encode_varint(len(payload)) + payload


def truncate_reason(reason: str, limit: int = MAX_CLOSE_REASON) -> bytes:
    """``reason`` as UTF-8, cut to at most ``limit`` bytes on a character boundary."""
    data = reason.encode()
    if len(data) <= limit:
        return data
    # errors="ignore" drops the partial character the cut may leave at the end.
    return data[:limit].decode(errors="ignore").encode()


@dataclass(frozen=True, slots=True)
class CloseSession:
    """CLOSE_WEBTRANSPORT_SESSION (WT_CLOSE_SESSION): a 32-bit code and a reason."""

    error_code: int
    reason: str = ""

    def encode(self) -> bytes:
        """The capsule, the reason cut to 1024 bytes on a character boundary."""
        if not 0 <= self.error_code <= 0xFFFF_FFFF:
            raise ValueError(f"a session's error code is 32-bit, not {self.error_code}")
        return encode_capsule(CapsuleType.CLOSE_SESSION, self.error_code.to_bytes(4, "big") + truncate_reason(self.reason))


@dataclass(frozen=True, slots=True)
class DrainSession:
    """DRAIN_WEBTRANSPORT_SESSION (WT_DRAIN_SESSION): please wind the session down."""

    def encode(self) -> bytes:
        """The capsule (no payload)."""
        return encode_capsule(CapsuleType.DRAIN_SESSION)


@dataclass(frozen=True, slots=True)
class MaxData:
    """WT_MAX_DATA: the sender may send ``maximum`` bytes of stream data in the session."""

    maximum: int

    def encode(self) -> bytes:
        """The capsule."""
        return encode_capsule(CapsuleType.MAX_DATA, encode_varint(self.maximum))


@dataclass(frozen=True, slots=True)
class MaxStreams:
    """WT_MAX_STREAMS: the sender may open ``maximum`` streams of that direction in all."""

    bidirectional: bool
    maximum: int

    def encode(self) -> bytes:
        """The capsule."""
        kind = CapsuleType.MAX_STREAMS_BIDI if self.bidirectional else CapsuleType.MAX_STREAMS_UNI
        return encode_capsule(kind, encode_varint(self.maximum))


@dataclass(frozen=True, slots=True)
class DataBlocked:
    """WT_DATA_BLOCKED: the sender wanted to send more than ``maximum`` bytes."""

    maximum: int

    def encode(self) -> bytes:
        """The capsule."""
        return encode_capsule(CapsuleType.DATA_BLOCKED, encode_varint(self.maximum))


@dataclass(frozen=True, slots=True)
class StreamsBlocked:
    """WT_STREAMS_BLOCKED: the sender wanted a stream beyond ``maximum``."""

    bidirectional: bool
    maximum: int

    def encode(self) -> bytes:
        """The capsule."""
        kind = CapsuleType.STREAMS_BLOCKED_BIDI if self.bidirectional else CapsuleType.STREAMS_BLOCKED_UNI
        return encode_capsule(kind, encode_varint(self.maximum))


@dataclass(frozen=True, slots=True)
class UnknownCapsule:
    """A capsule of a type we do not interpret; its payload is skipped, never buffered."""

    type: int
    length: int


Capsule = CloseSession | DrainSession | MaxData | MaxStreams | DataBlocked | StreamsBlocked | UnknownCapsule

#: The capsule types this module decodes (the others are skipped as unknown).
KNOWN_CAPSULE_TYPES: frozenset[int] = frozenset(
    {
        CapsuleType.CLOSE_SESSION,
        CapsuleType.DRAIN_SESSION,
        CapsuleType.MAX_DATA,
        CapsuleType.DATA_BLOCKED,
        CapsuleType.MAX_STREAMS_BIDI,
        CapsuleType.MAX_STREAMS_UNI,
        CapsuleType.STREAMS_BLOCKED_BIDI,
        CapsuleType.STREAMS_BLOCKED_UNI,
    }
)


def decode_capsule(capsule_type: int, payload: bytes) -> Capsule:
    """Interpret the payload of a capsule of a known type (:class:`CapsuleError` if malformed)."""
    if capsule_type == CapsuleType.CLOSE_SESSION:
        if len(payload) < 4:
            raise CapsuleError("CLOSE_WEBTRANSPORT_SESSION shorter than its 32-bit error code")
        if len(payload) - 4 > MAX_CLOSE_REASON:
            raise CapsuleError(
                f"CLOSE_WEBTRANSPORT_SESSION reason longer than {MAX_CLOSE_REASON} bytes", ErrorCode.H3_MESSAGE_ERROR
            )
        try:
            reason = payload[4:].decode()
        except UnicodeDecodeError:
            raise CapsuleError("CLOSE_WEBTRANSPORT_SESSION reason is not UTF-8", ErrorCode.H3_MESSAGE_ERROR) from None
        return CloseSession(int.from_bytes(payload[:4], "big"), reason)
    if capsule_type == CapsuleType.DRAIN_SESSION:
        if payload:
            raise CapsuleError("DRAIN_WEBTRANSPORT_SESSION must be empty")
        return DrainSession()
    value = decode_varint(payload)
    if value is None or value[1] != len(payload):
        raise CapsuleError(f"capsule 0x{capsule_type:x} must carry exactly one varint")
    maximum = value[0]
    if capsule_type == CapsuleType.MAX_DATA:
        return MaxData(maximum)
    if capsule_type == CapsuleType.DATA_BLOCKED:
        return DataBlocked(maximum)
    if capsule_type in (CapsuleType.MAX_STREAMS_BIDI, CapsuleType.MAX_STREAMS_UNI):
        return MaxStreams(capsule_type == CapsuleType.MAX_STREAMS_BIDI, maximum)
    if capsule_type in (CapsuleType.STREAMS_BLOCKED_BIDI, CapsuleType.STREAMS_BLOCKED_UNI):
        return StreamsBlocked(capsule_type == CapsuleType.STREAMS_BLOCKED_BIDI, maximum)
    raise ValueError(f"capsule type 0x{capsule_type:x} is not one we decode")


class CapsuleReader:
    """Splits a CONNECT stream's DATA payload bytes into capsules.

    Known capsules are buffered whole up to ``max_capsule_size`` (beyond it,
    :class:`CapsuleTooLarge`); an unknown capsule is reported as
    :class:`UnknownCapsule` as soon as its header is read and its payload is
    then skipped as it arrives.
    """

    __slots__ = ("_data", "_pos", "_skip", "max_capsule_size")

    def __init__(self, max_capsule_size: int = DEFAULT_MAX_CAPSULE_SIZE) -> None:
        self._data = b""  # bytes taken and not yet parsed start at _pos
        self._pos = 0
        self._skip = 0  # payload bytes of an unknown capsule still to drop
        self.max_capsule_size = max_capsule_size

    @property
    def at_boundary(self) -> bool:
        """True when no capsule is partly read (the stream may end here)."""
        return not self._skip and self._pos == len(self._data)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes that arrived; :meth:`capsules` parses them."""
        rest = self._data[self._pos :]
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._data = rest + bytes(data)
        self._pos = 0

    def capsules(self) -> Iterator[Capsule]:
        """Yield every capsule the bytes taken so far complete.

        Stopping the iteration early loses nothing: the rest stays buffered.
        """
        while not self._skip:
            header = decode_varint(self._data, self._pos)
            if header is None:
                return
            length = decode_varint(self._data, header[1])
            if length is None:
                return
            capsule_type, (size, start) = header[0], length
            if capsule_type not in KNOWN_CAPSULE_TYPES:
                available = len(self._data) - start
                self._pos = start + min(size, available)
                self._skip = size - min(size, available)
                yield UnknownCapsule(capsule_type, size)
                continue
            if size > self.max_capsule_size:
                raise CapsuleTooLarge(capsule_type, size, self.max_capsule_size)
            if len(self._data) - start < size:
                return
            self._pos = start + size
            yield decode_capsule(capsule_type, self._data[start : self._pos])

    def end(self) -> None:
        """The stream ended: raise :class:`CapsuleError` if it ended inside a capsule."""
        if not self.at_boundary:
            raise CapsuleError("the CONNECT stream ended inside a capsule")
