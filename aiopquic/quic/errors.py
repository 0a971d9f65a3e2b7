"""Exceptions raised by the QUIC layer.

``ConnectionClosed`` and ``StreamReset`` are also :class:`anyio.BrokenResourceError`
so code written against anyio's stream ABCs handles them without knowing QUIC.
"""

from __future__ import annotations

import anyio

__all__ = [
    "ConnectionClosed",
    "HandshakeError",
    "QuicError",
    "StreamReset",
]

# TLS alerts travel as CRYPTO_ERROR (0x100 | alert).
_TLS_ALERTS = {
    0x28: "handshake_failure",
    0x2A: "bad_certificate",
    0x2B: "unsupported_certificate",
    0x2C: "certificate_revoked",
    0x2D: "certificate_expired",
    0x2E: "certificate_unknown",
    0x2F: "illegal_parameter",
    0x30: "unknown_ca",
    0x50: "internal_error",
    0x6D: "missing_extension",
    0x78: "no_application_protocol",
}

_TRANSPORT_ERRORS = {
    0x0: "NO_ERROR",
    0x1: "INTERNAL_ERROR",
    0x2: "CONNECTION_REFUSED",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "STREAM_LIMIT_ERROR",
    0x5: "STREAM_STATE_ERROR",
    0x6: "FINAL_SIZE_ERROR",
    0x7: "FRAME_ENCODING_ERROR",
    0x8: "TRANSPORT_PARAMETER_ERROR",
    0x9: "CONNECTION_ID_LIMIT_ERROR",
    0xA: "PROTOCOL_VIOLATION",
    0xB: "INVALID_TOKEN",
    0xC: "APPLICATION_ERROR",
    0xD: "CRYPTO_BUFFER_EXCEEDED",
    0xE: "KEY_UPDATE_ERROR",
    0xF: "AEAD_LIMIT_REACHED",
    0x10: "NO_VIABLE_PATH",
}

# picoquic-internal codes (never on the wire).
PICOQUIC_ERROR_CLASS = 0x400
PICOQUIC_ERROR_STATELESS_RESET = PICOQUIC_ERROR_CLASS + 30
PICOQUIC_ERROR_IDLE_TIMEOUT = PICOQUIC_ERROR_CLASS + 51
#: Our data went unacknowledged for the idle timeout while the peer kept sending
#: (picoquic patch 0007).
PICOQUIC_ERROR_REPEAT_TIMEOUT = PICOQUIC_ERROR_CLASS + 52
PICOQUIC_ERROR_HANDSHAKE_TIMEOUT = PICOQUIC_ERROR_CLASS + 53
#: The server answered with Version Negotiation: it speaks none of our versions.
#: picoquic reports it as the peer's error, though it is our own failure.
PICOQUIC_ERROR_VERSION_NEGOTIATION = PICOQUIC_ERROR_CLASS + 55


def check_error_code(error_code: int) -> None:
    """Raise unless ``error_code`` is a QUIC application error code (a varint)."""
    if isinstance(error_code, bool) or not isinstance(error_code, int):
        raise TypeError(f"error_code: expected an int, got {type(error_code).__name__}")
    if not 0 <= error_code < 1 << 62:
        raise ValueError(f"error_code: expected 0 to 2**62 - 1, got {error_code}")


def describe_transport_error(code: int) -> str:
    """Return a readable name for a QUIC transport error code."""
    if 0x100 <= code <= 0x1FF:
        alert = code & 0xFF
        return f"TLS alert {_TLS_ALERTS.get(alert, hex(alert))} (0x{code:x})"
    if code == PICOQUIC_ERROR_IDLE_TIMEOUT:
        return "idle timeout"
    if code == PICOQUIC_ERROR_HANDSHAKE_TIMEOUT:
        return "handshake timeout"
    if code == PICOQUIC_ERROR_REPEAT_TIMEOUT:
        return "timeout waiting for acknowledgements"
    if code == PICOQUIC_ERROR_STATELESS_RESET:
        return "stateless reset"
    if code == PICOQUIC_ERROR_VERSION_NEGOTIATION:
        return "no QUIC version in common (version negotiation)"
    name = _TRANSPORT_ERRORS.get(code)
    return f"{name} (0x{code:x})" if name else f"error 0x{code:x}"


class QuicError(Exception):
    """Base class of every error aiopquic raises about QUIC itself."""


class ConnectionClosed(QuicError, anyio.BrokenResourceError):
    """The connection is closed; nothing more can be sent or received on it.

    ``error_code`` is the application error code when the close was an
    application close, else the transport error code; ``by_peer`` says who
    closed it and ``reason`` carries the peer's reason phrase.
    """

    def __init__(
        self,
        message: str,
        *,
        error_code: int = 0,
        reason: str = "",
        by_peer: bool = False,
        transport_error: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.reason = reason
        self.by_peer = by_peer
        self.transport_error = transport_error

    def copy(self) -> ConnectionClosed:
        """A new exception of the same kind saying the same (no traceback yet)."""
        return type(self)(
            str(self),
            error_code=self.error_code,
            reason=self.reason,
            by_peer=self.by_peer,
            transport_error=self.transport_error,
        )


class HandshakeError(ConnectionClosed):
    """The handshake failed: certificate verification, ALPN mismatch, no common
    QUIC version or cipher suite, or timeout."""


class StreamReset(QuicError, anyio.BrokenResourceError):
    """The peer reset this stream (RESET_STREAM), or asked us to stop sending on it.

    ``error_code`` is the peer's application error code.
    """

    def __init__(self, message: str, *, error_code: int, stream_id: int) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.stream_id = stream_id
