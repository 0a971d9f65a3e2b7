"""QUIC on anyio: connections, streams, datagrams, a task-group based server."""

from .client import QuicClient, open_quic_connection
from .config import QuicConfig
from .connection import AnyQuicStream, QuicConnection, QuicConnectionStats
from .errors import ConnectionClosed, HandshakeError, QuicError, StreamReset
from .server import QuicListener, serve_quic
from .stream import QuicReceiveStream, QuicSendStream, QuicStream

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
