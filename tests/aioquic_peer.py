"""An aioquic peer (server or client) running in its own thread and asyncio loop.

aioquic only runs on asyncio, and the interop tests run on trio as well, so the
peer always lives in a separate thread with a private event loop (one code path
for both backends).  The test drives it with :meth:`AioquicPeer.call`, which runs
a function or coroutine in the peer's loop and waits for its result from a
worker thread, with a timeout; the test's own event loop keeps running
aiopquic meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from .loop_thread import LoopThread

T = TypeVar("T")

#: Longest a single peer operation may take before the test fails.
CALL_TIMEOUT = 5.0

#: aioquic sends only datagrams that fit its 1200-byte packets, and a larger one
#: stalls its datagram queue for good, so the echo skips bigger datagrams.
ECHO_DATAGRAM_LIMIT = 1100


class PeerProtocol(QuicConnectionProtocol):
    """Records every QUIC event; echoes the peer's bidi streams and datagrams if asked.

    All methods run in the peer's event loop (use :meth:`AioquicPeer.call`).
    """

    def __init__(self, *args: Any, echo: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.echo = echo
        self.received: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self.datagrams: list[bytes] = []
        #: Streams whose first bytes came before the handshake completed (0-RTT).
        self.early_streams: set[int] = set()
        self.handshake: events.HandshakeCompleted | None = None
        self.terminated: events.ConnectionTerminated | None = None
        self._changed = asyncio.Event()

    # -- events -----------------------------------------------------------

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.HandshakeCompleted):
            self.handshake = event
        elif isinstance(event, events.StreamDataReceived):
            if event.stream_id not in self.received and self.handshake is None:
                self.early_streams.add(event.stream_id)
            self.received.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.ended.add(event.stream_id)
            if self.echo and self._is_peer_bidi(event.stream_id):
                self._quic.send_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, events.StopSendingReceived):
            self.stops[event.stream_id] = event.error_code
        elif isinstance(event, events.DatagramFrameReceived):
            self.datagrams.append(event.data)
            if self.echo and len(event.data) <= ECHO_DATAGRAM_LIMIT:
                self._quic.send_datagram_frame(event.data)
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = event
        self._changed.set()
        self._changed = asyncio.Event()

    def _is_peer_bidi(self, stream_id: int) -> bool:
        """A bidirectional stream the other side opened (the ones echoed)."""
        opened_by_client = stream_id & 1 == 0
        return not stream_id & 2 and opened_by_client != self._quic.configuration.is_client

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    # -- what the tests wait for ----------------------------------------

    async def wait_handshake(self) -> events.HandshakeCompleted:
        await self.wait_until(lambda: self.handshake is not None or self.terminated is not None)
        assert self.handshake is not None, f"handshake failed: {self.terminated}"
        return self.handshake

    async def wait_stream(self, stream_id: int) -> bytes:
        """The whole content of a stream the peer sent, once its FIN arrived."""
        await self.wait_until(lambda: stream_id in self.ended)
        return bytes(self.received[stream_id])

    async def wait_first_stream(self) -> int:
        """The ID of the first stream the peer opened towards us."""
        await self.wait_until(lambda: bool(self.received))
        return next(iter(self.received))

    async def wait_bytes(self, stream_id: int, count: int) -> bytes:
        await self.wait_until(lambda: len(self.received.get(stream_id, b"")) >= count)
        return bytes(self.received[stream_id])

    async def wait_reset(self, stream_id: int) -> int:
        await self.wait_until(lambda: stream_id in self.resets)
        return self.resets[stream_id]

    async def wait_stop_sending(self, stream_id: int) -> int:
        await self.wait_until(lambda: stream_id in self.stops)
        return self.stops[stream_id]

    async def wait_datagrams(self, count: int) -> list[bytes]:
        await self.wait_until(lambda: len(self.datagrams) >= count)
        return list(self.datagrams)

    async def wait_terminated(self) -> events.ConnectionTerminated:
        await self.wait_until(lambda: self.terminated is not None)
        assert self.terminated is not None
        return self.terminated

    # -- actions ----------------------------------------------------------

    def send(self, data: bytes, *, stream_id: int | None = None, uni: bool = False, end: bool = True) -> int:
        """Send on ``stream_id`` (or a new stream); return the stream ID."""
        if stream_id is None:
            stream_id = self._quic.get_next_available_stream_id(is_unidirectional=uni)
        self._quic.send_stream_data(stream_id, data, end_stream=end)
        self.transmit()
        return stream_id

    def send_datagram(self, data: bytes) -> None:
        self._quic.send_datagram_frame(data)
        self.transmit()

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self._quic.reset_stream(stream_id, error_code)
        self.transmit()

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self._quic.stop_stream(stream_id, error_code)
        self.transmit()


class AioquicPeer(LoopThread):
    """A thread running an asyncio loop that hosts aioquic servers and clients."""

    def __init__(self) -> None:
        super().__init__("the aioquic peer thread", CALL_TIMEOUT)
        self._servers: list[QuicServer] = []
        self._clients = contextlib.AsyncExitStack()
        self._accepted: asyncio.Queue[PeerProtocol] | None = None
        #: Every aioquic client connection made, including failed ones.
        self.clients: list[PeerProtocol] = []

    async def _serve_until(self, stop: asyncio.Event) -> None:
        self._accepted = asyncio.Queue()
        self._ready.set()
        await stop.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._clients.aclose(), CALL_TIMEOUT)
        for server in self._servers:
            server.close()

    # -- running code in the peer's loop ----------------------------------

    async def call(self, func: Callable[..., Any], *args: Any, timeout: float = CALL_TIMEOUT, **kwargs: Any) -> Any:
        """Run ``func(*args, **kwargs)`` (a function or coroutine function) in the
        peer's loop and return its result, waiting at most ``timeout`` seconds."""
        assert self._loop is not None

        async def runner() -> Any:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        future = asyncio.run_coroutine_threadsafe(runner(), self._loop)

        def wait() -> Any:
            try:
                return future.result(timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise TimeoutError(
                    f"the aioquic peer did not finish {getattr(func, '__name__', func)!s} "
                    f"within {timeout} s"
                ) from None

        return await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``func(*args, **kwargs)`` in the peer's loop ``delay`` seconds from
        now, without waiting for it: callable from any thread, even while the
        caller's event loop is blocked."""
        assert self._loop is not None
        loop = self._loop
        loop.call_soon_threadsafe(lambda: loop.call_later(delay, lambda: func(*args, **kwargs)))

    # -- server -----------------------------------------------------------

    async def serve(
        self, configuration: QuicConfiguration, host: str = "127.0.0.1", *, echo: bool = True, **kwargs: Any
    ) -> int:
        """Start an aioquic server; return its port.

        ``kwargs`` go to :func:`aioquic.asyncio.serve` (``session_ticket_fetcher``...).
        """
        return int(await self.call(self._serve, configuration, host, echo, kwargs))

    async def _serve(self, configuration: QuicConfiguration, host: str, echo: bool, kwargs: dict[str, Any]) -> int:
        def create_protocol(*args: Any, **kwargs: Any) -> PeerProtocol:
            protocol = PeerProtocol(*args, echo=echo, **kwargs)
            assert self._accepted is not None
            self._accepted.put_nowait(protocol)
            return protocol

        server = await serve(host, 0, configuration=configuration, create_protocol=create_protocol, **kwargs)
        self._servers.append(server)
        assert server._transport is not None
        return int(server._transport.get_extra_info("sockname")[1])

    async def accepted(self) -> PeerProtocol:
        """The next connection the aioquic server accepted, once its handshake is done."""
        protocol: PeerProtocol = await self.call(self._next_accepted)
        return protocol

    async def _next_accepted(self) -> PeerProtocol:
        assert self._accepted is not None
        protocol = await self._accepted.get()
        await protocol.wait_handshake()
        return protocol

    # -- client -----------------------------------------------------------

    async def connect(
        self, host: str, port: int, configuration: QuicConfiguration, *, echo: bool = False, **kwargs: Any
    ) -> PeerProtocol:
        """Connect an aioquic client (handshake done); it is closed by :meth:`stop`.

        ``kwargs`` go to :func:`aioquic.asyncio.connect` (``session_ticket_handler``...).
        """
        protocol: PeerProtocol = await self.call(self._connect, host, port, configuration, echo, kwargs)
        return protocol

    async def _connect(
        self, host: str, port: int, configuration: QuicConfiguration, echo: bool, kwargs: dict[str, Any]
    ) -> PeerProtocol:
        def create_protocol(*args: Any, **kw: Any) -> PeerProtocol:
            protocol = PeerProtocol(*args, echo=echo, **kw)
            self.clients.append(protocol)
            return protocol

        protocol = await self._clients.enter_async_context(
            connect(host, port, configuration=configuration, create_protocol=create_protocol, **kwargs)
        )
        assert isinstance(protocol, PeerProtocol)
        await protocol.wait_handshake()
        return protocol


async def early_data_echo(
    host: str, port: int, configuration: QuicConfiguration, data: bytes
) -> tuple[bytes, events.HandshakeCompleted, bool]:
    """Connect with a session ticket and send ``data`` on a bidi stream before the
    handshake completes (0-RTT); return the echo, the handshake event, and whether
    the handshake was still in progress when the data was sent."""
    async with connect(
        host, port, configuration=configuration, create_protocol=PeerProtocol, wait_connected=False
    ) as protocol:
        assert isinstance(protocol, PeerProtocol)
        sent_early = protocol.handshake is None
        stream_id = protocol.send(data)
        echo = await protocol.wait_stream(stream_id)
        return echo, await protocol.wait_handshake(), sent_early
