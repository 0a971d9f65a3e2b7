"""QUIC configuration: one immutable, validated object per endpoint."""

from __future__ import annotations

import dataclasses
import functools
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

import anyio

from .._core import SessionCache, TrustStore

__all__ = ["QuicConfig"]

CONGESTION_CONTROLS = ("newreno", "cubic", "dcubic", "fast", "bbr", "bbr1", "prague", "c4")

#: TLS 1.3 cipher suites ``cipher_suites`` may name, with their IANA IDs.
CIPHER_SUITES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
}

#: QUIC versions ``versions`` may name: version 1 (RFC 9000) and version 2 (RFC 9369).
QUIC_VERSIONS = {"v1": 0x00000001, "v2": 0x6B3343CF}

_VARINT_MAX = (1 << 62) - 1

#: Bounds of every duration in a :class:`QuicConfig` (seconds): picoquic counts in
#: milliseconds or microseconds, and a value that rounds to 0 means "never" there.
MIN_SECONDS = 0.001
MAX_SECONDS = 86400.0


def _encode(text: str, field: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{field}: {text!r} cannot be encoded as UTF-8") from None


def _no_password() -> bytes:
    return b""


def _check_path(field: str, path: object) -> None:
    """A path the C side can take: str or os.PathLike, without a NUL byte."""
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{field}: expected a path (str or os.PathLike), got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{field}: expected a str path, got {path!r}")
    if "\0" in text:
        raise ValueError(f"{field}: the path {text!r} contains a NUL byte")
    _encode(text, field)


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
    :class:`ValueError`, a value of the wrong type :class:`TypeError`, both naming
    the field.  Sizes are in bytes, times in seconds.
    """

    #: Application protocols offered (client) or accepted (server), in preference order.
    alpn: Sequence[str]
    #: Server certificate chain (PEM).  Required to serve.
    certfile: str | os.PathLike[str] | None = None
    #: Server private key (PEM).  Required to serve.
    keyfile: str | os.PathLike[str] | None = None
    #: CA bundle (PEM) that verifies the peer.  Without it, certifi's or the system's.
    cafile: str | os.PathLike[str] | None = None
    #: Verify the server certificate chain and host name (clients): exactly True or
    #: False, anything else is a TypeError (so that a mistyped value cannot turn it off).
    verify: bool = True
    #: Name sent as SNI and checked against the certificate; defaults to the host.
    server_name: str | None = None
    #: Close the connection after this long without traffic: 0 (never) or from
    #: :data:`MIN_SECONDS` (1 ms) to :data:`MAX_SECONDS` (a day).
    idle_timeout: float = 30.0
    #: Give up on a handshake after this long: from 1 ms to a day.
    handshake_timeout: float = 10.0
    #: Most bytes a connection buffers for the application, all streams together
    #: (QUIC MAX_DATA, raised as the application reads).
    max_data: int = 16 * 1024 * 1024
    #: Per-stream receive window to start with (QUIC initial_max_stream_data).
    #: Window autotuning doubles a stream's window, at most once per round trip,
    #: whenever the window rather than the reader limited the transfer (the
    #: application read half a window per round trip, or the sender waited at the
    #: window's edge while the application waited for bytes), up to ``max_stream_window``.
    max_stream_data: int = 1024 * 1024
    #: How far autotuning may grow a stream's receive window: ``None`` means
    #: ``max_data`` (which bounds the memory of all streams together anyway);
    #: ``max_stream_data`` turns autotuning off.  Not below ``max_stream_data``.
    max_stream_window: int | None = None
    #: Per-stream send buffer: ``send()`` waits while it is full.
    send_buffer_size: int = 1024 * 1024
    #: Per-connection cap on the send buffers of all its streams together: ``send()``
    #: also waits while they hold this much.  At least ``send_buffer_size``.
    connection_send_buffer_size: int = 16 * 1024 * 1024
    #: Bidirectional streams the peer may have open at once.
    max_streams_bidi: int = 128
    #: Unidirectional streams the peer may have open at once.
    max_streams_uni: int = 128
    #: Largest DATAGRAM frame accepted (frame type and length included, RFC 9221),
    #: any QUIC varint; 0 turns datagrams off.  ``QuicConnection.max_datagram_size``
    #: says how large a payload that leaves.
    max_datagram_frame_size: int = 0
    #: Datagrams queued each way before the oldest is dropped.
    datagram_queue_size: int = 1024
    #: Congestion controller: one of :data:`CONGESTION_CONTROLS`.
    congestion_control: str = "cubic"
    #: Append TLS secrets here (NSS key log format); ``SSLKEYLOGFILE`` is the default.
    keylog_file: str | os.PathLike[str] | None = None
    #: Write one qlog file per connection into this existing directory (slow).
    qlog_dir: str | os.PathLike[str] | None = None
    #: SO_RCVBUF / SO_SNDBUF of the UDP socket (the kernel may clamp it).
    socket_buffer_size: int = 4 * 1024 * 1024
    #: How long a graceful ``aclose()`` waits for sent data to be acknowledged:
    #: 0 or from 1 ms to a day.
    close_timeout: float = 2.0
    #: Connections a server endpoint accepts at once.
    max_connections: int = 1024
    #: Inline I/O: while the network thread sleeps, the event loop's thread
    #: receives the datagrams that arrive (it waits on the UDP socket itself),
    #: processes them and sends small answers and messages, instead of waking the
    #: network thread for each (about 10 % off a small request/response on
    #: loopback).  The network thread keeps the timers, bursts, handshakes and what
    #: comes while the event loop is busy (docs/guide.md).  Off: every picoquic
    #: call and all I/O stay on the network thread.
    inline_io: bool = True
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
    #: Server: answer every new connection with a Retry, so that the client proves
    #: it owns its address before the server spends work or bytes on it (RFC 9000
    #: 8.1; it costs one round trip).  Clients always follow a server's Retry.
    retry: bool = False
    #: TLS 1.3 cipher suites allowed, in order of preference: names from
    #: :data:`CIPHER_SUITES`.  ``None``: all of them, picoquic's order.  A peer that
    #: offers none of them fails the handshake (TLS handshake_failure).
    cipher_suites: Sequence[str] | None = None
    #: QUIC versions, in order of preference: ``"v1"`` (RFC 9000) and ``"v2"``
    #: (RFC 9369).  A client starts in v1 when it is listed (every server speaks
    #: it), else in the first; when the first is not that version, the client offers
    #: it in the ``version_information`` transport parameter (RFC 9368) and a server
    #: that speaks it moves the connection there without a round trip.  A server
    #: speaks both, and moves to v2 when the client prefers it (this setting is a
    #: client's).
    versions: Sequence[str] = ("v1",)

    def __post_init__(self) -> None:
        if isinstance(self.alpn, str) or not isinstance(self.alpn, Sequence):
            raise TypeError("alpn: expected a list of protocol names, e.g. alpn=['h3']")
        alpns = tuple(self.alpn)
        if not alpns:
            raise ValueError("alpn: at least one protocol name is required")
        for name in alpns:
            if not isinstance(name, str):
                raise TypeError(f"alpn: expected protocol names as str, got {name!r}")
            if not 0 < len(_encode(name, "alpn")) < 256 or "\0" in name:
                raise ValueError(f"alpn: {name!r} is not a protocol name of 1 to 255 bytes without NUL")
        object.__setattr__(self, "alpn", alpns)
        for field in ("certfile", "keyfile", "cafile", "keylog_file", "qlog_dir"):
            _check_path(field, getattr(self, field))
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
        for field in ("verify", "resume_sessions"):
            # Exactly a bool: verify=os.environ.get(...) or verify=None must not fail open.
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"{field}: expected True or False, got {getattr(self, field)!r}")
        if self.server_name is not None:
            if not isinstance(self.server_name, str):
                raise TypeError(f"server_name: expected a host name as str, got {self.server_name!r}")
            _encode(self.server_name, "server_name")
            if not self.server_name or "\0" in self.server_name:
                raise ValueError(f"server_name: expected a non-empty host name without NUL, got {self.server_name!r}")
        self._check_seconds("idle_timeout", allow_zero=True)
        self._check_seconds("handshake_timeout", allow_zero=False)
        self._check_seconds("close_timeout", allow_zero=True)
        self._check_int("max_data", 1, _VARINT_MAX)
        self._check_int("max_stream_data", 1024, 1 << 30)
        if self.max_stream_window is not None:
            self._check_int("max_stream_window", self.max_stream_data, _VARINT_MAX)
        self._check_int("send_buffer_size", 1024, 1 << 30)
        self._check_int("connection_send_buffer_size", 1024, 1 << 40)
        if self.connection_send_buffer_size < self.send_buffer_size:
            raise ValueError(
                f"connection_send_buffer_size: {self.connection_send_buffer_size} is below "
                f"send_buffer_size ({self.send_buffer_size}); it caps all streams together"
            )
        self._check_int("max_streams_bidi", 0, 1 << 60)
        self._check_int("max_streams_uni", 0, 1 << 60)
        self._check_int("max_datagram_frame_size", 0, _VARINT_MAX)
        self._check_int("datagram_queue_size", 1, 1 << 20)
        self._check_int("socket_buffer_size", 0, (1 << 31) - 1)
        self._check_int("max_connections", 1, 1 << 20)
        if not isinstance(self.congestion_control, str):
            raise TypeError(f"congestion_control: expected a str, got {self.congestion_control!r}")
        for name in ("early_data", "retry", "inline_io"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.cipher_suites is not None:
            suites = self._check_names("cipher_suites", self.cipher_suites, CIPHER_SUITES)
            object.__setattr__(self, "cipher_suites", suites)
        object.__setattr__(self, "versions", self._check_names("versions", self.versions, QUIC_VERSIONS))
        if self.congestion_control not in CONGESTION_CONTROLS:
            raise ValueError(
                f"congestion_control: {self.congestion_control!r} is not one of "
                + ", ".join(CONGESTION_CONTROLS)
            )

    @staticmethod
    def _check_names(field: str, value: object, known: dict[str, int]) -> tuple[str, ...]:
        """A non-empty list of distinct names from ``known``, as a tuple."""
        choices = ", ".join(known)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise TypeError(f"{field}: expected a list of names from {choices}, got {value!r}")
        names = tuple(value)
        if not names:
            raise ValueError(f"{field}: at least one of {choices} is required")
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"{field}: expected names as str, got {name!r}")
            if name not in known:
                raise ValueError(f"{field}: {name!r} is not one of {choices}")
        if len(set(names)) != len(names):
            raise ValueError(f"{field}: {names!r} names one twice")
        return names

    def _check_int(self, field: str, low: int, high: int) -> None:
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{field}: expected an integer from {low} to {high}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{field}: expected an integer from {low} to {high}, got {value!r}")

    def _check_seconds(self, field: str, *, allow_zero: bool) -> None:
        """A duration picoquic can hold: from 1 ms (so that it does not round to 0,
        which picoquic reads as "never" or "its default") to a day."""
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{field}: expected a number of seconds, got {value!r}")
        if allow_zero and value == 0:
            return
        if not MIN_SECONDS <= value <= MAX_SECONDS:  # also refuses NaN
            zero = " (or 0 for none)" if allow_zero else ""
            raise ValueError(
                f"{field}: expected from {MIN_SECONDS} to {MAX_SECONDS} seconds{zero}, got {value!r}"
            )

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

    async def _load_trust(self) -> None:
        """Read the CA bundle in a worker thread, not in the event loop (once per config:
        certifi's takes ~15 ms).  A no-op unless this config verifies servers."""
        if self.verify and "_trust" not in self.__dict__:
            await anyio.to_thread.run_sync(lambda: self._trust)

    def _check_certificate_and_key(self) -> None:
        """Check that ``keyfile`` is the key of the first certificate of ``certfile``
        (slow: file reads; call it off the event loop)."""
        certfile, keyfile = os.fspath(self.certfile or ""), os.fspath(self.keyfile or "")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            # An encrypted key gets no password (and no prompt on the terminal).
            context.load_cert_chain(certfile, keyfile, password=_no_password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ValueError(
                    f"certfile and keyfile: the private key in {keyfile!r} does not match the "
                    f"certificate in {certfile!r}; give the key the certificate was made for "
                    "(and list the server's own certificate first in certfile, then its chain)"
                ) from None
            raise ValueError(
                f"certfile and keyfile: cannot use the certificate and key in {certfile!r} and "
                f"{keyfile!r} ({exc.reason or exc}); expected PEM files, the key unencrypted"
            ) from None

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
            "idle_timeout_ms": round(self.idle_timeout * 1000),
            "handshake_timeout_us": round(self.handshake_timeout * 1_000_000),
            "max_data": self.max_data,
            "max_stream_data": self.max_stream_data,
            "max_stream_window": self.max_stream_window or 0,
            "send_buffer": self.send_buffer_size,
            "connection_send_buffer": self.connection_send_buffer_size,
            "max_streams_bidi": self.max_streams_bidi,
            "max_streams_uni": self.max_streams_uni,
            # picoquic holds 32 bits; no packet comes near that, so the clamp changes nothing.
            "max_datagram_frame_size": min(self.max_datagram_frame_size, 0xFFFF_FFFF),
            "datagram_queue": self.datagram_queue_size,
            "congestion_control": self.congestion_control,
            "keylog_file": os.fspath(keylog) if keylog else None,
            "qlog_dir": os.fspath(self.qlog_dir) if self.qlog_dir is not None else None,
            "socket_buffer_size": self.socket_buffer_size,
            "max_connections": self.max_connections,
            "early_data": self.early_data,
            "retry": self.retry and is_server,
            "inline_io": self.inline_io,
            "cipher_suites": [CIPHER_SUITES[name] for name in self.cipher_suites or ()],
            **self._version_options(is_server),
        }

    def _version_options(self, is_server: bool) -> dict[str, int]:
        """The client's first version and the one it offers in version_information
        (0: picoquic's default, none)."""
        if is_server:
            return {"version": 0, "desired_version": 0}
        first = "v1" if "v1" in self.versions else self.versions[0]
        preferred = self.versions[0]
        return {
            "version": QUIC_VERSIONS[first],
            "desired_version": QUIC_VERSIONS[preferred] if preferred != first else 0,
        }
