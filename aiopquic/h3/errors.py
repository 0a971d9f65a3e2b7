"""Exceptions raised by the HTTP/3 layer."""

from __future__ import annotations

from ..quic.errors import QuicError

__all__ = ["H3Error", "H3ProtocolError", "RequestRejected"]


class H3Error(QuicError):
    """Base class of the errors the HTTP/3 layer raises about HTTP/3 itself."""


class H3ProtocolError(H3Error):
    """The peer broke HTTP/3: a malformed response, a bad frame, a QPACK failure.

    ``error_code`` is the HTTP/3 error code that went to the peer (a stream
    reset for a malformed message, a connection close for the rest).
    """

    def __init__(self, message: str, *, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class RequestRejected(H3Error):
    """The server did not process this request (GOAWAY or H3_REQUEST_REJECTED):
    it is safe to send it again on a new connection."""
