"""The sans-I/O HTTP/3 connection: bytes in, events out (RFC 9114, RFC 9204).

:class:`H3Protocol` never touches a socket or a task. Its driver feeds it
what arrives on each QUIC stream and writes what it returns:

- ``receive_request_data(stream_id, data, fin)`` for request streams,
- ``receive_uni_data(stream_id, data, fin)`` for the peer's unidirectional
  streams (control, QPACK encoder and decoder, unknown ones),
- ``encode_headers(stream_id, headers)`` and ``data_frame_header(n)`` to build
  what goes out on a request stream,
- ``take_encoder_data()`` / ``take_decoder_data()``: bytes for our QPACK
  streams, produced as a side effect of encoding and decoding.

Connection errors raise :class:`ProtocolError` (close the connection with its
code); a malformed message is a :class:`~._events.StreamError` event (reset
that stream, keep the connection).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pylsqpack

from . import _frames as frames
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
from ._frames import DataChunk, ErrorCode, Frame, FrameReader, FrameType, Setting, StreamType
from ._headers import Headers, MessageError, field_section_size, validate_request, validate_response, validate_trailers

#: Longest frame other than DATA accepted on a control stream.
MAX_CONTROL_FRAME = 16 * 1024
#: Room a HEADERS frame may take beyond the field section size it encodes.
HEADERS_FRAME_SLACK = 1024


class ProtocolError(Exception):
    """The peer broke HTTP/3: close the connection with ``error_code``."""

    def __init__(self, error_code: int, reason: str) -> None:
        try:
            name = ErrorCode(error_code).name
        except ValueError:
            name = hex(error_code)
        super().__init__(f"{reason} ({name})")
        self.error_code = error_code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class H3Settings:
    """What we announce in SETTINGS, and how our QPACK encoder uses the peer's.

    ``extra`` carries further identifiers (WebTransport's, for one); a GREASE
    setting is always added.

    ``qpack_encoder_table_capacity`` is not announced: it caps how much of the
    dynamic table the peer offers (its ``QPACK_MAX_TABLE_CAPACITY``) our
    encoder uses.  At 0, the default, our header sections refer only to QPACK's
    static table, and carry the rest as literals (Huffman-coded): the peer's
    decoder then owes no Section Acknowledgment for them, and none of our
    requests or responses can be blocked waiting for the encoder stream.  That
    saves both ends ~10 % of the CPU of a small request (cloudflare's quiche
    and picoquic's h3zero never use the table either).  A positive value lets
    the encoder insert fields it sees repeat, such as a long ``authorization``
    or ``cookie`` on every request, and refer to them: fewer bytes on the wire
    for more work per header section.  Our decoder offers the peer
    ``qpack_max_table_capacity`` whatever this is.
    """

    qpack_max_table_capacity: int = 4096
    qpack_blocked_streams: int = 16
    qpack_encoder_table_capacity: int = 0
    max_field_section_size: int = 64 * 1024
    enable_connect_protocol: bool = False
    h3_datagram: bool = False
    extra: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        capacity = self.qpack_encoder_table_capacity
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(
                "qpack_encoder_table_capacity must be a whole number of bytes >= 0 "
                f"(0: our QPACK encoder never uses the dynamic table), got {capacity!r}"
            )

    def to_wire(self) -> dict[int, int]:
        """The identifiers and values, in the order we send them."""
        settings: dict[int, int] = {
            Setting.QPACK_MAX_TABLE_CAPACITY: self.qpack_max_table_capacity,
            Setting.QPACK_BLOCKED_STREAMS: self.qpack_blocked_streams,
            Setting.MAX_FIELD_SECTION_SIZE: self.max_field_section_size,
        }
        if self.enable_connect_protocol:
            settings[Setting.ENABLE_CONNECT_PROTOCOL] = 1
        if self.h3_datagram:
            settings[Setting.H3_DATAGRAM] = 1
        settings.update(self.extra)
        settings[frames.grease_value()] = int.from_bytes(os.urandom(2), "big")
        return {int(k): v for k, v in settings.items()}


class _Message:
    """Receive-side state of one request stream: frame order, body length, QPACK blocking."""

    __slots__ = (
        "blocked",
        "body_received",
        "content_length",
        "dead",
        "fin_pending",
        "headers_done",
        "no_body",
        "reader",
        "trailers_done",
    )

    def __init__(self, max_frame: int) -> None:
        self.reader = FrameReader(max_frame)
        self.headers_done = False
        self.trailers_done = False
        self.blocked = False
        self.fin_pending = False
        self.dead = False
        self.content_length: int | None = None
        self.body_received = 0
        self.no_body = False  # a response to HEAD: content-length describes no body here


class _PeerUniStream:
    __slots__ = ("buffer", "reader", "type")

    def __init__(self) -> None:
        self.type: int | None = None
        self.buffer = bytearray()
        self.reader = FrameReader(MAX_CONTROL_FRAME)


class H3Protocol:
    """One HTTP/3 connection's protocol state, either side."""

    def __init__(self, *, is_client: bool, settings: H3Settings | None = None) -> None:
        self.is_client = is_client
        self.settings = settings or H3Settings()
        self.peer_settings: dict[int, int] | None = None
        self.goaway_received: int | None = None
        self._encoder = pylsqpack.Encoder()
        self._decoder = pylsqpack.Decoder(self.settings.qpack_max_table_capacity, self.settings.qpack_blocked_streams)
        self._encoder_out = bytearray()
        self._decoder_out = bytearray()
        self._messages: dict[int, _Message] = {}
        self._uni: dict[int, _PeerUniStream] = {}
        self._critical: dict[int, int] = {}  # stream type -> stream id
        self._max_headers_frame = self.settings.max_field_section_size + HEADERS_FRAME_SLACK

    # --- what we send -----------------------------------------------------

    def control_stream_data(self) -> bytes:
        """Our control stream's first bytes: its type, SETTINGS, a GREASE frame."""
        return (
            frames.encode_varint(StreamType.CONTROL)
            + frames.encode_settings(self.settings.to_wire())
            + frames.encode_frame(frames.grease_value(), os.urandom(4))
        )

    @staticmethod
    def encoder_stream_data() -> bytes:
        """Our QPACK encoder stream's type byte."""
        return frames.encode_varint(StreamType.QPACK_ENCODER)

    @staticmethod
    def decoder_stream_data() -> bytes:
        """Our QPACK decoder stream's type byte."""
        return frames.encode_varint(StreamType.QPACK_DECODER)

    @staticmethod
    def grease_stream_data() -> bytes:
        """A whole stream of a reserved type, which the peer must ignore."""
        return frames.encode_varint(frames.grease_value()) + os.urandom(8)

    @property
    def qpack_data_pending(self) -> bool:
        """True when :meth:`take_encoder_data` or :meth:`take_decoder_data` has bytes."""
        return bool(self._encoder_out or self._decoder_out)

    def take_encoder_data(self) -> bytes:
        """Bytes due on our QPACK encoder stream (after encoding or new peer settings)."""
        data = bytes(self._encoder_out)
        self._encoder_out.clear()
        return data

    def take_decoder_data(self) -> bytes:
        """Bytes due on our QPACK decoder stream (acknowledgements, cancellations)."""
        data = bytes(self._decoder_out)
        self._decoder_out.clear()
        return data

    def encode_headers(self, stream_id: int, headers: Headers) -> bytes:
        """A HEADERS frame for ``stream_id``; the encoder stream may get bytes too.

        Raises ``ValueError`` if the section exceeds the peer's
        MAX_FIELD_SECTION_SIZE.
        """
        limit = (self.peer_settings or {}).get(Setting.MAX_FIELD_SECTION_SIZE)
        if limit is not None and field_section_size(headers) > limit:
            raise ValueError(f"the header section is larger than the peer accepts ({limit} bytes)")
        encoder_data, block = self._encoder.encode(stream_id, headers)
        self._encoder_out += encoder_data
        return frames.encode_frame(FrameType.HEADERS, block)

    @staticmethod
    def data_frame_header(length: int) -> bytes:
        """The bytes that precede ``length`` bytes of body in a DATA frame."""
        return frames.data_frame_header(length)

    @staticmethod
    def goaway_frame(identifier: int) -> bytes:
        """A GOAWAY frame for our control stream."""
        return frames.encode_frame(FrameType.GOAWAY, frames.encode_varint(identifier))

    # --- request streams --------------------------------------------------

    def receive_request_data(self, stream_id: int, data: bytes, fin: bool) -> list[H3Event]:
        """Bytes that arrived on a request stream (``fin``: the stream ended)."""
        message = self._messages.get(stream_id)
        if message is None:
            if not self.is_client and stream_id % 4 != 0:
                raise ProtocolError(ErrorCode.H3_STREAM_CREATION_ERROR, f"stream {stream_id} is not a client bidirectional stream")
            message = self._messages[stream_id] = _Message(self._max_headers_frame)
        if message.dead:
            return []
        message.reader.append(data)
        message.fin_pending = message.fin_pending or fin
        events: list[H3Event] = []
        if not message.blocked:  # else the encoder stream resumes it
            self._parse_message(stream_id, message, events)
        return events

    def keep_frames(self, stream_id: int, frame_types: frozenset[int]) -> None:
        """Hand frames of these unknown types on ``stream_id`` up as
        :class:`FrameReceived` instead of skipping them (after the headers only)."""
        message = self._messages.setdefault(stream_id, _Message(self._max_headers_frame))
        message.reader.kept = frame_types

    def is_blocked(self, stream_id: int) -> bool:
        """True while the stream's header section waits for the peer's encoder stream."""
        message = self._messages.get(stream_id)
        return message is not None and message.blocked

    def forget_stream(self, stream_id: int) -> None:
        """The request stream is finished or reset: drop its state (and QPACK's)."""
        message = self._messages.pop(stream_id, None)
        if message is not None and message.blocked:
            self._decoder_out += self._decoder.cancel_stream(stream_id)

    def _parse_message(self, stream_id: int, message: _Message, events: list[H3Event]) -> None:
        try:
            for item in message.reader.frames():
                if isinstance(item, DataChunk):
                    self._on_data(stream_id, message, item.data, events)
                else:
                    self._on_request_frame(stream_id, message, item, events)
                if message.blocked or message.dead:
                    return
        except frames.FrameTooLarge as exc:
            self._fail_message(stream_id, message, ErrorCode.H3_EXCESSIVE_LOAD, str(exc), events)
            return
        except MessageError as exc:
            self._fail_message(stream_id, message, ErrorCode.H3_MESSAGE_ERROR, str(exc), events)
            return
        if message.fin_pending:
            self._on_message_end(stream_id, message, events)

    def _fail_message(
        self, stream_id: int, message: _Message, code: int, reason: str, events: list[H3Event], status: int | None = None
    ) -> None:
        message.dead = True
        events.append(StreamError(stream_id, code, reason, status))

    def _on_request_frame(self, stream_id: int, message: _Message, frame: Frame, events: list[H3Event]) -> None:
        if frame.type in message.reader.kept:
            if message.headers_done:  # before them it is an unknown frame like any other
                events.append(FrameReceived(stream_id, frame.type, frame.payload))
            return
        if frame.type != FrameType.HEADERS:
            if frame.type == FrameType.PUSH_PROMISE and self.is_client:
                raise ProtocolError(ErrorCode.H3_ID_ERROR, "PUSH_PROMISE although we never allowed a push")
            raise ProtocolError(ErrorCode.H3_FRAME_UNEXPECTED, f"frame type 0x{frame.type:x} on a request stream")
        if message.trailers_done:
            raise ProtocolError(ErrorCode.H3_FRAME_UNEXPECTED, "HEADERS after the trailers")
        try:
            decoder_data, headers = self._decoder.feed_header(stream_id, frame.payload)
        except pylsqpack.StreamBlocked:
            message.blocked = True
            return
        except pylsqpack.DecompressionFailed as exc:
            raise ProtocolError(ErrorCode.QPACK_DECOMPRESSION_FAILED, f"QPACK could not decode a header block: {exc}") from None
        self._decoder_out += decoder_data
        self._on_headers(stream_id, message, headers, events)

    def _on_headers(self, stream_id: int, message: _Message, headers: Headers, events: list[H3Event]) -> None:
        if field_section_size(headers) > self.settings.max_field_section_size:
            self._fail_message(
                stream_id, message, ErrorCode.H3_EXCESSIVE_LOAD, "header section larger than MAX_FIELD_SECTION_SIZE", events, 431
            )
            return
        if message.headers_done:
            validate_trailers(headers)
            message.trailers_done = True
            self._check_length(message)
            events.append(TrailersReceived(stream_id, headers))
            return
        if self.is_client:
            status, content_length = validate_response(headers)
            if status < 200:
                if status == 101:
                    raise MessageError("101 Switching Protocols does not exist in HTTP/3")
                return  # informational: wait for the final response
            if message.no_body or status in (204, 304):
                content_length = None
        else:
            head = validate_request(headers, extended_connect=self.settings.enable_connect_protocol)
            content_length = head.content_length
        message.headers_done = True
        message.content_length = content_length
        ended = message.fin_pending and message.reader.at_frame_boundary
        if ended:
            self._check_length(message)
            message.dead = True
        events.append(HeadersReceived(stream_id, headers, ended))

    def _on_data(self, stream_id: int, message: _Message, data: bytes, events: list[H3Event]) -> None:
        if not message.headers_done:
            raise ProtocolError(ErrorCode.H3_FRAME_UNEXPECTED, "DATA before HEADERS on a request stream")
        if message.trailers_done:
            raise ProtocolError(ErrorCode.H3_FRAME_UNEXPECTED, "DATA after the trailers")
        message.body_received += len(data)
        if message.content_length is not None and message.body_received > message.content_length:
            raise MessageError(f"more body than content-length {message.content_length}")
        events.append(DataReceived(stream_id, data, False))

    def _on_message_end(self, stream_id: int, message: _Message, events: list[H3Event]) -> None:
        if not message.reader.at_frame_boundary:
            raise ProtocolError(ErrorCode.H3_FRAME_ERROR, f"stream {stream_id} ended inside a frame")
        message.dead = True
        if not message.headers_done:
            code = ErrorCode.H3_MESSAGE_ERROR if self.is_client else ErrorCode.H3_REQUEST_INCOMPLETE
            events.append(StreamError(stream_id, code, "the stream ended before a complete header section"))
            return
        if message.trailers_done:
            return
        try:
            self._check_length(message)
        except MessageError as exc:
            events.append(StreamError(stream_id, ErrorCode.H3_MESSAGE_ERROR, str(exc)))
            return
        events.append(DataReceived(stream_id, b"", True))

    @staticmethod
    def _check_length(message: _Message) -> None:
        if message.content_length is not None and message.body_received != message.content_length:
            raise MessageError(f"body of {message.body_received} bytes where content-length said {message.content_length}")

    def expect_no_body(self, stream_id: int) -> None:
        """Our request was HEAD: the response's content-length says nothing of its body."""
        message = self._messages.setdefault(stream_id, _Message(self._max_headers_frame))
        message.no_body = True

    # --- the peer's unidirectional streams -------------------------------------

    def receive_uni_data(self, stream_id: int, data: bytes, fin: bool) -> list[H3Event]:
        """Bytes on one of the peer's unidirectional streams."""
        stream = self._uni.get(stream_id)
        if stream is None:
            stream = self._uni[stream_id] = _PeerUniStream()
        events: list[H3Event] = []
        if stream.type is None:
            stream.buffer += data
            parsed = frames.decode_varint(stream.buffer)
            if parsed is None:
                if fin:
                    del self._uni[stream_id]
                return events
            stream.type, start = parsed
            data = bytes(stream.buffer[start:])
            stream.buffer.clear()
            if not self._claim(stream_id, stream.type, data, events):
                return events
        if stream.type not in self._critical or self._critical[stream.type] != stream_id:
            if fin:  # an unknown type's stream, ignored to its end
                del self._uni[stream_id]
            return events
        if stream.type == StreamType.CONTROL:
            self._on_control_data(stream, data, events)
        elif stream.type == StreamType.QPACK_ENCODER:
            self._on_encoder_data(data, events)
        elif stream.type == StreamType.QPACK_DECODER:
            try:
                self._encoder.feed_decoder(data)
            except pylsqpack.DecoderStreamError as exc:
                raise ProtocolError(ErrorCode.QPACK_DECODER_STREAM_ERROR, f"bad QPACK decoder stream: {exc}") from None
        if fin and stream.type in self._critical:
            raise ProtocolError(ErrorCode.H3_CLOSED_CRITICAL_STREAM, f"the peer closed its {StreamType(stream.type).name} stream")
        return events

    def uni_stream_reset(self, stream_id: int) -> None:
        """The peer reset one of its unidirectional streams."""
        stream = self._uni.get(stream_id)
        if stream is not None and stream.type in self._critical and self._critical[stream.type] == stream_id:
            raise ProtocolError(ErrorCode.H3_CLOSED_CRITICAL_STREAM, f"the peer reset its {StreamType(stream.type).name} stream")

    def _claim(self, stream_id: int, stream_type: int, data: bytes, events: list[H3Event]) -> bool:
        if stream_type in (StreamType.CONTROL, StreamType.QPACK_ENCODER, StreamType.QPACK_DECODER):
            if stream_type in self._critical:
                raise ProtocolError(ErrorCode.H3_STREAM_CREATION_ERROR, f"a second {StreamType(stream_type).name} stream")
            self._critical[stream_type] = stream_id
            return True
        if stream_type == StreamType.PUSH:
            if self.is_client:
                raise ProtocolError(ErrorCode.H3_ID_ERROR, "a push stream although we never allowed a push")
            raise ProtocolError(ErrorCode.H3_STREAM_CREATION_ERROR, "a client opened a push stream")
        events.append(UnknownStream(stream_id, stream_type, data))
        return False

    def _on_control_data(self, stream: _PeerUniStream, data: bytes, events: list[H3Event]) -> None:
        stream.reader.append(data)
        try:
            for item in stream.reader.frames():
                if isinstance(item, DataChunk):
                    raise ProtocolError(ErrorCode.H3_FRAME_UNEXPECTED, "DATA on the control stream")
                self._on_control_frame(item, events)
        except frames.FrameTooLarge as exc:
            raise ProtocolError(ErrorCode.H3_EXCESSIVE_LOAD, str(exc)) from None

    def _on_control_frame(self, frame: Frame, events: list[H3Event]) -> None:
        if self.peer_settings is None:
            if frame.type != FrameType.SETTINGS:
                raise ProtocolError(ErrorCode.H3_MISSING_SETTINGS, "the control stream must start with SETTINGS")
            try:
                settings = frames.decode_settings(frame.payload)
            except frames.SettingsError as exc:
                raise ProtocolError(ErrorCode.H3_SETTINGS_ERROR, str(exc)) from None
            except frames.FrameError as exc:
                raise ProtocolError(ErrorCode.H3_FRAME_ERROR, str(exc)) from None
            self._apply_peer_settings(settings)
            events.append(SettingsReceived(settings))
            return
        if frame.type == FrameType.GOAWAY:
            events.append(self._on_goaway(frame.payload))
        elif frame.type == FrameType.MAX_PUSH_ID:
            if self.is_client:
                raise ProtocolError(ErrorCode.H3_FRAME_UNEXPECTED, "MAX_PUSH_ID from a server")
            self._single_varint(frame.payload, "MAX_PUSH_ID")  # we never push; the limit changes nothing
        elif frame.type == FrameType.CANCEL_PUSH:
            self._single_varint(frame.payload, "CANCEL_PUSH")
            raise ProtocolError(ErrorCode.H3_ID_ERROR, "CANCEL_PUSH for a push that cannot exist")
        else:
            raise ProtocolError(ErrorCode.H3_FRAME_UNEXPECTED, f"frame type 0x{frame.type:x} on the control stream")

    @staticmethod
    def _single_varint(payload: bytes, what: str) -> int:
        try:
            return frames.decode_single_varint(payload, what)
        except frames.FrameError as exc:
            raise ProtocolError(ErrorCode.H3_FRAME_ERROR, str(exc)) from None

    def _on_goaway(self, payload: bytes) -> GoAwayReceived:
        identifier = self._single_varint(payload, "GOAWAY")
        if self.is_client and identifier % 4 != 0:
            raise ProtocolError(ErrorCode.H3_ID_ERROR, f"GOAWAY names stream {identifier}, not a client bidirectional stream")
        if self.goaway_received is not None and identifier > self.goaway_received:
            raise ProtocolError(ErrorCode.H3_ID_ERROR, "a GOAWAY raised the limit of an earlier one")
        self.goaway_received = identifier
        return GoAwayReceived(identifier)

    def _apply_peer_settings(self, settings: dict[int, int]) -> None:
        for key in (Setting.ENABLE_CONNECT_PROTOCOL, Setting.H3_DATAGRAM):
            if settings.get(key, 0) > 1:
                raise ProtocolError(ErrorCode.H3_SETTINGS_ERROR, f"setting 0x{int(key):x} must be 0 or 1")
        self.peer_settings = settings
        capacity = min(settings.get(Setting.QPACK_MAX_TABLE_CAPACITY, 0), self.settings.qpack_encoder_table_capacity)
        try:
            self._encoder_out += self._encoder.apply_settings(capacity, settings.get(Setting.QPACK_BLOCKED_STREAMS, 0))
        except Exception as exc:  # pylsqpack raises plain errors for values it cannot use
            raise ProtocolError(ErrorCode.H3_SETTINGS_ERROR, f"QPACK settings refused: {exc}") from None

    def _on_encoder_data(self, data: bytes, events: list[H3Event]) -> None:
        try:
            unblocked = self._decoder.feed_encoder(data)
        except pylsqpack.EncoderStreamError as exc:
            raise ProtocolError(ErrorCode.QPACK_ENCODER_STREAM_ERROR, f"bad QPACK encoder stream: {exc}") from None
        for stream_id in unblocked:
            message = self._messages.get(stream_id)
            if message is None or not message.blocked:
                continue
            try:
                decoder_data, headers = self._decoder.resume_header(stream_id)
            except pylsqpack.DecompressionFailed as exc:
                raise ProtocolError(ErrorCode.QPACK_DECOMPRESSION_FAILED, f"QPACK could not decode a header block: {exc}") from None
            self._decoder_out += decoder_data
            message.blocked = False
            try:
                self._on_headers(stream_id, message, headers, events)
            except MessageError as exc:
                self._fail_message(stream_id, message, ErrorCode.H3_MESSAGE_ERROR, str(exc), events)
                continue
            if not message.dead:
                self._parse_message(stream_id, message, events)

    # --- datagrams (RFC 9297) ----------------------------------------------------

    @staticmethod
    def encode_datagram(stream_id: int, payload: bytes) -> bytes:
        """An HTTP datagram for the request on ``stream_id``."""
        return frames.encode_varint(stream_id // 4) + payload

    @staticmethod
    def decode_datagram(datagram: bytes) -> tuple[int, bytes]:
        """``(stream_id, payload)`` of a received HTTP datagram."""
        parsed = frames.decode_varint(datagram)
        if parsed is None:
            raise ProtocolError(ErrorCode.H3_DATAGRAM_ERROR, "a datagram too short for its quarter stream id")
        return parsed[0] * 4, datagram[parsed[1] :]
