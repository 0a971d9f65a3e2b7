"""A QUIC connection: streams, datagrams and closing."""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections import deque
from types import TracebackType
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, Union

import anyio

from .._core import (
    ERROR_START_FAILED,
    EV_CLOSE_SENT,
    EV_CLOSED,
    EV_DGRAM,
    EV_EARLY,
    EV_READY,
    EV_TX_ROOM,
    ConnHandle,
    StreamHandle,
)
from .errors import (
    PICOQUIC_ERROR_HANDSHAKE_TIMEOUT,
    PICOQUIC_ERROR_VERSION_NEGOTIATION,
    PICOQUIC_ERROR_IDLE_TIMEOUT,
    PICOQUIC_ERROR_REPEAT_TIMEOUT,
    PICOQUIC_ERROR_STATELESS_RESET,
    ConnectionClosed,
    HandshakeError,
    QuicError,
    check_error_code,
    describe_transport_error,
)
from .._taskgroup import TaskSpawner, serve_each_from_dispatch
from .config import QUIC_VERSIONS
from . import _fast
from .stream import QuicReceiveStream, QuicSendStream, QuicStream

if TYPE_CHECKING:
    from .config import QuicConfig
    from .endpoint import QuicEndpoint

__all__ = ["AnyQuicStream", "QuicConnection", "QuicConnectionStats"]

_Opened = TypeVar("_Opened", QuicStream, QuicSendStream)

logger = logging.getLogger("aiopquic.quic")

#: What ``accept_stream()`` returns: a bidirectional stream or a peer's uni stream.
AnyQuicStream = Union[QuicStream, QuicReceiveStream]
_AnyStream = Union[QuicStream, QuicReceiveStream, QuicSendStream]

#: Application error code sent when the body of ``async with conn`` raises.
ERROR_CODE_ON_EXCEPTION = 1
#: Application error code of a graceful close (``aclose()``) whose ``close_timeout``
#: ran out before the peer acknowledged every byte and FIN: the transfer was cut.
ERROR_CODE_ON_CLOSE_TIMEOUT = 2
#: Longest close reason sent, in UTF-8 bytes: CONNECTION_CLOSE must fit one packet.
MAX_REASON_BYTES = 512

_CERT_HINTS = {
    0x12A: "the server certificate was rejected (bad_certificate): its names do not "
    "include {server_name!r}, or it is malformed; connect with the name in the "
    "certificate, or set server_name=",
    0x130: "the server certificate is not signed by a trusted CA (unknown_ca): pass "
    "cafile= with the CA that issued it, or verify=False to skip verification",
    0x12E: "the server certificate could not be verified (certificate_unknown): usually it "
    "is not signed by a trusted CA; pass cafile= with the CA that issued it, or "
    "verify=False to skip verification",
    0x12D: "the server certificate has expired (certificate_expired)",
    0x12C: "the server certificate was revoked (certificate_revoked)",
    0x128: "the TLS handshake found nothing both sides accept (handshake_failure): "
    "usually no common cipher suite; check cipher_suites= on both sides",
    0x178: "the peer accepts none of the offered ALPN protocols {alpn} "
    "(no_application_protocol): offer one the peer supports",
}


#: The largest DATAGRAM payload one packet carries on any path: picoquic's first
#: packet size (1232 bytes on IPv6, 1252 on IPv4; path MTU discovery may raise it
#: later) less the short header (1 byte, a connection ID of up to 20 bytes, a
#: 4-byte packet number), the AEAD tag (16) and the frame type (the frame that
#: ends a packet goes without its length field).
DATAGRAM_PACKET_ROOM = 1232 - (1 + 20 + 4) - 16 - 1


def _datagram_payload_limit(frame_size: int) -> int:
    """The largest payload of a DATAGRAM frame of at most ``frame_size`` bytes,
    counting its type (1 byte) and its length (a varint of 1, 2, 4 or 8 bytes)."""
    best = 0
    for length_size, largest_length in ((1, 63), (2, (1 << 14) - 1), (4, (1 << 30) - 1), (8, (1 << 62) - 1)):
        best = max(best, min(largest_length, frame_size - 1 - length_size))
    return best


_DATAGRAMS_OFF = (
    "datagrams are off on this connection: set max_datagram_frame_size in the QuicConfig of both peers"
)


#: Why our verification refused the server's chain (OpenSSL's X509_V_ERR_* codes,
#: -1 from the core for a chain that does not start with the server's own
#: certificate), where that says more than the TLS alert sent for it.
_VERIFY_HINTS = {
    9: "the server certificate is not yet valid (its notBefore date is in the future): "
    "check the clocks of the server and of this machine",
    10: "the server certificate has expired (certificate_expired): the server needs a new one",
    26: "the server certificate is not allowed for server authentication (its "
    "extendedKeyUsage lacks serverAuth): the server needs a certificate issued for TLS servers",
    -1: "the server sent its certificate chain out of order (a CA certificate first): "
    "its certfile must start with the server's own certificate, then the intermediates",
}


@dataclasses.dataclass(frozen=True)
class QuicConnectionStats:
    """Counters of one connection, as seen by the application."""

    bytes_sent: int
    bytes_received: int
    datagrams_sent: int
    datagrams_received: int
    datagrams_dropped_on_send: int
    datagrams_dropped_on_receive: int
    streams_opened: int
    streams_accepted: int
    #: Smoothed round-trip time, and the smallest seen, in seconds (0 before the handshake).
    rtt: float = 0.0
    min_rtt: float = 0.0
    #: Congestion window and bytes sent but not yet acknowledged or lost.
    congestion_window: int = 0
    bytes_in_flight: int = 0
    #: Packets sent, declared lost, and retransmitted (picoquic's counts).
    packets_sent: int = 0
    packets_lost: int = 0
    packets_retransmitted: int = 0
    #: Times the peer's address changed after the handshake (a migration or a NAT rebinding).
    address_changes: int = 0
    #: The largest receive window granted to one of its streams so far:
    #: ``max_stream_data``, more once window autotuning has grown one.
    stream_window: int = 0
    #: The negotiated QUIC version (1 = RFC 9000) and TLS cipher suite.
    quic_version: int = 0
    cipher_suite: str = ""


class QuicConnection:
    """An established QUIC connection.

    Use it as ``async with conn:`` so it is closed however the block ends.
    Iterate it (``async for stream in conn``) to accept the peer's streams.
    """

    def __init__(
        self,
        handle: ConnHandle,
        endpoint: QuicEndpoint,
        config: QuicConfig,
        *,
        server_name: str | None = None,
        peer_label: str = "the peer",
    ) -> None:
        self._h = handle
        self._endpoint = endpoint
        self._wake_soon = endpoint.wake_soon  # after every corked command (see QuicEndpoint.wake_soon)
        self._wake_now = endpoint.wake_now  # after a message's last one (see QuicEndpoint.wake_now)
        self._config = config
        self._server_name = server_name  # a client's: what the certificate must match
        self._peer_label = peer_label  # who we connected to, for error messages
        handle.owner = self
        # Weak: a stream nobody references any more is closed by its __del__, which
        # takes it out of here (plain weak references, cheaper than a WeakValueDictionary).
        self._streams: dict[int, weakref.ref[_AnyStream]] = {}
        self._incoming: deque[AnyQuicStream] = deque()
        #: While serve_streams runs in its own group: starts a new stream's handler.
        self._stream_starter: Callable[[AnyQuicStream], bool] | None = None
        self._ll = endpoint.lowlevel
        self._accept_spot = self._ll.spot()
        self._datagram_spot = self._ll.spot()
        self._handshake_done = anyio.Event()
        #: Set at the handshake's end, or (client, early_data) once 0-RTT data can go.
        self._usable = anyio.Event()
        self._early = False
        self._close_sent = anyio.Event()
        self._closed = anyio.Event()
        self._ready = False
        self._closed_exc: ConnectionClosed | None = None
        self._closing_locally = False
        self._local_close_code = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._datagrams_sent = 0
        self._datagrams_received = 0
        self._streams_opened = 0
        self._streams_accepted = 0

    # -- properties -----------------------------------------------------

    @property
    def alpn_protocol(self) -> str | None:
        """The application protocol both sides agreed on."""
        return self._h.alpn

    @property
    def session_resumed(self) -> bool:
        """True if the handshake resumed an earlier TLS session (see
        ``QuicConfig.resume_sessions``): the server's certificate was checked by
        the connection that got the ticket, not again."""
        return self._h.resumed

    @property
    def local_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of our end."""
        return self._h.local_address

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the peer, now: it follows a migration or a NAT rebinding
        (``stats.address_changes`` counts them)."""
        return self._h.peer_address

    @property
    def is_client(self) -> bool:
        """True on the side that opened the connection."""
        return self._h.is_client

    @property
    def max_datagram_size(self) -> int:
        """Largest datagram payload :meth:`send_datagram` takes (0 = datagrams off).

        The peer's ``max_datagram_frame_size`` counts the whole DATAGRAM frame (RFC
        9221: its type and length too), so the payload is a few bytes less; and it
        is at most what fits one packet on any path.
        """
        return min(_datagram_payload_limit(self._h.max_datagram_size), DATAGRAM_PACKET_ROOM)

    @property
    def idle_timeout(self) -> float:
        """The idle timeout in force: the smaller of both peers' (0 = none)."""
        ours, theirs = self._config.idle_timeout, self._h.peer_idle_timeout
        return min(ours, theirs) if ours and theirs else ours or theirs

    @property
    def stats(self) -> QuicConnectionStats:
        """Counters of bytes, datagrams and streams so far, and the path as picoquic
        sees it (updated at the handshake, whenever the RTT moves by 1 ms or the
        pacing rate by 1 MB/s, and at the close)."""
        dropped_send, dropped_receive = self._h.datagrams_dropped
        path = self._h.path_stats
        return QuicConnectionStats(
            rtt=path["rtt_us"] / 1e6,
            min_rtt=path["rtt_min_us"] / 1e6,
            congestion_window=path["cwnd"],
            bytes_in_flight=path["bytes_in_flight"],
            packets_sent=path["packets_sent"],
            packets_lost=path["packets_lost"],
            packets_retransmitted=path["packets_retransmitted"],
            address_changes=path["address_changes"],
            stream_window=path["stream_window"],
            quic_version=path["version"],
            cipher_suite=path["cipher"],
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            datagrams_sent=self._datagrams_sent,
            datagrams_received=self._datagrams_received,
            datagrams_dropped_on_send=dropped_send,
            datagrams_dropped_on_receive=dropped_receive,
            streams_opened=self._streams_opened,
            streams_accepted=self._streams_accepted,
        )

    @property
    def closed(self) -> bool:
        """True once the connection is closed or closing, by either side."""
        return self._closed_exc is not None or self._closing_locally

    def __repr__(self) -> str:
        side = "client" if self.is_client else "server"
        state = "closed" if self.closed else "open"
        return f"<QuicConnection {side} {self.remote_address} {state}>"

    # -- streams --------------------------------------------------------

    async def open_stream(self) -> QuicStream:
        """Open a bidirectional stream (the peer learns of it with the first byte).

        It never blocks, and it is a cancellation point but does not yield to
        other tasks: the first ``send()`` on the new stream does.
        """
        await self._ll.checkpoint_if_cancelled()
        return self._register_opened(QuicStream(self._open_handle(uni=False), self))

    async def open_uni_stream(self) -> QuicSendStream:
        """Open a unidirectional (send-only) stream; like :meth:`open_stream`."""
        await self._ll.checkpoint_if_cancelled()
        return self._register_opened(QuicSendStream(self._open_handle(uni=True), self))

    def _open_handle(self, *, uni: bool) -> StreamHandle:
        self._raise_if_closed()
        return self._h.open_stream(uni)

    def _register_opened(self, stream: _Opened) -> _Opened:
        self._streams[stream.stream_id] = weakref.ref(stream)
        self._streams_opened += 1
        return stream

    async def accept_stream(self) -> AnyQuicStream:
        """Wait for the next stream the peer opens.

        Returns a :class:`QuicStream` (bidirectional) or a :class:`QuicReceiveStream`
        (the peer's unidirectional stream). Raises :class:`ConnectionClosed` once
        the connection is closed. A cancelled call loses no stream.
        """
        ll = self._ll
        yielded, checkpoint = ll.first_checkpoint(bool(self._incoming))
        await checkpoint
        while not self._incoming:
            self._raise_if_closed()
            if self._accept_spot.occupied:
                raise anyio.BusyResourceError("accepting streams from")
            self._check_running()
            await self._accept_spot.wait()
            yielded = True
        stream = self._incoming.popleft()
        self._streams_accepted += 1
        if not yielded:  # every call yields once, as trio expects
            await ll.cancel_shielded_checkpoint()
        return stream

    async def serve_streams(
        self,
        handler: Callable[[AnyQuicStream], Coroutine[Any, Any, object]],
        task_group: TaskSpawner | None = None,
    ) -> None:
        """Run ``handler(stream)`` in a task of its own for each stream the peer
        opens, until the connection closes; as anyio's ``Listener.serve``.

        The handler owns its stream (``async with stream``, or read to the end
        and finish it).  Without ``task_group``, the handlers run in a group
        this call opens and waits for: it returns once the connection is closed
        cleanly and every handler has returned, raises :class:`ConnectionClosed`
        if the peer closed it with an error, and an exception group if a handler
        raised (the other handlers are then cancelled).  That group is the
        backend's own (a trio nursery, an ``asyncio.TaskGroup`` inside an anyio
        cancel scope): starting a task costs a third of what anyio's
        ``start_soon`` does, with the same cancellation and errors.  Each handler
        runs in a copy of the context this was called in.
        """
        await serve_each_from_dispatch(self, handler, self._install_stream_starter, task_group)

    def _install_stream_starter(self, start: Callable[[AnyQuicStream], bool] | None) -> None:
        self._stream_starter = start

    def __aiter__(self) -> QuicConnection:
        return self

    async def __anext__(self) -> AnyQuicStream:
        """The next incoming stream; iteration ends when the connection closes cleanly."""
        try:
            return await self.accept_stream()
        except (ConnectionClosed, anyio.ClosedResourceError) as exc:
            if isinstance(exc, ConnectionClosed) and (exc.error_code or exc.transport_error):
                raise
            raise StopAsyncIteration from None

    # -- keys -----------------------------------------------------------

    def update_keys(self) -> None:
        """Start a key update (RFC 9001 section 6): the packets we send from now on
        use fresh 1-RTT keys, and the peer answers with its own.

        It returns at once; the network thread does it.  picoquic ignores the request
        while the previous key update is not yet acknowledged (one at a time, as the
        RFC requires).  Raises like the other operations once the connection is closed.
        """
        self._raise_if_closed()
        self._h.update_keys()

    # -- datagrams ------------------------------------------------------

    async def send_datagram(self, data: bytes | bytearray | memoryview) -> None:
        """Send an unreliable datagram.

        Never blocks: when the send queue is full the oldest queued datagram is
        dropped (and counted in :attr:`stats`). Raises :class:`ValueError` if
        ``data`` is larger than :attr:`max_datagram_size`.
        """
        await self._ll.checkpoint()
        self._raise_if_closed()
        limit = self.max_datagram_size
        if limit == 0:
            raise QuicError(_DATAGRAMS_OFF)
        if len(data) > limit:
            raise ValueError(f"datagram of {len(data)} bytes exceeds max_datagram_size ({limit})")
        self._h.send_datagram(bytes(data))
        self._wake_now()  # a whole message: at once if it is the turn's only one
        self._datagrams_sent += 1

    async def receive_datagram(self) -> bytes:
        """Wait for the next datagram from the peer.

        Raises :class:`QuicError` at once if our config turns datagrams off
        (``max_datagram_frame_size=0``): none could ever come.
        """
        ll = self._ll
        # The queue cannot be looked at without taking from it: count a datagram as
        # ready (if none is, the call waits after its first yield).
        yielded, checkpoint = ll.first_checkpoint(True)
        await checkpoint
        if self._config.max_datagram_frame_size == 0:
            raise QuicError(_DATAGRAMS_OFF)
        while True:
            data = self._h.receive_datagram()
            if data is not None:
                self._datagrams_received += 1
                if not yielded:
                    await ll.cancel_shielded_checkpoint()
                return data
            self._raise_if_closed()
            if self._datagram_spot.occupied:
                raise anyio.BusyResourceError("receiving datagrams from")
            self._check_running()
            await self._datagram_spot.wait()
            yielded = True

    # -- closing --------------------------------------------------------

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close now: CONNECTION_CLOSE with ``error_code`` and ``reason`` goes out at once.

        Bytes not yet sent are dropped. Use :meth:`aclose` to let them go first.
        ``error_code`` is an application error code (0 to 2**62 - 1); a ``reason``
        longer than 512 UTF-8 bytes is cut to that (the frame must fit a packet).
        Bad arguments raise before anything changes.
        """
        self._start_close(error_code, reason, linger=0.0)

    async def aclose(self, error_code: int = 0, reason: str = "") -> None:
        """Close gracefully: wait (up to ``config.close_timeout``) for sent data to be
        acknowledged, then send CONNECTION_CLOSE with ``error_code`` (default 0) and
        ``reason``, and wait until it is out.

        If the time runs out first, the close carries
        :data:`ERROR_CODE_ON_CLOSE_TIMEOUT` instead, so that the peer does not
        take the cut transfer for a clean end, and a warning is logged here.
        """
        self._start_close(error_code, reason, linger=self._config.close_timeout)
        endpoint = self._endpoint
        if endpoint.owns_connection and not endpoint.dispatching:
            # Awaited but never entered (or already left): nobody dispatches its
            # events, so close its endpoint, which waits for the close itself.
            await endpoint.aclose()
            return
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._config.close_timeout + 1.0):
                await self._close_sent.wait()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, by either side."""
        await self._closed.wait()

    async def __aenter__(self) -> QuicConnection:
        await self._endpoint.enter_connection()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, (anyio.get_cancelled_exc_class(), QuicError)):
            self.close(ERROR_CODE_ON_EXCEPTION, f"{type(exc).__name__} in the application")
        if self._endpoint.owns_connection:
            # The endpoint goes with the connection: it waits for the close itself.
            self._start_close(0, "", linger=self._config.close_timeout)
            await self._endpoint.aclose()
        else:
            await self.aclose()
            self._endpoint.forget(self)

    def _start_close(self, error_code: int, reason: str, *, linger: float) -> None:
        check_error_code(error_code)
        if not isinstance(reason, str):
            raise TypeError(f"reason: expected a str, got {type(reason).__name__}")
        if self._closing_locally or self._closed_exc is not None:
            return
        encoded = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore").encode()  # whole characters
        self._h.close(error_code, encoded, linger, ERROR_CODE_ON_CLOSE_TIMEOUT)
        self._closing_locally = True
        self._local_close_code = error_code
        self._wake_all()

    def _raise_if_closed(self) -> None:
        if self._closing_locally:
            raise anyio.ClosedResourceError("this connection was closed by us")
        closed = self._closed_exc
        if closed is not None:
            # A fresh exception per raise: one shared object would grow its
            # traceback with every raise and tie together everything it passed.
            raise closed.copy() from None

    def _check_running(self) -> None:
        """Before a wait: only the dispatcher can end it; say so if nobody runs it."""
        if not self._endpoint.dispatching:
            raise RuntimeError(
                "this connection is not running: use it inside `async with conn:` "
                "(or `async with open_quic_connection(...) as conn:`)"
            )

    # -- events from the endpoint's dispatcher ---------------------------

    def _on_event(self, flags: int) -> None:
        if flags & EV_EARLY:
            self._early = True
            self._usable.set()
        if flags & EV_READY:
            self._ready = True
            self._handshake_done.set()
            self._usable.set()
        if flags & EV_DGRAM:
            self._datagram_spot.wake()
        if flags & EV_TX_ROOM:  # the connection's send cap has room again
            for stream in self._live_streams():
                if stream._tx is not None:
                    stream._tx.wake()
        if flags & EV_CLOSE_SENT:
            if self._h.close_truncated:
                logger.warning(
                    "%r: close_timeout (%s s) ran out with sent data not yet acknowledged; "
                    "closed with error code %d (ERROR_CODE_ON_CLOSE_TIMEOUT) instead of 0",
                    self, self._config.close_timeout, ERROR_CODE_ON_CLOSE_TIMEOUT,
                )
            self._close_sent.set()
            self._closed.set()
        if flags & EV_CLOSED:
            self._on_closed()

    def _on_new_stream(self, handle: StreamHandle) -> AnyQuicStream:
        """The peer opened a stream (EV_NEW): register it for accept_stream()."""
        new: AnyQuicStream
        if handle.stream_id & 2:
            new = QuicReceiveStream(handle, self)
        else:
            new = QuicStream(handle, self)
        new._arrived = True
        self._streams[handle.stream_id] = weakref.ref(new)
        start = self._stream_starter
        if start is not None and not self._incoming and start(new):
            self._streams_accepted += 1
            return new
        self._incoming.append(new)
        self._accept_spot.wake()
        return new

    def _on_closed(self) -> None:
        if self._closed_exc is None:
            self._closed_exc = self._build_close_error()
            if self._closing_locally:
                logger.debug("%r closed", self)
            else:
                logger.debug("%r closed: %s", self, self._closed_exc)
        self._handshake_done.set()
        self._usable.set()
        self._close_sent.set()
        self._closed.set()
        self._wake_all()

    def _on_thread_failed(self, error: ConnectionClosed) -> None:
        if self._closed_exc is None:
            self._closed_exc = error
        self._on_closed()

    def _wake_all(self) -> None:
        self._accept_spot.wake()
        self._datagram_spot.wake()
        for stream in self._live_streams():
            stream._on_connection_closed()

    def _live_streams(self) -> list[_AnyStream]:
        """The streams not forgotten yet, as a list (waking one may change the registry)."""
        return [stream for ref in list(self._streams.values()) if (stream := ref()) is not None]

    #: A stream finished both ways leaves the registry and is released (in Cython).
    _forget_if_finished = _fast.connection_forget_if_finished

    def _build_close_error(self) -> ConnectionClosed:
        local, remote, local_app, remote_app, reason = self._h.close_info
        if self._closing_locally:
            return ConnectionClosed(
                f"connection closed by us (error code {self._local_close_code})",
                error_code=self._local_close_code,
            )
        hint_args = {"server_name": self._server_name, "alpn": list(self._config.alpn)}
        if not self._ready:
            if local == ERROR_START_FAILED:
                return HandshakeError(
                    "picoquic could not start the connection: is the CA file a valid PEM bundle?",
                    transport_error=local,
                )
            if local in (PICOQUIC_ERROR_HANDSHAKE_TIMEOUT, PICOQUIC_ERROR_IDLE_TIMEOUT):
                return HandshakeError(
                    f"handshake timed out: no answer from {self._peer_label} "
                    f"within {self._config.handshake_timeout} s (is a QUIC server listening there?)",
                    transport_error=local,
                )
            if PICOQUIC_ERROR_VERSION_NEGOTIATION in (local, remote):
                # picoquic files the server's Version Negotiation packet as a remote
                # error, but the server refused nothing: we offered no version it speaks.
                offered = ", ".join(self._config.versions)
                others = [v for v in QUIC_VERSIONS if v not in self._config.versions]
                advice = f"add {', '.join(others)} to versions" if others else "it speaks no version we know"
                return HandshakeError(
                    f"handshake failed: {self._peer_label} speaks none of the QUIC versions we "
                    f"offered ({offered}) and answered with Version Negotiation; {advice}",
                    transport_error=PICOQUIC_ERROR_VERSION_NEGOTIATION,
                )
            code, by_peer = (remote, True) if remote else (local, False)
            hint = None if by_peer else _VERIFY_HINTS.get(self._h.verify_error)
            hint = hint or _CERT_HINTS.get(code)
            detail = hint.format(**hint_args) if hint else describe_transport_error(code)
            who = "the peer refused the handshake" if by_peer else "handshake failed"
            return HandshakeError(f"{who}: {detail}", transport_error=code, by_peer=by_peer)
        if local in (PICOQUIC_ERROR_IDLE_TIMEOUT, PICOQUIC_ERROR_HANDSHAKE_TIMEOUT):
            return ConnectionClosed(
                f"connection timed out: nothing heard from the peer for {self.idle_timeout} s",
                transport_error=local,
            )
        if local == PICOQUIC_ERROR_REPEAT_TIMEOUT:
            return ConnectionClosed(
                f"connection timed out: the peer acknowledged none of our data for {self.idle_timeout} s "
                "although it kept sending (it is stuck or misbehaving)",
                transport_error=local,
            )
        if remote == PICOQUIC_ERROR_STATELESS_RESET:
            return ConnectionClosed(
                "the peer reset the connection (stateless reset): it lost the connection's state",
                transport_error=remote,
                by_peer=True,
            )
        if remote:
            return ConnectionClosed(
                f"the peer closed the connection with {describe_transport_error(remote)}"
                + (f": {reason}" if reason else ""),
                transport_error=remote,
                reason=reason,
                by_peer=True,
            )
        if local:
            return ConnectionClosed(
                f"connection failed: {describe_transport_error(local)}",
                transport_error=local,
            )
        return ConnectionClosed(
            f"the peer closed the connection (error code {remote_app}"
            + (f", reason {reason!r})" if reason else ")"),
            error_code=remote_app,
            reason=reason,
            by_peer=True,
        )
