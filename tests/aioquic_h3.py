"""aioquic's HTTP/3 (``aioquic.h3.connection.H3Connection``), an independent
HTTP/3 stack, as a server and as a client for the h3 interop tests.

Server: a thread with its own asyncio loop, on 127.0.0.1 and an ephemeral port,
answering tests/h3_app.py's routes (/echo, /bytes/N, /trailers, /headers,
/status/N) plus ones only a protocol-level server can play:

  /malformed/KIND   a broken response, for our client's checks: ``uppercase``
                    (a header name in capitals), ``no-status``, ``two-status``,
                    ``connection`` (a connection-specific field),
                    ``content-length`` (says 10, sends 3 bytes)
  /abort/N          N bytes of body, then RESET_STREAM (H3_INTERNAL_ERROR)
  /close/N          N bytes of body, then CONNECTION_CLOSE (H3_NO_ERROR)
  /hang             response headers, then nothing (the stream stays open)

    with AioquicH3Server(certs) as server:        # or AioquicH3Server(certs).start()
        server.port
        server.requests                           # [(headers, body)] in arrival order
        server.resets                             # {stream_id: error_code} the clients reset

Client: blocking functions, each making one connection in the calling thread
(its own asyncio loop); from a test run them in a worker thread:

    result = await anyio.to_thread.run_sync(partial(h3_request, port, "POST", "/echo", body=b"hi", cafile=...))
    results = await anyio.to_thread.run_sync(partial(h3_requests, port, [H3Request("GET", "/bytes/10")] * 100, ...))
    raw = await anyio.to_thread.run_sync(partial(h3_raw_request, port, [(b":method", b"GET"), ...], ...))

``h3_raw_request`` sends header lists exactly as given (aioquic validates what it
receives, never what it sends), so a test can make malformed requests and read
what the server answered: the reset code of the request stream, a STOP_SENDING
code, or the code of a connection close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.buffer import encode_uint_var
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from aiopquic.cli.certs import CertificateSet

from .h3_app import CHUNK, pattern, trailers_for
from .loop_thread import LoopThread

Headers = list[tuple[bytes, bytes]]

#: Default limit for one whole client call, and for server start/stop.
TIMEOUT = 10.0

H3_NO_ERROR = int(ErrorCode.H3_NO_ERROR)
H3_INTERNAL_ERROR = int(ErrorCode.H3_INTERNAL_ERROR)
H3_MESSAGE_ERROR = int(ErrorCode.H3_MESSAGE_ERROR)
H3_REQUEST_CANCELLED = int(ErrorCode.H3_REQUEST_CANCELLED)


def encode_frame(frame_type: int, payload: bytes) -> bytes:
    """One HTTP/3 frame (type, length, payload), for raw request streams."""
    return encode_uint_var(frame_type) + encode_uint_var(len(payload)) + payload


# -- server ---------------------------------------------------------------------


class _ServerProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, owner: AioquicH3Server, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner
        self._http: H3Connection | None = None
        self._headers: dict[int, Headers] = {}
        self._bodies: dict[int, bytearray] = {}

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._http = H3Connection(self._quic)
        elif isinstance(event, events.StreamReset):
            self._owner.resets[event.stream_id] = event.error_code
        elif isinstance(event, events.ConnectionTerminated):
            self._owner.terminations.append(event)
        if self._http is not None:
            for http_event in self._http.handle_event(event):
                self._http_event(http_event)

    def _http_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            if event.stream_id not in self._headers:
                self._headers[event.stream_id] = list(event.headers)
                self._bodies[event.stream_id] = bytearray()
            # else: request trailers, ignored
        elif isinstance(event, DataReceived) and event.stream_id in self._bodies:
            self._bodies[event.stream_id] += event.data
        else:
            return
        if event.stream_ended:
            headers = self._headers[event.stream_id]
            body = bytes(self._bodies.pop(event.stream_id))
            self._owner.requests.append((headers, body))
            asyncio.get_running_loop().create_task(self._respond(event.stream_id, headers, body))

    async def _respond(self, stream_id: int, headers: Headers, body: bytes) -> None:
        http = self._http
        assert http is not None
        request = dict(headers)
        path = request.get(b":path", b"/").decode("latin-1").split("?")[0]
        send_headers = http.send_headers
        send_data = http.send_data

        def start(status: int, extra: Sequence[tuple[bytes, bytes]] = (), length: int | None = None) -> None:
            fields = [(b":status", str(status).encode()), (b"server", b"aioquic-h3-peer")]
            if length is not None:
                fields.append((b"content-length", str(length).encode()))
            send_headers(stream_id, fields + list(extra))

        try:
            if path == "/echo":
                extra = [(b"content-type", request[b"content-type"])] if b"content-type" in request else []
                start(200, extra, len(body))
                send_data(stream_id, body, True)
            elif path.startswith("/bytes/"):
                size = int(path[len("/bytes/") :])
                start(200, [(b"content-type", b"application/octet-stream")], size)
                sent = 0
                while sent < size:
                    n = min(CHUNK, size - sent)
                    send_data(stream_id, pattern(n, sent), sent + n == size)
                    sent += n
                    self.transmit()
                    if sent % (16 * CHUNK) == 0:
                        await asyncio.sleep(0)
                if size == 0:
                    send_data(stream_id, b"", True)
            elif path == "/trailers":
                start(200, (), len(body))
                send_data(stream_id, body, False)
                send_headers(stream_id, trailers_for(body), end_stream=True)
            elif path == "/headers":
                listed = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers]
                payload = json.dumps(listed).encode()
                start(200, [(b"content-type", b"application/json")], len(payload))
                send_data(stream_id, payload, True)
            elif path.startswith("/status/"):
                start(int(path[len("/status/") :]), (), 0)
                send_data(stream_id, b"", True)
            elif path.startswith("/malformed/"):
                self._malformed(stream_id, path[len("/malformed/") :])
            elif path.startswith("/abort/"):
                size = int(path[len("/abort/") :])
                start(200, (), size * 2)
                send_data(stream_id, pattern(size), False)
                self.transmit()
                await asyncio.sleep(0.05)
                self._quic.reset_stream(stream_id, H3_INTERNAL_ERROR)
            elif path.startswith("/close/"):
                size = int(path[len("/close/") :])
                start(200, (), size * 2)
                send_data(stream_id, pattern(size), False)
                self.transmit()
                await asyncio.sleep(0.05)
                self._quic.close(error_code=H3_NO_ERROR, reason_phrase="closing mid-body")
            elif path == "/hang":
                start(200)
            else:
                start(404, (), 9)
                send_data(stream_id, b"not found", True)
        except Exception as exc:  # a client that went away, a reset stream...
            self._owner.errors.append(exc)
        self.transmit()

    def _malformed(self, stream_id: int, kind: str) -> None:
        quic = self._quic
        status = [(b":status", b"200")]
        fields = {
            "uppercase": status + [(b"X-Upper", b"1")],
            "no-status": [(b"server", b"aioquic-h3-peer")],
            "two-status": status + [(b":status", b"204")],
            "connection": status + [(b"connection", b"keep-alive")],
            "content-length": status + [(b"content-length", b"10")],
        }[kind]
        # H3Connection.send_headers does not validate: the fields go out as they are.
        assert self._http is not None
        self._http.send_headers(stream_id, fields)
        body = b"abc" if kind == "content-length" else b""
        quic.send_stream_data(stream_id, encode_frame(0x0, body) if body else b"", end_stream=True)


class AioquicH3Server(LoopThread):
    """aioquic's HTTP/3 server in a thread with its own asyncio loop."""

    def __init__(self, certs: CertificateSet, *, host: str = "127.0.0.1", **configuration: Any) -> None:
        """``configuration``: extra ``QuicConfiguration`` arguments (``max_data``...)."""
        super().__init__("the aioquic h3 server", TIMEOUT)
        self.certs = certs
        self.host = host
        self.configuration = configuration
        self.port = 0
        #: (headers, body) of every complete request, in arrival order.
        self.requests: list[tuple[Headers, bytes]] = []
        #: RESET_STREAM codes the clients sent, by stream ID.
        self.resets: dict[int, int] = {}
        #: Every connection's end as aioquic saw it.
        self.terminations: list[events.ConnectionTerminated] = []
        #: Failures while answering (e.g. sending on a stream the client reset).
        self.errors: list[Exception] = []
        self._server: QuicServer | None = None

    async def _serve_until(self, stop: asyncio.Event) -> None:
        configuration = QuicConfiguration(
            is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536, **self.configuration
        )
        configuration.load_cert_chain(str(self.certs.certfile), str(self.certs.keyfile))

        def create_protocol(*args: Any, **kwargs: Any) -> _ServerProtocol:
            return _ServerProtocol(*args, owner=self, **kwargs)

        self._server = await serve(self.host, 0, configuration=configuration, create_protocol=create_protocol)
        assert self._server._transport is not None
        self.port = int(self._server._transport.get_extra_info("sockname")[1])
        self._ready.set()
        try:
            await stop.wait()
        finally:
            self._server.close()


# -- client ---------------------------------------------------------------------


@dataclass
class H3Request:
    method: str = "GET"
    path: str = "/"
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes = b""
    #: Request trailers, sent after the body.
    trailers: Sequence[tuple[bytes, bytes]] = ()


@dataclass
class H3Result:
    """What the client saw on one request stream."""

    status: int | None = None
    #: Response header fields, pseudo-headers removed.
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    trailers: Headers = field(default_factory=list)
    #: Error code of the server's RESET_STREAM on this stream, if any.
    reset_code: int | None = None
    #: Error code of the server's STOP_SENDING on this stream, if any.
    stop_sending_code: int | None = None
    #: Error code of the connection close, if the connection ended before the response did.
    close_code: int | None = None
    #: The whole response arrived (FIN).
    complete: bool = False

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.results: dict[int, H3Result] = {}
        self._bodies: dict[int, bytearray] = {}
        self.terminated: events.ConnectionTerminated | None = None
        self._changed = asyncio.Event()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        result = self.results.get(getattr(event, "stream_id", -1))
        if isinstance(event, events.StreamReset) and result is not None:
            result.reset_code = event.error_code
        elif isinstance(event, events.StopSendingReceived) and result is not None:
            result.stop_sending_code = event.error_code
        elif isinstance(event, events.ConnectionTerminated):
            self.terminated = event
            for result in self.results.values():
                if not result.complete and result.reset_code is None:
                    result.close_code = int(event.error_code)
        for http_event in self.http.handle_event(event):
            self._http_event(http_event)
        # aioquic's H3 layer closes the connection itself on a malformed response;
        # its ConnectionTerminated would only come after the draining period
        closing = getattr(self._quic, "_close_event", None)
        if closing is not None and self.terminated is None:
            self.quic_event_received(closing)
        self._changed.set()

    def _http_event(self, event: H3Event) -> None:
        result = self.results.get(getattr(event, "stream_id", -1))
        if result is None:
            return
        if isinstance(event, HeadersReceived):
            if result.status is None:
                fields = dict(event.headers)
                status = fields.get(b":status", b"")
                if status.startswith(b"1") and len(status) == 3:  # interim response
                    return
                result.status = int(status) if status.isdigit() else None
                result.headers = [(k, v) for k, v in event.headers if not k.startswith(b":")]
            else:
                result.trailers = list(event.headers)
        elif isinstance(event, DataReceived):
            self._bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
        if getattr(event, "stream_ended", False):
            result.complete = True

    def result(self, stream_id: int) -> H3Result:
        result = self.results[stream_id]
        result.body = bytes(self._bodies.pop(stream_id, b""))
        return result

    def done(self, stream_id: int) -> bool:
        result = self.results[stream_id]
        return result.complete or result.reset_code is not None or self.terminated is not None

    async def wait(self, stream_ids: Sequence[int]) -> None:
        while not all(self.done(s) for s in stream_ids):
            self._changed.clear()
            await self._changed.wait()

    def start_request(self, headers: Headers, body: bytes, trailers: Sequence[tuple[bytes, bytes]] = ()) -> int:
        stream_id = self._quic.get_next_available_stream_id()
        self.results[stream_id] = H3Result()
        self.http.send_headers(stream_id, headers, end_stream=not body and not trailers)
        if body:
            self.http.send_data(stream_id, body, end_stream=not trailers)
        if trailers:
            self.http.send_headers(stream_id, list(trailers), end_stream=True)
        self.transmit()
        return stream_id

    def start_raw(self, data: bytes, end_stream: bool) -> int:
        stream_id = self._quic.get_next_available_stream_id()
        self.results[stream_id] = H3Result()
        self._quic.send_stream_data(stream_id, data, end_stream)
        self.transmit()
        return stream_id


def _client_configuration(
    host: str, cafile: str | os.PathLike[str] | None, verify: bool, configuration: dict[str, Any]
) -> QuicConfiguration:
    import ssl

    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=host, **configuration)
    if cafile is not None:
        config.load_verify_locations(cafile=os.fspath(cafile))
    if not verify:
        config.verify_mode = ssl.CERT_NONE
    return config


def request_headers(request: H3Request, authority: str) -> Headers:
    return [
        (b":method", request.method.encode()),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", request.path.encode()),
        *[(bytes(k), bytes(v)) for k, v in request.headers],
    ]


@contextlib.asynccontextmanager
async def _connect(address: str, port: int, config: QuicConfiguration) -> AsyncIterator[_ClientProtocol]:
    """aioquic.asyncio.connect without its wait for the draining period on the way out
    (about 0.1 s a connection): CONNECTION_CLOSE goes out at once and that is all."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _ClientProtocol(QuicConnection(configuration=config)), sock=sock
    )
    assert isinstance(protocol, _ClientProtocol)
    try:
        protocol.connect((address, port))
        await protocol.wait_connected()
        yield protocol
    finally:
        protocol.close()  # sends CONNECTION_CLOSE now
        transport.close()


async def _exchange(
    port: int,
    host: str,
    address: str,
    config: QuicConfiguration,
    timeout: float,
    action: Any,
) -> list[H3Result]:
    async def run() -> list[H3Result]:
        async with _connect(address, port, config) as protocol:
            stream_ids = action(protocol)
            await protocol.wait(stream_ids)
            return [protocol.result(s) for s in stream_ids]

    return await asyncio.wait_for(run(), timeout)


def h3_requests(
    port: int,
    requests: Sequence[H3Request],
    *,
    host: str = "localhost",
    address: str = "127.0.0.1",
    cafile: str | os.PathLike[str] | None = None,
    verify: bool = True,
    timeout: float = TIMEOUT,
    **configuration: Any,
) -> list[H3Result]:
    """Send ``requests`` concurrently on one connection to ``address:port`` (SNI and
    ``:authority`` ``host``); return the results in the same order. Blocking.
    ``configuration``: extra aioquic ``QuicConfiguration`` arguments."""
    config = _client_configuration(host, cafile, verify, configuration)
    authority = f"{host}:{port}"

    def action(protocol: _ClientProtocol) -> list[int]:
        return [protocol.start_request(request_headers(r, authority), r.body, r.trailers) for r in requests]

    return asyncio.run(_exchange(port, host, address, config, timeout, action))


def h3_request(
    port: int,
    method: str = "GET",
    path: str = "/",
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    trailers: Sequence[tuple[bytes, bytes]] = (),
    **kwargs: Any,
) -> H3Result:
    """One request on its own connection; keyword arguments as :func:`h3_requests`."""
    return h3_requests(port, [H3Request(method, path, headers, body, trailers)], **kwargs)[0]


def h3_get_url(url: str, **kwargs: Any) -> H3Result:
    """GET ``https://host:port/path`` (connecting to 127.0.0.1 unless the host is an IP)."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    host = parts.hostname
    address = host if host[0].isdigit() or ":" in host else "127.0.0.1"
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return h3_request(parts.port, "GET", path, host=host, address=address, **kwargs)


def h3_raw_request(
    port: int,
    headers: Headers | None,
    body: bytes = b"",
    *,
    raw: bytes = b"",
    end_stream: bool = True,
    host: str = "localhost",
    address: str = "127.0.0.1",
    cafile: str | os.PathLike[str] | None = None,
    verify: bool = True,
    timeout: float = TIMEOUT,
    **configuration: Any,
) -> H3Result:
    """One request stream whose content the caller chooses, sent as it is: a HEADERS
    frame of ``headers`` (QPACK-encoded, not validated; None: no HEADERS frame),
    a DATA frame of ``body`` if not empty, then the bytes ``raw`` (any frames, see
    :func:`encode_frame`), and FIN if ``end_stream``.

    Returns what came back: a response, a reset (``reset_code``, e.g.
    :data:`H3_MESSAGE_ERROR`), a STOP_SENDING code, or a connection close
    (``close_code``). With ``end_stream=False`` and a server that neither answers nor
    resets, it waits ``timeout`` and raises ``TimeoutError``."""
    config = _client_configuration(host, cafile, verify, configuration)

    def action(protocol: _ClientProtocol) -> list[int]:
        stream_id = protocol._quic.get_next_available_stream_id()
        protocol.results[stream_id] = H3Result()
        if headers is not None:
            # H3Connection.send_headers QPACK-encodes without validating
            protocol.http.send_headers(stream_id, list(headers))
        if body:
            protocol._quic.send_stream_data(stream_id, encode_frame(0x0, body))
        protocol._quic.send_stream_data(stream_id, raw, end_stream)
        protocol.transmit()
        return [stream_id]

    return asyncio.run(_exchange(port, host, address, config, timeout, action))[0]
