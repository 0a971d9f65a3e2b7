"""The first bytes of WebTransport streams, and session ids.

A bidirectional WebTransport stream starts with the signal 0x41 then the
session id; a unidirectional one with the stream type 0x54 then the session
id (both varints). The session id is the CONNECT stream's id, so it is
always a client-initiated bidirectional stream id (a multiple of 4).

:class:`StreamHeaderReader` looks at the first bytes of a peer's stream, as
they arrive, and tells the driver whether the stream is WebTransport's (and
for which session) or belongs to HTTP/3, handing back every byte it held.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..h3._frames import ErrorCode, decode_varint, encode_varint
from ._codes import BIDI_SIGNAL, UNI_STREAM_TYPE


class StreamHeaderError(Exception):
    """A WebTransport stream header the peer got wrong.

    ``error_code`` is the HTTP/3 code to use; ``connection_error`` says
    whether it closes the whole connection (a session id that cannot be one,
    H3_ID_ERROR) or only concerns this stream.
    """

    def __init__(self, error_code: int, reason: str, *, connection_error: bool) -> None:
        super().__init__(reason)
        self.error_code = error_code
        self.reason = reason
        self.connection_error = connection_error


def check_session_id(session_id: int) -> None:
    """Raise :class:`StreamHeaderError` (H3_ID_ERROR) unless ``session_id`` can be a session's."""
    if session_id % 4 != 0:
        raise StreamHeaderError(
            ErrorCode.H3_ID_ERROR,
            f"session id {session_id} is not a client-initiated bidirectional stream",
            connection_error=True,
        )


def bidi_stream_header(session_id: int) -> bytes:
    """What we write first on a bidirectional stream we open for ``session_id``."""
    check_session_id(session_id)
    return encode_varint(BIDI_SIGNAL) + encode_varint(session_id)


def uni_stream_header(session_id: int) -> bytes:
    """What we write first on a unidirectional stream we open for ``session_id``."""
    check_session_id(session_id)
    return encode_varint(UNI_STREAM_TYPE) + encode_varint(session_id)


@dataclass(frozen=True, slots=True)
class SessionStreamHeader:
    """The stream belongs to session ``session_id``; ``data`` is the first body bytes."""

    session_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OtherStream:
    """Not a WebTransport stream: feed ``data`` (every byte so far) to HTTP/3."""

    data: bytes


class StreamHeaderReader:
    """Reads the header of one peer stream, bytes arriving in any split.

    ``unidirectional`` picks the marker: the stream type 0x54 on a
    unidirectional stream, the signal 0x41 on a bidirectional one.
    """

    __slots__ = ("_buffer", "_marker")

    def __init__(self, *, unidirectional: bool) -> None:
        self._marker = UNI_STREAM_TYPE if unidirectional else BIDI_SIGNAL
        self._buffer = bytearray()

    def feed(self, data: bytes, fin: bool = False) -> SessionStreamHeader | OtherStream | None:
        """Take the next bytes; None while the header is incomplete.

        A stream that ends inside its first varint is :class:`OtherStream`
        (HTTP/3 judges it); one that ends between the marker and a complete
        session id raises :class:`StreamHeaderError` (H3_FRAME_ERROR, this
        stream only).
        """
        self._buffer += data
        first = decode_varint(self._buffer)
        if first is None:
            return OtherStream(bytes(self._buffer)) if fin else None
        if first[0] != self._marker:
            return OtherStream(bytes(self._buffer))
        session = decode_varint(self._buffer, first[1])
        if session is None:
            if fin:
                raise StreamHeaderError(
                    ErrorCode.H3_FRAME_ERROR, "the stream ended inside its WebTransport header", connection_error=False
                )
            return None
        check_session_id(session[0])
        return SessionStreamHeader(session[0], bytes(self._buffer[session[1] :]))
