"""QUIC configuration: one immutable, validated object per endpoint."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from pathlib import Path

from .._core import SessionCache, TrustStore

__all__ = ["QuicConfig"]

CONGESTION_CONTROLS = ("newreno", "cubic", "dcubic", "fast", "bbr", "bbr1", "prague", "c4")

_VARINT_MAX = (1 << 62) - 1


def _default_ca_bundle() -> str | None:
    """A CA bundle for verification when none is given: certifi's, else the system's."""
    try:
        import certifi
    except ImportError:
        pass
    else:
        return str(certifi.where())
    for candidate in (
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ):
        if os.path.isfile(candidate):
            return candidate
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuicConfig:
    """Settings of a QUIC endpoint, client or server.

    Every field is keyword-only and checked at construction: a bad value raises
    :class:`ValueError` naming the field.  Sizes are in bytes, times in seconds.
    """

    #: Application protocols offered (client) or accepted (server), in preference order.
    alpn: Sequence[str]
    #: Server certificate chain (PEM).  Required to serve.
    certfile: str | os.PathLike[str] | None = None
    #: Server private key (PEM).  Required to serve.
    keyfile: str | os.PathLike[str] | None = None
    #: CA bundle (PEM) that verifies the peer.  Without it, certifi's or the system's.
    cafile: str | os.PathLike[str] | None = None
    #: Verify the server certificate chain and host name (clients).
    verify: bool = True
    #: Name sent as SNI and checked against the certificate; defaults to the host.
    server_name: str | None = None
    #: Close the connection after this long without traffic (0 = never).
    idle_timeout: float = 30.0
    #: Give up on a handshake after this long.
    handshake_timeout: float = 10.0
    #: Most bytes a connection buffers for the application, all streams together
    #: (QUIC MAX_DATA, raised as the application reads).
    max_data: int = 16 * 1024 * 1024
    #: Per-stream receive window; also the size of each stream's receive buffer.
    max_stream_data: int = 1024 * 1024
    #: Per-stream send buffer: ``send()`` waits while it is full.
    send_buffer_size: int = 1024 * 1024
    #: Per-connection cap on the send buffers of all its streams together: ``send()``
    #: also waits while they hold this much.  At least ``send_buffer_size``.
    connection_send_buffer_size: int = 16 * 1024 * 1024
    #: Bidirectional streams the peer may have open at once.
    max_streams_bidi: int = 128
    #: Unidirectional streams the peer may have open at once.
    max_streams_uni: int = 128
    #: Largest DATAGRAM frame accepted; 0 turns datagrams off.
    max_datagram_frame_size: int = 0
    #: Datagrams queued each way before the oldest is dropped.
    datagram_queue_size: int = 1024
    #: Congestion controller: one of :data:`CONGESTION_CONTROLS`.
    congestion_control: str = "newreno"
    #: Append TLS secrets here (NSS key log format); ``SSLKEYLOGFILE`` is the default.
    keylog_file: str | os.PathLike[str] | None = None
    #: Write one qlog file per connection into this existing directory (slow).
    qlog_dir: str | os.PathLike[str] | None = None
    #: SO_RCVBUF / SO_SNDBUF of the UDP socket (the kernel may clamp it).
    socket_buffer_size: int = 4 * 1024 * 1024
    #: How long a graceful ``aclose()`` waits for sent data to be acknowledged.
    close_timeout: float = 2.0
    #: Connections a server endpoint accepts at once.
    max_connections: int = 1024
    #: Client: resume TLS sessions with servers this config connected to before
    #: (1-RTT resumption: no certificate to send or verify; no early data).  Needs a
    #: single ``alpn`` entry.
    resume_sessions: bool = True
    #: 0-RTT: a resuming client sends its first stream bytes with its first
    #: packet, a round trip early, and a server accepts them.  An attacker can
    #: replay early data, so both sides must opt in; a server marks the streams
    #: that arrived early (``stream.early_data``).  Off: the server refuses early
    #: data (the client sends it again after the handshake) and the client sends none.
    early_data: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.alpn, str) or not isinstance(self.alpn, Sequence):
            raise ValueError("alpn: expected a list of protocol names, e.g. alpn=['h3']")
        alpns = tuple(self.alpn)
        if not alpns:
            raise ValueError("alpn: at least one protocol name is required")
        for name in alpns:
            if not isinstance(name, str) or not 0 < len(name.encode()) < 256:
                raise ValueError(f"alpn: {name!r} is not a protocol name of 1 to 255 bytes")
        object.__setattr__(self, "alpn", alpns)
        for field in ("certfile", "keyfile", "cafile"):
            path = getattr(self, field)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{field}: no such file: {os.fspath(path)!r}")
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile: give both (a server needs its chain and key)")
        if self.qlog_dir is not None and not os.path.isdir(self.qlog_dir):
            raise ValueError(f"qlog_dir: no such directory: {os.fspath(self.qlog_dir)!r}")
        if self.keylog_file is not None:
            parent = Path(self.keylog_file).parent
            if not parent.is_dir():
                raise ValueError(f"keylog_file: directory {str(parent)!r} does not exist")
        if self.server_name is not None and not (isinstance(self.server_name, str) and self.server_name):
            raise ValueError("server_name: expected a non-empty host name")
        self._check_seconds("idle_timeout", allow_zero=True)
        self._check_seconds("handshake_timeout", allow_zero=False)
        self._check_seconds("close_timeout", allow_zero=True)
        self._check_int("max_data", 1, _VARINT_MAX)
        self._check_int("max_stream_data", 1024, 1 << 30)
        self._check_int("send_buffer_size", 1024, 1 << 30)
        self._check_int("connection_send_buffer_size", 1024, 1 << 40)
        if self.connection_send_buffer_size < self.send_buffer_size:
            raise ValueError(
                f"connection_send_buffer_size: {self.connection_send_buffer_size} is below "
                f"send_buffer_size ({self.send_buffer_size}); it caps all streams together"
            )
        self._check_int("max_streams_bidi", 0, 1 << 60)
        self._check_int("max_streams_uni", 0, 1 << 60)
        self._check_int("max_datagram_frame_size", 0, 65535)
        self._check_int("datagram_queue_size", 1, 1 << 20)
        self._check_int("socket_buffer_size", 0, (1 << 31) - 1)
        self._check_int("max_connections", 1, 1 << 20)
        if not isinstance(self.early_data, bool):
            raise TypeError(f"early_data: expected True or False, got {self.early_data!r}")
        if self.congestion_control not in CONGESTION_CONTROLS:
            raise ValueError(
                f"congestion_control: {self.congestion_control!r} is not one of "
                + ", ".join(CONGESTION_CONTROLS)
            )

    def _check_int(self, field: str, low: int, high: int) -> None:
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{field}: expected an integer from {low} to {high}, got {value!r}")

    def _check_seconds(self, field: str, *, allow_zero: bool) -> None:
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{field}: expected a number of seconds, got {value!r}")
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"{field}: expected a positive number of seconds, got {value!r}")

    @functools.cached_property
    def _trust(self) -> TrustStore:
        """The CA bundle that verifies servers, read once per config (certifi's takes ~15 ms)."""
        cafile = self.cafile if self.cafile is not None else _default_ca_bundle()
        if cafile is None:
            raise ValueError(
                "cafile: no CA bundle found to verify the server; install certifi, "
                "pass cafile=..., or pass verify=False to skip verification"
            )
        try:
            return TrustStore(os.fspath(cafile))
        except ValueError as exc:
            raise ValueError(f"cafile: {exc}") from None

    @functools.cached_property
    def _sessions(self) -> SessionCache:
        """Session tickets the servers sent to connections made with this config."""
        return SessionCache()

    def endpoint_options(self, *, is_server: bool) -> dict[str, object]:
        """Keyword arguments for the core ``Endpoint`` of a client or server."""
        keylog = self.keylog_file if self.keylog_file is not None else os.environ.get("SSLKEYLOGFILE")
        verifying = self.verify and not is_server
        return {
            "is_server": is_server,
            "alpns": list(self.alpn),
            "certfile": os.fspath(self.certfile) if is_server and self.certfile else None,
            "keyfile": os.fspath(self.keyfile) if is_server and self.keyfile else None,
            "trust_store": self._trust if verifying else None,
            "verify": verifying,
            "session_cache": self._sessions if self.resume_sessions and not is_server else None,
            "idle_timeout_ms": int(self.idle_timeout * 1000),
            "handshake_timeout_us": int(self.handshake_timeout * 1_000_000),
            "max_data": self.max_data,
            "max_stream_data": self.max_stream_data,
            "send_buffer": self.send_buffer_size,
            "connection_send_buffer": self.connection_send_buffer_size,
            "max_streams_bidi": self.max_streams_bidi,
            "max_streams_uni": self.max_streams_uni,
            "max_datagram_frame_size": self.max_datagram_frame_size,
            "datagram_queue": self.datagram_queue_size,
            "congestion_control": self.congestion_control,
            "keylog_file": os.fspath(keylog) if keylog else None,
            "qlog_dir": os.fspath(self.qlog_dir) if self.qlog_dir is not None else None,
            "socket_buffer_size": self.socket_buffer_size,
            "max_connections": self.max_connections,
            "early_data": self.early_data,
        }
