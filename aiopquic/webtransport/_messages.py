"""Messages over a byte stream or over datagrams, JSON by default, msgpack if asked.

:class:`MessageStream` frames each message on any anyio ``ByteStream`` (a
WebTransport stream, a QUIC stream, a TCP stream...) with a **4-byte
big-endian length prefix** then the encoded message. Four fixed bytes rather
than a varint so that a browser page reads them with one
``DataView.getUint32``. :class:`MessageDatagrams` sends one message per
datagram, with no prefix.

Encoding is pluggable: anything with ``encode(obj) -> bytes`` and
``decode(bytes) -> obj`` (:class:`Codec`); ``"json"`` (UTF-8, compact) and
``"msgpack"`` (needs the ``msgpack`` package) are built in.
"""

from __future__ import annotations

import importlib
import json
from typing import Any, Protocol

import anyio
from anyio.abc import ByteStream

#: The default bound on one message's encoded size.
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
#: What a 4-byte length prefix can say.
MAX_PREFIXED_SIZE = 0xFFFF_FFFF
PREFIX_SIZE = 4


class Codec(Protocol):
    """Turns messages into bytes and back."""

    def encode(self, message: Any) -> bytes:
        """The bytes of ``message``."""
        ...

    def decode(self, data: bytes) -> Any:
        """The message ``data`` encodes (raise ``ValueError`` if it encodes none)."""
        ...


class JsonCodec:
    """JSON as compact UTF-8."""

    def encode(self, message: Any) -> bytes:
        """``message`` as JSON (``TypeError`` for what JSON cannot hold)."""
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        """The JSON value in ``data``."""
        return json.loads(data)


class MsgpackCodec:
    """MessagePack, through the ``msgpack`` package (``pip install msgpack``)."""

    def __init__(self) -> None:
        try:
            self._msgpack = importlib.import_module("msgpack")  # optional, and untyped
        except ImportError:
            raise ImportError("the msgpack codec needs the msgpack package: pip install msgpack") from None

    def encode(self, message: Any) -> bytes:
        """``message`` packed (bytes stay bytes, str stays str)."""
        packed: bytes = self._msgpack.packb(message, use_bin_type=True)
        return packed

    def decode(self, data: bytes) -> Any:
        """The value packed in ``data``."""
        try:
            return self._msgpack.unpackb(data, raw=False)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise ValueError(f"not a MessagePack value: {exc}") from None


def get_codec(codec: Codec | str) -> Codec:
    """A codec from its name (``"json"``, ``"msgpack"``) or the codec itself."""
    if codec == "json":
        return JsonCodec()
    if codec == "msgpack":
        return MsgpackCodec()
    if isinstance(codec, str):
        raise ValueError(f"unknown codec {codec!r}: use 'json', 'msgpack' or an object with encode() and decode()")
    return codec


class MessageError(Exception):
    """A message could not be sent or received."""


class MessageTooLarge(MessageError):
    """A message is larger than ``max_message_size`` allows."""

    def __init__(self, size: int, limit: int, direction: str) -> None:
        super().__init__(f"{direction} a message of {size} bytes, over the limit of {limit} (max_message_size)")
        self.size = size
        self.limit = limit


class MessageDecodeError(MessageError):
    """A message's bytes arrived whole but the codec could not decode them."""


def _decode(codec: Codec, data: bytes) -> Any:
    try:
        return codec.decode(data)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MessageDecodeError(f"could not decode a message of {len(data)} bytes: {exc}") from None


class MessageStream:
    """Length-prefixed messages over an anyio ``ByteStream``.

    ``send`` writes one prefix-and-message in a single ``stream.send``, so it
    inherits the stream's cancellation guarantee. ``receive`` is safe to
    cancel: the bytes of a message partly read stay buffered for the next
    call. One task
    should send and one receive at a time.

    A message over ``max_message_size`` raises :class:`MessageTooLarge`; on
    receipt the stream cannot be resynchronised, so close it.
    ``async for message in stream`` runs until the peer ends the stream.
    """

    def __init__(
        self, stream: ByteStream, *, codec: Codec | str = "json", max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        if not 0 < max_message_size <= MAX_PREFIXED_SIZE:
            raise ValueError(f"max_message_size must be from 1 to {MAX_PREFIXED_SIZE}, not {max_message_size}")
        self.stream = stream
        self.codec = get_codec(codec)
        self.max_message_size = max_message_size
        self._buffer = bytearray()  # received, not yet handed out: what makes receive cancel-safe

    async def send(self, message: Any) -> None:
        """Encode and send one message."""
        data = self.codec.encode(message)
        if len(data) > self.max_message_size:
            raise MessageTooLarge(len(data), self.max_message_size, "cannot send")
        await self.stream.send(len(data).to_bytes(PREFIX_SIZE, "big") + data)

    async def receive(self) -> Any:
        """The next message; ``anyio.EndOfStream`` when the peer ended the stream between messages."""
        await self._fill(PREFIX_SIZE)
        size = int.from_bytes(self._buffer[:PREFIX_SIZE], "big")
        if size > self.max_message_size:
            raise MessageTooLarge(size, self.max_message_size, "the peer sent")
        await self._fill(PREFIX_SIZE + size)
        data = bytes(self._buffer[PREFIX_SIZE : PREFIX_SIZE + size])
        del self._buffer[: PREFIX_SIZE + size]
        return _decode(self.codec, data)

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            try:
                chunk = await self.stream.receive()
            except anyio.EndOfStream:
                if self._buffer:
                    raise MessageError("the stream ended inside a message") from None
                raise
            self._buffer += chunk

    async def send_eof(self) -> None:
        """No more messages from us (the peer's ``async for`` ends)."""
        await self.stream.send_eof()

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self.stream.aclose()

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class DatagramTransport(Protocol):
    """What :class:`MessageDatagrams` needs: a session or a QUIC connection."""

    async def send_datagram(self, data: bytes) -> None:
        """Send one datagram."""
        ...

    async def receive_datagram(self) -> bytes:
        """The next datagram."""
        ...


class MessageDatagrams:
    """One message per datagram (no prefix: the datagram is the frame).

    Datagrams may be lost, reordered or duplicated. An oversized or
    undecodable datagram raises from that ``receive`` only: the next call
    goes on with the next datagram.
    """

    def __init__(
        self, transport: DatagramTransport, *, codec: Codec | str = "json", max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        if max_message_size <= 0:
            raise ValueError(f"max_message_size must be positive, not {max_message_size}")
        self.transport = transport
        self.codec = get_codec(codec)
        self.max_message_size = max_message_size

    async def send(self, message: Any) -> None:
        """Encode ``message`` and send it as one datagram."""
        data = self.codec.encode(message)
        if len(data) > self.max_message_size:
            raise MessageTooLarge(len(data), self.max_message_size, "cannot send")
        await self.transport.send_datagram(data)

    async def receive(self) -> Any:
        """The message in the next datagram."""
        data = await self.transport.receive_datagram()
        if len(data) > self.max_message_size:
            raise MessageTooLarge(len(data), self.max_message_size, "the peer sent")
        return _decode(self.codec, data)
