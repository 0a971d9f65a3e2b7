"""A WebTransport session's streams: the QUIC streams under them, speaking
WebTransport's 32-bit application error codes.

They are anyio byte streams like :class:`aiopquic.QuicStream`. ``reset()`` and
``stop_sending()`` take application codes, mapped into HTTP/3's code space on
the wire, and :class:`~aiopquic.StreamReset` reports the peer's code mapped
back (an HTTP/3 code that carries none, such as WT_SESSION_GONE, is reported
as it is).
"""

from __future__ import annotations

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, ByteStream

from ..quic.errors import StreamReset
from ..quic.stream import QuicReceiveStream, QuicSendStream, QuicStream
from ._codes import app_error_to_h3, h3_to_app_error

__all__ = ["WebTransportReceiveStream", "WebTransportSendStream", "WebTransportStream"]

_READ_SIZE = 65536


def _mapped(exc: StreamReset) -> StreamReset:
    code = h3_to_app_error(exc.error_code)
    if code is None:
        return exc
    return StreamReset(
        f"the peer reset stream {exc.stream_id} (WebTransport error code {code})", error_code=code, stream_id=exc.stream_id
    )


class _Receiving:
    _quic: QuicStream | QuicReceiveStream
    _prefix: bytes

    @property
    def stream_id(self) -> int:
        """The QUIC stream id."""
        return self._quic.stream_id

    async def receive(self, max_bytes: int = _READ_SIZE) -> bytes:
        """The bytes available now (at least one); ``anyio.EndOfStream`` after the peer's FIN."""
        if self._prefix:  # body bytes that came with the stream's WebTransport header
            await anyio.lowlevel.checkpoint()
            data, self._prefix = self._prefix[:max_bytes], self._prefix[max_bytes:]
            return data
        try:
            return await self._quic.receive(max_bytes)
        except StreamReset as exc:
            raise _mapped(exc) from None

    def stop_sending(self, error_code: int = 0) -> None:
        """Ask the peer to stop sending, with a WebTransport application error code."""
        self._quic.stop_sending(app_error_to_h3(error_code))


class _Sending:
    _quic: QuicStream | QuicSendStream

    async def send(self, item: bytes | bytearray | memoryview, *, eof: bool = False) -> None:
        """Send ``item`` (then finish the stream, with ``eof``), waiting for room."""
        try:
            await self._quic.send(item, eof=eof)
        except StreamReset as exc:
            raise _mapped(exc) from None

    async def send_eof(self) -> None:
        """Finish our side of the stream (FIN)."""
        await self._quic.send_eof()

    def reset(self, error_code: int = 0) -> None:
        """Abandon sending, with a WebTransport application error code."""
        self._quic.reset(app_error_to_h3(error_code))


class WebTransportReceiveStream(_Receiving, ByteReceiveStream):
    """A unidirectional stream the peer opened in the session."""

    def __init__(self, quic: QuicReceiveStream, prefix: bytes = b"") -> None:
        self._quic = quic
        self._prefix = prefix

    async def aclose(self) -> None:
        await self._quic.aclose()


class WebTransportSendStream(_Sending, ByteSendStream):
    """A unidirectional stream we opened in the session."""

    def __init__(self, quic: QuicSendStream) -> None:
        self._quic = quic

    @property
    def stream_id(self) -> int:
        """The QUIC stream id."""
        return self._quic.stream_id

    async def aclose(self) -> None:
        await self._quic.aclose()


class WebTransportStream(_Receiving, _Sending, ByteStream):
    """A bidirectional stream of the session (opened by either side)."""

    _quic: QuicStream

    def __init__(self, quic: QuicStream, prefix: bytes = b"") -> None:
        self._quic = quic
        self._prefix = prefix

    async def aclose(self) -> None:
        await self._quic.aclose()
