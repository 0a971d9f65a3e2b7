"""QUIC streams as anyio byte streams.

A bidirectional stream is a :class:`QuicStream` (an :class:`anyio.abc.ByteStream`);
a unidirectional one is a :class:`QuicSendStream` or a :class:`QuicReceiveStream`,
depending on which side opened it.  Bytes move through two rings shared with the
network thread: ``send()`` copies into one, ``receive()`` copies out of the other.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, ByteStream

from .._core import StreamHandle
from . import _fast
from ._fast import RECEIVE_ENDS as _RECEIVE_ENDS
from ._fast import RECEIVE_TAKES as _RECEIVE_TAKES
from ._fast import ReceiveHalf as _ReceiveHalf
from ._fast import SendHalf as _SendHalf
from .errors import StreamReset

if TYPE_CHECKING:
    from .connection import QuicConnection

__all__ = ["QuicReceiveStream", "QuicSendStream", "QuicStream"]

DEFAULT_RECEIVE_SIZE = 65536


class _StreamBase:
    """What every stream kind shares: identity, event routing, bookkeeping."""

    _rx: _ReceiveHalf | None
    _tx: _SendHalf | None

    def __init__(self, handle: StreamHandle, conn: QuicConnection) -> None:
        self._handle = handle
        self._conn = conn
        self._aborted: anyio.Event | None = None
        self._wrote = False  # bytes sent since this stream's last wait to receive

    @property
    def stream_id(self) -> int:
        """The QUIC stream ID."""
        return self._handle.stream_id

    @property
    def connection(self) -> QuicConnection:
        """The connection this stream belongs to."""
        return self._conn

    @property
    def early_data(self) -> bool:
        """True if bytes of this peer stream came in 0-RTT (early) data, sent before
        the handshake under the resumed session's keys (not forward secret).  Only a
        server with ``QuicConfig(early_data=True)`` sees such streams.  A replayed
        copy of them cannot complete a handshake, so it never reaches a handler."""
        return self._handle.early_data

    async def wait_aborted(self) -> None:
        """Wait until the peer aborts this stream: RESET_STREAM, STOP_SENDING, or
        the connection closing. Returns at once if that already happened.

        Lets a task notice a peer that gave up while nobody reads or writes the
        stream (a server waiting for its application, say), without taking the
        place of a ``receive()`` or ``send()`` in another task."""
        if self._peer_aborted():
            await self._conn._ll.checkpoint()
            return
        if self._aborted is None:
            self._aborted = anyio.Event()
        await self._aborted.wait()

    def _peer_aborted(self) -> bool:
        h = self._handle
        return self._conn.closed or (self._rx is not None and h.reset_code is not None) or (
            self._tx is not None and h.stop_code is not None
        )

    def _on_abort_event(self) -> None:
        """A RESET_STREAM or STOP_SENDING came while a task waits in wait_aborted()
        (the dispatcher, _fast.pyx, wakes the halves' waiters itself)."""
        if self._aborted is not None and self._peer_aborted():
            self._aborted.set()

    def _on_connection_closed(self) -> None:
        if self._rx is not None:
            self._rx.wake()
        if self._tx is not None:
            self._tx.wake()
        if self._aborted is not None:
            self._aborted.set()

    #: Nothing more will be read or sent (in Cython: _fast.pyx).
    _finished = _fast.stream_finished

    def __del__(self) -> None:
        # Like an unclosed file: careless code may waste, but must not leave the
        # peer waiting on a stream nobody can finish (it holds its stream credit).
        try:
            conn = self._conn
            if conn._streams.pop(self._handle.stream_id, None) is None:
                return  # finished and released already (_forget_if_finished)
        except AttributeError:  # half constructed
            return
        if conn.closed:
            return
        if not self._finished():
            warnings.warn(
                f"unclosed {self!r}: finish streams with aclose() or `async with stream`",
                ResourceWarning,  # no source=self: a recorded warning would resurrect the stream
                stacklevel=2,
            )
            self._abandon()
        self._release()

    #: The application is done with this stream: a peer's stream may give its
    #: stream credit back (the core waits until the protocol is done with it too).
    _release = _fast.stream_release

    def _abandon(self) -> None:
        """Close what is still open: reset an unfinished send side (its message is
        cut), stop an unfinished receive side."""
        if self._tx is not None and not self._tx.done:
            self._tx.reset(0)
        if self._rx is not None:
            self._rx.stop(0)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.stream_id}>"


class _Receiving(_StreamBase):
    """The receiving operations, for streams that have a receiving half."""

    _rx: _ReceiveHalf
    #: A stream the peer opened, not yet received from (see receive()).
    _arrived = False

    async def receive(self, max_bytes: int = DEFAULT_RECEIVE_SIZE) -> bytes:
        """Return up to ``max_bytes`` bytes as soon as any are available.

        Raises :class:`anyio.EndOfStream` after the peer's FIN and
        :class:`StreamReset` if the peer reset the stream: at once, after a check
        for cancellation but without yielding to other tasks (as trio's memory
        channels end). The first call on a stream the peer opened does the same
        when bytes are there already: the stream's arrival started or woke the
        task that handles it. Otherwise it yields once. A cancelled call loses
        no bytes.
        """
        # One coroutine, this one, over the receive half's calls in Cython.
        rx = self._rx
        conn = self._conn
        ll = conn._ll
        try:
            answer = rx.answers_at_once(max_bytes)
            if self._arrived:
                # The first receive() on a stream the peer opened: its arrival
                # woke or started the task that handles it, which has yielded
                # since.  Bytes already there are returned after a check for
                # cancellation, without a second yield: a handler's request and
                # answer take one event-loop turn less.
                self._arrived = False
                if answer == _RECEIVE_TAKES:
                    await ll.checkpoint_if_cancelled()
                    data = rx.take(max_bytes)
                    conn._bytes_received += len(data)
                    return data
            if answer == _RECEIVE_ENDS:
                # Only the end is left (the FIN, a reset, our close): raise it after
                # a check for cancellation, without a yield, as trio's channels do.
                await ll.checkpoint_if_cancelled()
                rx.take(max_bytes)  # raises
            yielded, checkpoint = ll.first_checkpoint(answer == _RECEIVE_TAKES)
            await checkpoint
            while not (data := rx.take(max_bytes)):
                spot = rx.spot_to_wait()
                conn._check_running()
                if self._wrote:
                    # A task that waits for the peer after sending on this stream
                    # has said its piece: that is the end of a message too.
                    self._wrote = False
                    conn._wake_now()
                await spot.wait()
                yielded = True
            if not yielded:  # bytes that landed just now: yield once, keeping them
                await ll.cancel_shielded_checkpoint()
        except (anyio.EndOfStream, StreamReset):
            conn._forget_if_finished(self)
            raise
        conn._bytes_received += len(data)
        return data

    def receive_nowait(self, max_bytes: int = DEFAULT_RECEIVE_SIZE) -> bytes:
        """Return up to ``max_bytes`` of the bytes already received, without waiting.

        Raises :class:`anyio.WouldBlock` if none are buffered yet,
        :class:`anyio.BusyResourceError` while a :meth:`receive` waits in another
        task, and otherwise what :meth:`receive` raises. It never yields to the
        event loop.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        spot = self._rx._spot
        if spot is not None and spot.occupied:
            raise anyio.BusyResourceError("receiving from")
        try:
            data = self._rx.take(max_bytes)
        except (anyio.EndOfStream, StreamReset):
            self._conn._forget_if_finished(self)
            raise
        if not data:
            raise anyio.WouldBlock
        self._conn._bytes_received += len(data)
        return data

    def stop_sending(self, error_code: int = 0) -> None:
        """Tell the peer we will read no more (STOP_SENDING with ``error_code``)."""
        self._rx.stop(error_code)
        self._conn._forget_if_finished(self)


class _Sending(_StreamBase):
    """The sending operations, for streams that have a sending half."""

    _tx: _SendHalf

    async def send(self, item: bytes | bytearray | memoryview, *, eof: bool = False) -> None:
        """Send ``item``, waiting while the stream's send buffer is full.

        With ``eof=True`` the stream is finished after ``item`` (as
        :meth:`send_eof` would), in the same hand-off to the network thread, so
        a short message and its FIN cost one wake-up and usually one packet;
        and the call hands them over before it yields to the event loop (after
        it, on asyncio, a cancellation finds all of ``item`` sent), waking the
        network thread at once if they end the turn's only message.  Without
        ``eof``, a :meth:`receive` that then waits on this stream counts as the
        end of that message (see docs/guide.md).

        A cancelled call sends all of ``item`` or none of it, never a part:
        none if it is cancelled before its first byte went into the send buffer
        (at its first checkpoint, or while the buffer was full from the start),
        all if it is cancelled later: the rest is then buffered beyond the
        buffer's size, and a later send waits until the buffer has room again.
        Raises :class:`anyio.BusyResourceError` (sending nothing) while another
        task's send on this stream waits, and :class:`anyio.ClosedResourceError`
        if this stream is reset by us (:meth:`reset`) while the call waits.
        """
        tx = self._tx
        conn = self._conn
        ll = conn._ll
        if not eof:
            # Yield first, then commit: the bytes reach the network thread with no
            # task switch before a following send_eof(), so data and FIN usually
            # leave in one packet.  Cancelled here, nothing was sent.
            await ll.checkpoint()
            if not tx.send_start(item, False):  # the send ring is full: wait for room
                await tx.send_rest(item, False)
            self._wrote = True
            return
        # The stream's last bytes: nothing follows them, so hand them over first
        # and yield after (see Lowlevel.checkpoint_after_handing_over); a stream
        # finished both ways is released with them, in the same wake-up.
        handed_over = False
        try:
            await ll.checkpoint_if_cancelled()
            handed_over = tx.send_start(item, True)
            if not handed_over:
                await tx.send_rest(item, True)  # it waits: that is its yield
        finally:
            conn._forget_if_finished(self)
        if handed_over:
            conn._wake_now()  # the end of a message: at once if it is the turn's only one
            await ll.checkpoint_after_handing_over()

    def send_nowait(self, item: bytes | bytearray | memoryview, *, eof: bool = False) -> None:
        """Send all of ``item`` (then finish the stream, with ``eof``) at once,
        without waiting, even if the send buffer is full.

        For short control messages whose order matters more than backpressure
        (HTTP/3 uses it for its QPACK streams): the bytes go into the send
        buffer beyond its size if need be, so the caller bounds their amount.
        Raises :class:`anyio.BusyResourceError` (sending nothing) while a
        :meth:`send` waits in another task, whose bytes must go first, and
        :class:`anyio.ClosedResourceError` once the sending side is closed.
        """
        self._tx.send_nowait(item, eof)
        if eof:
            self._conn._forget_if_finished(self)
        else:
            self._wrote = True

    async def send_eof(self) -> None:
        """Finish the stream (FIN) after the bytes already sent.

        Cancelled before it hands the FIN over, it does nothing; a cancellation
        at its yield after that (asyncio) finds the FIN sent, so it is never half
        done.  While a send waits in another task it raises
        :class:`anyio.BusyResourceError`.
        """
        conn = self._conn
        ll = conn._ll
        await ll.checkpoint_if_cancelled()
        self._tx.send_eof()
        conn._forget_if_finished(self)
        conn._wake_now()
        await ll.checkpoint_after_handing_over()

    def reset(self, error_code: int = 0) -> None:
        """Abandon the stream: unsent bytes are dropped, the peer gets RESET_STREAM."""
        self._tx.reset(error_code)
        self._conn._forget_if_finished(self)


class QuicReceiveStream(_Receiving, ByteReceiveStream):
    """The receiving half of a unidirectional stream the peer opened."""

    def __init__(self, handle: StreamHandle, conn: QuicConnection) -> None:
        super().__init__(handle, conn)
        self._rx = _ReceiveHalf(handle, conn)
        self._tx = None

    async def aclose(self) -> None:
        """Stop reading: unread bytes are discarded and the peer is told (code 0)."""
        self.stop_sending(0)
        await self._conn._ll.checkpoint()


class QuicSendStream(_Sending, ByteSendStream):
    """A unidirectional stream we opened: send-only."""

    def __init__(self, handle: StreamHandle, conn: QuicConnection) -> None:
        super().__init__(handle, conn)
        self._rx = None
        self._tx = _SendHalf(handle, conn)

    async def aclose(self) -> None:
        """Finish the stream gracefully (FIN), as :meth:`send_eof`; a send still
        waiting in another task raises :class:`anyio.ClosedResourceError` and the
        stream is reset instead."""
        self._tx.finish()
        self._conn._forget_if_finished(self)
        await self._conn._ll.checkpoint()


class QuicStream(_Receiving, _Sending, ByteStream):
    """A bidirectional QUIC stream."""

    def __init__(self, handle: StreamHandle, conn: QuicConnection) -> None:
        super().__init__(handle, conn)
        self._rx = _ReceiveHalf(handle, conn)
        self._tx = _SendHalf(handle, conn)

    async def aclose(self) -> None:
        """Finish sending (FIN) and stop receiving; the stream is then unusable.

        A send still waiting in another task raises
        :class:`anyio.ClosedResourceError`, and the stream is reset instead of
        finished: its message was cut.
        """
        self._tx.finish()
        self._rx.stop(0)
        self._conn._forget_if_finished(self)
        await self._conn._ll.checkpoint()
