"""The thin I/O layer: one :class:`H3Protocol` driven over one QUIC connection.

:class:`H3Session` owns our control and QPACK streams and reads the peer's
unidirectional streams (one task each, in the caller's task group).
:class:`RequestStream` reads a request stream only when its owner asks for
the next event, so a slow consumer slows the peer down through QUIC flow
control instead of growing memory.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from ..quic.connection import QuicConnection
from ..quic.errors import ConnectionClosed, StreamReset
from ..quic.stream import QuicReceiveStream, QuicSendStream, QuicStream
from ._events import (
    DataReceived,
    FrameReceived,
    GoAwayReceived,
    H3Event,
    HeadersReceived,
    SettingsReceived,
    StreamError,
    TrailersReceived,
    UnknownStream,
)
from ._frames import ErrorCode
from ._headers import Headers
from ._protocol import H3Protocol, H3Settings, ProtocolError
from .errors import H3ProtocolError

logger = logging.getLogger("aiopquic.h3")

#: Body bytes smaller than this are copied behind their DATA frame header
#: (one ring write); larger ones go as two writes, uncopied.
_COALESCE_BELOW = 16 * 1024
_READ_SIZE = 64 * 1024


class H3Session:
    """HTTP/3's connection-wide state and streams over ``conn``."""

    def __init__(self, conn: QuicConnection, *, is_client: bool, settings: H3Settings | None = None) -> None:
        self.conn = conn
        self.protocol = H3Protocol(is_client=is_client, settings=settings)
        self.settings_received = anyio.Event()
        self.goaway_received = anyio.Event()
        #: Called with the stream id of a GOAWAY the peer sent.
        self.on_goaway: Callable[[int], None] | None = None
        #: An extension's taker of the peer's unidirectional streams of a type
        #: HTTP/3 does not know (WebTransport's): it returns True when it took
        #: the stream (and read it to its end, or handed it on), False to
        #: refuse it (STOP_SENDING).
        self.on_unknown_stream: Callable[[QuicReceiveStream, UnknownStream], Awaitable[bool]] | None = None
        self._requests: dict[int, RequestStream] = {}
        self._control: QuicSendStream | None = None
        self._encoder: QuicSendStream | None = None
        self._decoder: QuicSendStream | None = None
        self.error: H3ProtocolError | None = None

    async def open(self) -> None:
        """Open our control, QPACK and GREASE streams and send their first bytes."""
        self._control = await self.conn.open_uni_stream()
        await self._control.send(self.protocol.control_stream_data())
        self._encoder = await self.conn.open_uni_stream()
        await self._encoder.send(self.protocol.encoder_stream_data())
        self._decoder = await self.conn.open_uni_stream()
        await self._decoder.send(self.protocol.decoder_stream_data())
        grease = await self.conn.open_uni_stream()
        await grease.send(self.protocol.grease_stream_data())
        await grease.send_eof()

    async def send_goaway(self, identifier: int) -> None:
        """Tell the peer that requests from ``identifier`` on will not be processed."""
        if self._control is not None:
            await self._control.send(self.protocol.goaway_frame(identifier))

    def flush_qpack(self) -> None:
        """Send what encoding and decoding left for our QPACK streams; called as a
        header section goes out.

        At once, never waiting: a header block must not reach the peer before
        the encoder instructions it refers to, and these bytes are few (bounded
        by the dynamic table's capacity and the header sections sent).

        The decoder's instructions (section acknowledgements, insert count
        increments, stream cancellations) wait for this, instead of leaving as
        each header section is decoded: they then share a packet with our next
        header section (a server's response, a client's next request) instead
        of costing both peers a packet and a wake-up per request. RFC 9204 sets
        no time for them; what the wait costs the peer's encoder is that it
        keeps the entries it inserted since then unacknowledged: it may not
        evict them, and references them only within its blocked-streams
        allowance, encoding literally otherwise."""
        if not self.protocol.qpack_data_pending:
            return
        self.flush_qpack_encoder()
        data = self.protocol.take_decoder_data()
        if data and self._decoder is not None:
            self._decoder.send_nowait(data)

    def flush_qpack_encoder(self) -> None:
        """Send what our QPACK encoder has due, at once (the peer's SETTINGS set
        our dynamic table's capacity); see :meth:`flush_qpack` for the decoder's."""
        data = self.protocol.take_encoder_data()
        if data and self._encoder is not None:
            self._encoder.send_nowait(data)

    def request_stream(self, stream: QuicStream, prefix: bytes = b"") -> RequestStream:
        """Wrap a request stream (one we opened, or a client's on a server);
        ``prefix``: its first bytes, already read by whoever told it apart."""
        request = RequestStream(self, stream, prefix)
        self._requests[stream.stream_id] = request
        return request

    def fail(self, exc: ProtocolError) -> H3ProtocolError:
        """Close the connection for a protocol violation; return what to raise."""
        if self.error is None:
            logger.info("HTTP/3 protocol error on %r: %s", self.conn, exc)
            self.error = H3ProtocolError(f"the peer broke HTTP/3: {exc}", error_code=exc.error_code)
            self.conn.close(exc.error_code, exc.reason)
        return self.error

    async def read_uni_stream(self, stream: QuicReceiveStream) -> None:
        """Feed one of the peer's unidirectional streams to the protocol until it ends."""
        stream_id = stream.stream_id
        try:
            while True:
                try:
                    data, fin = await stream.receive(_READ_SIZE), False
                except anyio.EndOfStream:
                    data, fin = b"", True
                events = self.protocol.receive_uni_data(stream_id, data, fin)
                for event in events:
                    if isinstance(event, UnknownStream):
                        taker = self.on_unknown_stream
                        if taker is None or not await taker(stream, event):
                            stream.stop_sending(ErrorCode.H3_STREAM_CREATION_ERROR)
                        return
                    self._dispatch(event)
                self.flush_qpack_encoder()
                if fin:
                    return
        except StreamReset:
            try:
                self.protocol.uni_stream_reset(stream_id)
            except ProtocolError as exc:
                self.fail(exc)
        except ProtocolError as exc:
            self.fail(exc)
        except (ConnectionClosed, anyio.ClosedResourceError):
            pass

    def _dispatch(self, event: H3Event) -> None:
        if isinstance(event, SettingsReceived):
            self.settings_received.set()
        elif isinstance(event, GoAwayReceived):
            self.goaway_received.set()
            if self.on_goaway is not None:
                self.on_goaway(event.stream_id)
        else:
            request = self._requests.get(event.stream_id)
            if request is not None:
                request.deliver(event)

    def forget(self, request: RequestStream) -> None:
        self._requests.pop(request.stream_id, None)
        self.protocol.forget_stream(request.stream_id)


class RequestStream:
    """One request (or response) stream: events in, frames out."""

    def __init__(self, session: H3Session, stream: QuicStream, prefix: bytes = b"") -> None:
        self.session = session
        self.stream = stream
        self._prefix = prefix
        self.stream_id = stream.stream_id
        self._events: deque[H3Event] = deque()
        self._wakeup: anyio.Event | None = None  # while waiting for QPACK to unblock the headers
        self._fin_read = False
        #: The peer's message is complete (or failed): no more events.
        self.receive_done = False
        self._closed = False

    def deliver(self, event: H3Event) -> None:
        """An event for this stream found while reading another (QPACK unblocking)."""
        self._events.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    async def receive_event(
        self,
    ) -> HeadersReceived | DataReceived | TrailersReceived | StreamError | FrameReceived | None:
        """The next event of the peer's message; ``None`` once it is complete.

        A :class:`StreamError` is returned, not raised: the caller decides
        between a reset and an error response. Raises ``StreamReset`` when the
        peer resets the stream, ``H3ProtocolError`` when the connection fails.
        """
        protocol = self.session.protocol
        while True:
            if self._events:
                event = self._events.popleft()
                assert isinstance(event, (HeadersReceived, DataReceived, TrailersReceived, StreamError, FrameReceived))
                if isinstance(event, (TrailersReceived, StreamError)) or getattr(event, "stream_ended", False):
                    self.receive_done = True
                return event
            if self.receive_done or self._fin_read:
                self.receive_done = True
                return None
            if protocol.is_blocked(self.stream_id):
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                self._wakeup = None
                continue
            self._raise_if_failed()
            try:
                if self._prefix:
                    data, fin, self._prefix = self._prefix, False, b""
                else:
                    data, fin = await self.stream.receive(_READ_SIZE), False
            except anyio.EndOfStream:
                data, fin = b"", True
            except ConnectionClosed:
                self._raise_if_failed()
                raise
            self._fin_read = fin
            try:
                self._events.extend(protocol.receive_request_data(self.stream_id, data, fin))
            except ProtocolError as exc:
                raise self.session.fail(exc) from None

    def _raise_if_failed(self) -> None:
        if self.session.error is not None:
            raise self.session.error

    async def send_headers(self, headers: Headers, *, end_stream: bool = False) -> None:
        """Send a header (or trailer) section; ``end_stream`` sends the FIN after it."""
        await self.send_headers_and_data(headers, b"", end_stream=end_stream)

    async def send_headers_and_data(
        self, headers: Headers, data: bytes | bytearray | memoryview, *, end_stream: bool = False
    ) -> None:
        """Send a header section and the first body bytes (if any) in one write."""
        frame = self.session.protocol.encode_headers(self.stream_id, headers)
        self.session.flush_qpack()
        if len(data) >= _COALESCE_BELOW:
            await self.stream.send(frame)
            await self.send_data(data, end_stream=end_stream)
        elif data:
            await self.stream.send(frame + self._data_frame(data), eof=end_stream)
        else:
            await self.stream.send(frame, eof=end_stream)

    async def send_data(self, data: bytes | bytearray | memoryview, *, end_stream: bool = False) -> None:
        """Send body bytes in one DATA frame; ``end_stream`` sends the FIN after them."""
        if len(data) >= _COALESCE_BELOW:
            await self.stream.send(self.session.protocol.data_frame_header(len(data)))
            await self.stream.send(data, eof=end_stream)
        elif data:
            await self.stream.send(self._data_frame(data), eof=end_stream)
        elif end_stream:
            await self.stream.send_eof()

    def _data_frame(self, data: bytes | bytearray | memoryview) -> bytes:
        """A whole DATA frame, for a body small enough that copying it costs less than a second write."""
        return self.session.protocol.data_frame_header(len(data)) + bytes(data)

    def reset(self, error_code: int) -> None:
        """Abort both directions of the stream with ``error_code``."""
        self.stream.reset(error_code)
        self.stream.stop_sending(error_code)

    def close(self) -> None:
        """Forget the stream's protocol state; stop reading what nobody will read.

        Idempotent: a response's ``aclose()`` and the end of its ``stream()``
        block may both call it."""
        if self._closed:
            return
        self._closed = True
        if not self.receive_done:
            self.stream.stop_sending(ErrorCode.H3_NO_ERROR)
        self.session.forget(self)
