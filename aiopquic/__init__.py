"""aiopquic: QUIC for trio and asyncio (through anyio), with picoquic in its own thread."""

from .quic import (
    AnyQuicStream,
    ConnectionClosed,
    HandshakeError,
    QuicClient,
    QuicConfig,
    QuicConnection,
    QuicConnectionStats,
    QuicError,
    QuicListener,
    QuicReceiveStream,
    QuicSendStream,
    QuicStream,
    StreamReset,
    open_quic_connection,
    serve_quic,
)

__version__ = "0.1.0"

__all__ = [
    "AnyQuicStream",
    "ConnectionClosed",
    "HandshakeError",
    "QuicClient",
    "QuicConfig",
    "QuicConnection",
    "QuicConnectionStats",
    "QuicError",
    "QuicListener",
    "QuicReceiveStream",
    "QuicSendStream",
    "QuicStream",
    "StreamReset",
    "open_quic_connection",
    "serve_quic",
]
