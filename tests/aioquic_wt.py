"""aioquic's WebTransport (draft-02, its H3Connection with ``enable_webtransport=True``)
as an independent peer.

Its client against our server: one session,
a bidi echo, a uni stream answered on a uni stream, a datagram echo, then a
CLOSE_WEBTRANSPORT_SESSION capsule that aioquic knows nothing about (built
here, sent as DATA on the CONNECT stream). Blocking (asyncio.run): call it
through helpers.run_blocking.

Its server (:class:`AioquicWebTransportServer`) for our client: the same
echoes, our close capsule noted, and a close of its own with code 77."""

from __future__ import annotations

import asyncio
import os
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.buffer import Buffer, BufferReadError, encode_uint_var
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection
from aioquic.h3.events import DataReceived, DatagramReceived, H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StopSendingReceived

from aiopquic.cli.certs import CertificateSet

from .loop_thread import LoopThread

CLOSE_WEBTRANSPORT_SESSION = 0x2843


@dataclass
class SessionReport:
    """What aioquic's client saw of the session."""

    status: int = 0
    bidi_echo: bytes = b""
    uni_echo: bytes = b""
    datagram_echo: bytes = b""
    streams: dict[int, bytearray] = field(default_factory=dict)


class _Client(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.report = SessionReport()
        self.ended: dict[int, asyncio.Event] = {}
        self.headers = asyncio.Event()
        self.datagram = asyncio.Event()
        self.connect_ended = asyncio.Event()  # the server's end of the CONNECT stream
        #: What came on the CONNECT stream, in order: "data", "end", "stop_sending".
        self.connect_events: list[str] = []
        self.connect_data = bytearray()
        self.session_id: int | None = None

    def open_session(self, port: int, path: str, *extra: tuple[bytes, bytes]) -> int:
        """Send a draft-02 WebTransport CONNECT for ``path``; its stream id."""
        session = self.session_id = self._quic.get_next_available_stream_id()
        self.http.send_headers(session, [
            (b":method", b"CONNECT"), (b":protocol", b"webtransport"), (b":scheme", b"https"),
            (b":authority", f"localhost:{port}".encode()), (b":path", path.encode()),
            (b"sec-webtransport-http3-draft02", b"1"), *extra,
        ])
        self.transmit()
        return session

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StopSendingReceived) and event.stream_id == self.session_id:
            self.connect_events.append("stop_sending")
        for http_event in self.http.handle_event(event):
            self._on(http_event)

    def _on(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self.report.status = int(dict(event.headers)[b":status"])
            self.headers.set()
        elif isinstance(event, WebTransportStreamDataReceived):
            self.report.streams.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.stream_ended:
                self.ended.setdefault(event.stream_id, asyncio.Event()).set()
        elif isinstance(event, DataReceived) and event.stream_id == self.session_id:
            if event.data:
                self.connect_events.append("data")
                self.connect_data.extend(event.data)
            if event.stream_ended:
                self.connect_events.append("end")
                self.connect_ended.set()
        elif isinstance(event, DatagramReceived):
            self.report.datagram_echo = event.data
            self.datagram.set()

    async def ended_stream(self, stream_id: int | None = None) -> bytes:
        """The data of ``stream_id`` (or of the first server-opened stream) once it ended."""
        while stream_id is None:
            opened = [s for s in self.report.streams if s % 4 == 3]
            if opened:
                stream_id = opened[0]
            else:
                await asyncio.sleep(0.01)
        await self.ended.setdefault(stream_id, asyncio.Event()).wait()
        return bytes(self.report.streams[stream_id])


def _client_config(cafile: str | os.PathLike[str]) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost",
                               max_datagram_frame_size=65536)
    config.load_verify_locations(cafile=os.fspath(cafile))
    config.verify_mode = ssl.CERT_REQUIRED
    return config


def aioquic_session(port: int, path: str, *, cafile: str | os.PathLike[str], payload: bytes,
                    close_code: int, close_reason: str) -> SessionReport:
    """Run the whole session against 127.0.0.1:``port``; what it saw."""
    config = _client_config(cafile)

    async def run() -> SessionReport:
        async with connect("127.0.0.1", port, configuration=config, create_protocol=_Client) as client:
            assert isinstance(client, _Client)
            session = client.open_session(port, path, (b"origin", b"https://aioquic.test"))
            await client.headers.wait()
            if client.report.status != 200:
                return client.report
            bidi = client.http.create_webtransport_stream(session)
            # aioquic 1.x marks only peer-opened bidi streams as WebTransport's: the
            # answer on one it opened would be parsed as HTTP/3 frames (and fail).
            with client.http._get_or_create_stream(bidi) as mine:
                mine.frame_type, mine.session_id = FrameType.WEBTRANSPORT_STREAM, session
            client._quic.send_stream_data(bidi, payload, end_stream=True)
            uni = client.http.create_webtransport_stream(session, is_unidirectional=True)
            client._quic.send_stream_data(uni, b"one way", end_stream=True)
            client.http.send_datagram(session, b"tick")
            client.transmit()
            client.report.bidi_echo = await client.ended_stream(bidi)
            client.report.uni_echo = await client.ended_stream()
            await client.datagram.wait()
            reason = close_reason.encode()
            value = struct.pack("!I", close_code) + reason
            capsule = encode_uint_var(CLOSE_WEBTRANSPORT_SESSION) + encode_uint_var(len(value)) + value
            client.http.send_data(session, capsule, end_stream=True)
            client.transmit()
            await client.connect_ended.wait()  # the server's answer to the close
            return client.report

    return asyncio.run(asyncio.wait_for(run(), 15))


def aioquic_session_closed_by_server(port: int, path: str, *, cafile: str | os.PathLike[str]) -> tuple[list[str], bytes]:
    """Open a session the server closes at once; what came on the CONNECT
    stream, in order, by the time the server's end of it arrived, and its bytes."""
    config = _client_config(cafile)

    async def run() -> tuple[list[str], bytes]:
        async with connect("127.0.0.1", port, configuration=config, create_protocol=_Client) as client:
            assert isinstance(client, _Client)
            session = client.open_session(port, path)
            await client.connect_ended.wait()
            seen = list(client.connect_events)
            client.http.send_data(session, b"", end_stream=True)  # our answer to the close
            client.transmit()
            return seen, bytes(client.connect_data)

    return asyncio.run(asyncio.wait_for(run(), 15))


# -- server -----------------------------------------------------------------------


@dataclass
class ServerSeen:
    """What aioquic's server saw of our client's sessions."""

    paths: list[str] = field(default_factory=list)
    #: (code, reason) of every CLOSE_WEBTRANSPORT_SESSION capsule received.
    closes: list[tuple[int, str]] = field(default_factory=list)


class _ServerProtocol(QuicConnectionProtocol):
    """``/echo``: bidi streams echoed, a uni stream answered on one of the server's,
    datagrams echoed, the client's close capsule noted and answered with FIN.
    ``/close``: the server closes the session with code 77 once a stream ended."""

    def __init__(self, *args: Any, seen: ServerSeen, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic, enable_webtransport=True)
        self.seen = seen
        self.paths: dict[int, str] = {}  # session id -> path
        self.buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for http_event in self.http.handle_event(event):
            self._on(http_event)
        self.transmit()

    def _on(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            headers = dict(event.headers)
            path = headers.get(b":path", b"").decode()
            if headers.get(b":method") == b"CONNECT" and headers.get(b":protocol") == b"webtransport":
                self.paths[event.stream_id] = path
                self.seen.paths.append(path)
                status = b"200" if path in ("/echo", "/close") else b"404"
                self.http.send_headers(event.stream_id, [(b":status", status), (b"sec-webtransport-http3-draft", b"draft02")],
                                       end_stream=status != b"200")
        elif isinstance(event, WebTransportStreamDataReceived):
            data = self.buffers.setdefault(event.stream_id, bytearray())
            data.extend(event.data)
            if event.stream_ended:
                self._answer(event.session_id, event.stream_id, bytes(self.buffers.pop(event.stream_id)))
        elif isinstance(event, DatagramReceived):
            self.http.send_datagram(event.stream_id, event.data)
        elif isinstance(event, DataReceived) and event.stream_id in self.paths:
            data = self.buffers.setdefault(event.stream_id, bytearray())
            data.extend(event.data)
            while True:  # capsules: type, length, payload
                buf = Buffer(data=bytes(data))
                try:
                    capsule_type, length = buf.pull_uint_var(), buf.pull_uint_var()
                    payload = buf.pull_bytes(length)
                except BufferReadError:
                    break
                del data[:buf.tell()]
                if capsule_type == CLOSE_WEBTRANSPORT_SESSION:
                    self.seen.closes.append((struct.unpack("!I", payload[:4])[0], payload[4:].decode()))
            if event.stream_ended:
                self.http.send_data(event.stream_id, b"", end_stream=True)

    def _answer(self, session_id: int, stream_id: int, data: bytes) -> None:
        if self.paths.get(session_id) == "/close":
            value = struct.pack("!I", 77) + b"closed by aioquic"
            capsule = encode_uint_var(CLOSE_WEBTRANSPORT_SESSION) + encode_uint_var(len(value)) + value
            self.http.send_data(session_id, capsule, end_stream=True)
        elif stream_id % 4 == 0:  # the client's bidi stream: echo on it
            self._quic.send_stream_data(stream_id, data, end_stream=True)
        else:  # its uni stream: answer on one of ours
            back = self.http.create_webtransport_stream(session_id, is_unidirectional=True)
            self._quic.send_stream_data(back, data, end_stream=True)


class AioquicWebTransportServer(LoopThread):
    """aioquic's WebTransport server (draft-02, ``H3Connection(enable_webtransport=True)``)
    in a thread with its own loop, on 127.0.0.1."""

    def __init__(self, certs: CertificateSet) -> None:
        super().__init__("the aioquic WebTransport server", 10.0)
        self.certs = certs
        self.port = 0
        self.seen = ServerSeen()
        self._server: QuicServer | None = None

    async def _serve_until(self, stop: asyncio.Event) -> None:
        configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536)
        configuration.load_cert_chain(str(self.certs.certfile), str(self.certs.keyfile))

        def create_protocol(*args: Any, **kwargs: Any) -> _ServerProtocol:
            return _ServerProtocol(*args, seen=self.seen, **kwargs)

        self._server = await serve("127.0.0.1", 0, configuration=configuration, create_protocol=create_protocol)
        assert self._server._transport is not None
        self.port = int(self._server._transport.get_extra_info("sockname")[1])
        self._ready.set()
        try:
            await stop.wait()
        finally:
            self._server.close()
