"""MessageStream and MessageDatagrams over in-memory transports, on both backends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.abc import ByteStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiopquic.webtransport._messages import (
    JsonCodec,
    MessageDatagrams,
    MessageDecodeError,
    MessageError,
    MessageStream,
    MessageTooLarge,
    MsgpackCodec,
    get_codec,
)

pytestmark = pytest.mark.anyio


class MemoryByteStream(ByteStream):
    """One end of an in-memory byte stream pair; sends are cut into ``chunk``-byte pieces."""

    def __init__(self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes], chunk: int) -> None:
        self._send = send
        self._receive = receive
        self._chunk = chunk

    async def send(self, item: bytes) -> None:
        for start in range(0, len(item), self._chunk):
            await self._send.send(item[start : start + self._chunk])

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise
        except anyio.ClosedResourceError:
            raise anyio.EndOfStream from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def byte_stream_pair(chunk: int = 1 << 20) -> tuple[MemoryByteStream, MemoryByteStream]:
    a_send, b_receive = anyio.create_memory_object_stream[bytes](100)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](100)
    return MemoryByteStream(a_send, a_receive, chunk), MemoryByteStream(b_send, b_receive, chunk)


MESSAGES: list[Any] = [{"op": "join", "room": "lobby", "n": [1, 2.5, None, True]}, "héllo ✓", 42, [], {}]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_messages_round_trip_even_when_the_bytes_arrive_one_at_a_time(codec: str) -> None:
    left, right = byte_stream_pair(chunk=1)
    sender, receiver = MessageStream(left, codec=codec), MessageStream(right, codec=codec)
    with anyio.fail_after(5):
        for message in MESSAGES:
            await sender.send(message)
        await sender.send_eof()
        assert [message async for message in receiver] == MESSAGES


async def test_the_wire_format_is_a_four_byte_big_endian_length_then_the_message() -> None:
    left, right = byte_stream_pair()
    with anyio.fail_after(5):
        await MessageStream(left).send({"a": 1})
        assert await right.receive() == b"\x00\x00\x00\x07" + b'{"a":1}'


async def test_msgpack_keeps_bytes_and_json_cannot() -> None:
    left, right = byte_stream_pair()
    with anyio.fail_after(5):
        await MessageStream(left, codec="msgpack").send({"blob": b"\x00\xff"})
        assert await MessageStream(right, codec="msgpack").receive() == {"blob": b"\x00\xff"}
        with pytest.raises(TypeError):
            await MessageStream(left).send({"blob": b"\x00"})


async def test_a_pluggable_codec() -> None:
    class Upper:
        def encode(self, message: Any) -> bytes:
            return str(message).upper().encode()

        def decode(self, data: bytes) -> Any:
            return data.decode().lower()

    left, right = byte_stream_pair()
    with anyio.fail_after(5):
        await MessageStream(left, codec=Upper()).send("abc")
        assert await right.receive() == b"\x00\x00\x00\x03ABC"


async def test_messages_over_the_limit_raise_on_both_sides() -> None:
    left, right = byte_stream_pair()
    with anyio.fail_after(5):
        with pytest.raises(MessageTooLarge, match="cannot send a message of 12 bytes, over the limit of 10"):
            await MessageStream(left, max_message_size=10).send("x" * 10)
        await MessageStream(left).send("y" * 100)
        with pytest.raises(MessageTooLarge, match="the peer sent a message of 102 bytes") as info:
            await MessageStream(right, max_message_size=10).receive()
        assert (info.value.size, info.value.limit) == (102, 10)


async def test_a_stream_that_ends_inside_a_message_is_an_error_and_between_messages_is_the_end() -> None:
    left, right = byte_stream_pair()
    with anyio.fail_after(5):
        await left.send(b"\x00\x00\x00\x05abc")
        await left.send_eof()
        receiver = MessageStream(right)
        with pytest.raises(MessageError, match="ended inside a message"):
            await receiver.receive()
    left, right = byte_stream_pair()
    with anyio.fail_after(5):
        await left.send_eof()
        with pytest.raises(anyio.EndOfStream):
            await MessageStream(right).receive()


async def test_an_undecodable_message_raises_and_the_next_one_is_read() -> None:
    left, right = byte_stream_pair()
    receiver = MessageStream(right)
    with anyio.fail_after(5):
        await left.send(b"\x00\x00\x00\x03{x}")
        await MessageStream(left).send(["fine"])
        with pytest.raises(MessageDecodeError, match="could not decode a message of 3 bytes"):
            await receiver.receive()
        assert await receiver.receive() == ["fine"]


async def test_a_cancelled_receive_loses_nothing() -> None:
    left, right = byte_stream_pair()
    receiver = MessageStream(right)
    with anyio.fail_after(5):
        await left.send(b"\x00\x00\x00\x05[1,")  # the prefix and part of the body
        with anyio.move_on_after(0.05) as scope:
            await receiver.receive()
        assert scope.cancelled_caught
        await left.send(b"2]")
        assert await receiver.receive() == [1, 2]


async def test_the_message_stream_is_a_context_manager_that_closes_its_stream() -> None:
    left, right = byte_stream_pair()
    with anyio.fail_after(5):
        async with MessageStream(left) as stream:
            await stream.send(1)
        with pytest.raises(anyio.ClosedResourceError):
            await left.send(b"x")


def test_codec_names_and_limits() -> None:
    assert isinstance(get_codec("json"), JsonCodec)
    assert isinstance(get_codec("msgpack"), MsgpackCodec)
    with pytest.raises(ValueError, match="unknown codec 'xml'"):
        get_codec("xml")
    left, _ = byte_stream_pair()
    with pytest.raises(ValueError, match="max_message_size must be from 1"):
        MessageStream(left, max_message_size=0)
    with pytest.raises(ValueError, match="not a MessagePack value"):
        MsgpackCodec().decode(b"\xc1")


class MemoryDatagrams:
    """A datagram transport: what one end sends, the other receives."""

    def __init__(self, send: MemoryObjectSendStream[bytes], receive: MemoryObjectReceiveStream[bytes]) -> None:
        self._send, self._receive = send, receive

    async def send_datagram(self, data: bytes) -> None:
        await self._send.send(data)

    async def receive_datagram(self) -> bytes:
        return await self._receive.receive()


def datagram_pair() -> tuple[MemoryDatagrams, MemoryDatagrams]:
    a_send, b_receive = anyio.create_memory_object_stream[bytes](100)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](100)
    return MemoryDatagrams(a_send, a_receive), MemoryDatagrams(b_send, b_receive)


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_one_message_per_datagram(codec: str) -> None:
    left, right = datagram_pair()
    sender, receiver = MessageDatagrams(left, codec=codec), MessageDatagrams(right, codec=codec)
    with anyio.fail_after(5):
        for message in MESSAGES:
            await sender.send(message)
        assert [await receiver.receive() for _ in MESSAGES] == MESSAGES


async def test_bad_datagrams_raise_one_at_a_time() -> None:
    left, right = datagram_pair()
    receiver = MessageDatagrams(right, max_message_size=8)
    with anyio.fail_after(5):
        assert len(JsonCodec().encode("x" * 7)) == 9
        with pytest.raises(MessageTooLarge):
            await MessageDatagrams(left, max_message_size=8).send("x" * 7)
        await left.send_datagram(b'"too long"')
        await left.send_datagram(b"{bad")
        await left.send_datagram(b'"ok"')
        with pytest.raises(MessageTooLarge):
            await receiver.receive()
        with pytest.raises(MessageDecodeError):
            await receiver.receive()
        assert await receiver.receive() == "ok"
        await MessageDatagrams(left).send([1])
        assert await right.receive_datagram() == b"[1]"
