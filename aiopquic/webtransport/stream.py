"""A WebTransport session's streams: the QUIC streams under them, speaking
WebTransport's 32-bit application error codes.

They are anyio byte streams like :class:`aiopquic.QuicStream`. ``reset()`` and
``stop_sending()`` take application codes, mapped into HTTP/3's code space on
the wire, and :class:`~aiopquic.StreamReset` reports the peer's code mapped
back (an HTTP/3 code that carries none, such as WT_SESSION_GONE, is reported
as it is).

In a session with flow control (draft-13+), the body bytes count against the
session's limits: a send waits for the peer's credit, and what the
application reads gives the peer credit back (see ``session.py``).
"""

from __future__ import annotations

from typing import Protocol

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, ByteStream

from ..quic.errors import StreamReset
from ..quic.stream import QuicReceiveStream, QuicSendStream, QuicStream
from ._codes import app_error_to_h3, h3_to_app_error

__all__ = ["WebTransportReceiveStream", "WebTransportSendStream", "WebTransportStream"]

_READ_SIZE = 65536


class SessionLink(Protocol):
    """What a stream asks of its session (session flow control)."""

    async def _send_body(
        self, quic: QuicStream | QuicSendStream, data: bytes | bytearray | memoryview, eof: bool
    ) -> None: ...

    def _body_read(self, n: int) -> None: ...

    def _peer_stream_done(self, bidirectional: bool) -> None: ...

    def _gone(self) -> Exception | None: ...


def _mapped(exc: StreamReset) -> StreamReset:
    code = h3_to_app_error(exc.error_code)
    if code is None:
        return exc
    return StreamReset(
        f"the peer reset stream {exc.stream_id} (WebTransport error code {code})", error_code=code, stream_id=exc.stream_id
    )


def _raise_if_session_gone(session: SessionLink | None) -> None:
    """A stream closed because its session ended says so (:class:`SessionClosed`)."""
    gone = session._gone() if session is not None else None
    if gone is not None:
        raise gone from None


class _Receiving:
    _quic: QuicStream | QuicReceiveStream
    _prefix: bytes
    _session: SessionLink | None
    #: Set on the peer's streams until their end is reported to the session.
    _peer_open: bool

    @property
    def stream_id(self) -> int:
        """The QUIC stream id."""
        return self._quic.stream_id

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        """The bytes available now (at least one); ``anyio.EndOfStream`` after the peer's FIN."""
        if self._prefix:  # body bytes that came with the stream's WebTransport header
            # The checkpoint a receive from the QUIC stream would make, without
            # anyio's backend lookup.
            await self._quic.connection._ll.checkpoint()
            data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
        else:
            try:
                data = await self._quic.receive(max_bytes)
            except StreamReset as exc:
                self._receive_done()
                raise _mapped(exc) from None
            except anyio.EndOfStream:
                self._receive_done()
                raise
            except anyio.ClosedResourceError:
                _raise_if_session_gone(self._session)
                raise
        if self._session is not None:
            self._session._body_read(len(data))
        return data

    def _receive_done(self) -> None:
        """The peer's side is over: a stream of the peer's gives the session its credit back."""
        if self._peer_open and self._session is not None:
            self._peer_open = False
            self._session._peer_stream_done(isinstance(self._quic, QuicStream))

    def stop_sending(self, error_code: int = 0) -> None:
        """Ask the peer to stop sending, with a WebTransport application error code."""
        self._quic.stop_sending(app_error_to_h3(error_code))
        self._receive_done()


class _Sending:
    _quic: QuicStream | QuicSendStream
    _session: SessionLink | None

    async def send(self, item: bytes | bytearray | memoryview, *, eof: bool = False) -> None:
        """Send ``item`` (then finish the stream, with ``eof``), waiting for room.

        In a session with flow control the bytes also wait for the session's
        credit, and go out in pieces as it comes: a cancelled call may then
        have sent a first part of ``item`` (whole pieces, never a torn one).
        """
        try:
            if self._session is None:
                await self._quic.send(item, eof=eof)
            else:
                await self._session._send_body(self._quic, item, eof)
        except StreamReset as exc:
            raise _mapped(exc) from None
        except anyio.ClosedResourceError:
            _raise_if_session_gone(self._session)
            raise

    async def send_eof(self) -> None:
        """Finish our side of the stream (FIN)."""
        await self._quic.send_eof()

    def reset(self, error_code: int = 0) -> None:
        """Abandon sending, with a WebTransport application error code."""
        self._quic.reset(app_error_to_h3(error_code))


class WebTransportReceiveStream(_Receiving, ByteReceiveStream):
    """A unidirectional stream the peer opened in the session."""

    def __init__(self, quic: QuicReceiveStream, prefix: bytes = b"", *, session: SessionLink | None = None) -> None:
        self._quic = quic
        self._prefix = prefix
        self._session = session
        self._peer_open = True

    async def aclose(self) -> None:
        """Stop reading (STOP_SENDING with code 0)."""
        self._receive_done()
        await self._quic.aclose()


class WebTransportSendStream(_Sending, ByteSendStream):
    """A unidirectional stream we opened in the session."""

    def __init__(self, quic: QuicSendStream, *, session: SessionLink | None = None) -> None:
        self._quic = quic
        self._session = session

    @property
    def stream_id(self) -> int:
        """The QUIC stream id."""
        return self._quic.stream_id

    async def aclose(self) -> None:
        """Finish the stream (FIN)."""
        await self._quic.aclose()


class WebTransportStream(_Receiving, _Sending, ByteStream):
    """A bidirectional stream of the session (opened by either side)."""

    _quic: QuicStream

    def __init__(
        self, quic: QuicStream, prefix: bytes = b"", *, session: SessionLink | None = None, peer_opened: bool = False
    ) -> None:
        self._quic = quic
        self._prefix = prefix
        self._session = session
        self._peer_open = peer_opened

    async def aclose(self) -> None:
        """Finish sending (FIN) and stop receiving."""
        self._receive_done()
        await self._quic.aclose()
