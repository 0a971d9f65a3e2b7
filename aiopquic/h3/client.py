"""The HTTP/3 client: ``open_h3_connection``, ``H3Connection`` and its responses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Generator, Iterable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..quic.client import open_quic_connection
from ..quic.config import QuicConfig
from ..quic.connection import QuicConnection
from ..quic.errors import ConnectionClosed, StreamReset
from ..quic.stream import QuicReceiveStream, QuicStream
from ._events import DataReceived, HeadersReceived, StreamError, TrailersReceived
from ._frames import ErrorCode
from ._headers import CONNECTION_SPECIFIC, Headers
from ._protocol import H3Settings, ProtocolError
from ._session import H3Session, RequestStream
from .errors import H3ProtocolError, RequestRejected

__all__ = ["H3Connection", "H3Response", "H3StreamResponse", "open_h3_connection"]

logger = logging.getLogger("aiopquic.h3.client")

HeaderInput = Iterable[tuple[str | bytes, str | bytes]]
Content = bytes | bytearray | memoryview | AsyncIterable[bytes]


def _to_bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


@dataclass
class H3Response:
    """A whole response: status, headers (lowercase names), body and trailers."""

    status: int
    headers: Headers
    content: bytes = b""
    trailers: Headers = field(default_factory=list)
    stream_id: int = -1

    def header(self, name: str | bytes) -> bytes | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        key = _to_bytes(name).lower()
        return next((value for n, value in self.headers if n == key), None)


class H3StreamResponse:
    """A response whose body is read as it arrives (from :meth:`H3Connection.stream`)."""

    def __init__(self, request: RequestStream, status: int, headers: Headers) -> None:
        self._request = request
        self.status = status
        self.headers = headers
        #: The trailer section, once the body has been read to its end.
        self.trailers: Headers = []
        self.stream_id = request.stream_id
        self._done = False

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body in pieces as they arrive."""
        while not self._done:
            try:
                event = await self._request.receive_event()
            except StreamReset as exc:
                self._done = True
                raise _reset_error(exc) from None
            if event is None:
                self._done = True
            elif isinstance(event, DataReceived):
                self._done = event.stream_ended
                if event.data:
                    yield event.data
            elif isinstance(event, TrailersReceived):
                self.trailers = event.headers
                self._done = True
            else:  # a StreamError: the protocol reports trailers as TrailersReceived
                assert isinstance(event, StreamError)
                self._done = True
                raise _malformed(self._request, event)

    async def aread(self) -> bytes:
        """The rest of the body, whole."""
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    def aclose(self) -> None:
        """Stop reading: the server is asked to stop sending what is left."""
        self._request.close()


def _malformed(request: RequestStream, error: StreamError) -> H3ProtocolError:
    request.reset(error.error_code)
    return H3ProtocolError(f"malformed response on stream {request.stream_id}: {error.reason}", error_code=error.error_code)


def _bounded(seconds: float | None) -> AbstractContextManager[object]:
    """``anyio.fail_after(seconds)``, or nothing for no bound: a cancel scope
    without a deadline would cost a request its setting up and tearing down."""
    return nullcontext() if seconds is None else anyio.fail_after(seconds)


def _reset_error(exc: StreamReset) -> Exception:
    if exc.error_code == ErrorCode.H3_REQUEST_REJECTED:
        return RequestRejected(f"the server rejected the request on stream {exc.stream_id}: send it again")
    return exc


class H3Connection:
    """One HTTP/3 connection to a server (from :func:`open_h3_connection`).

    Any number of requests may run on it at once, from any tasks.
    """

    def __init__(self, quic: QuicConnection, authority: str, *, settings: H3Settings | None = None) -> None:
        self.quic = quic
        self.authority = authority
        self.session = H3Session(quic, is_client=True, settings=settings)
        self.session.on_goaway = self._on_goaway
        #: An extension's taker of the bidirectional streams a server opens
        #: (WebTransport's); without one they break HTTP/3.
        self.on_peer_stream: Callable[[QuicStream], Coroutine[Any, Any, None]] | None = None
        self._goaway: int | None = None
        self._task_group: TaskGroup | None = None
        self._cm: Any = None

    @property
    def available(self) -> bool:
        """True while new requests may go on this connection (no GOAWAY, not closed)."""
        return self._goaway is None and not self.quic.closed and self.session.error is None

    def _on_goaway(self, stream_id: int) -> None:
        self._goaway = stream_id

    async def _start(self, task_group: TaskGroup) -> None:
        """Open our control streams and read the server's in ``task_group``."""
        self._task_group = task_group
        await self.session.open()
        task_group.start_soon(self._accept_streams, name=f"aiopquic h3 client {self.authority}")

    async def _accept_streams(self) -> None:
        try:
            async for stream in self.quic:
                if isinstance(stream, QuicReceiveStream):
                    assert self._task_group is not None
                    self._task_group.start_soon(self.session.read_uni_stream, stream)
                elif isinstance(stream, QuicStream):
                    if self.on_peer_stream is None:
                        self.session.fail(ProtocolError(ErrorCode.H3_STREAM_CREATION_ERROR, "the server opened a bidirectional stream"))
                        return
                    assert self._task_group is not None
                    self._task_group.start_soon(self.on_peer_stream, stream)
        except (ConnectionClosed, anyio.ClosedResourceError):
            pass

    async def __aenter__(self) -> H3Connection:
        if self._task_group is None:
            self._cm = anyio.create_task_group()
            await self.quic.__aenter__()
            try:
                await self._start(await self._cm.__aenter__())
            except BaseException as exc:
                await self._exit(type(exc), exc, exc.__traceback__)
                raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._exit(exc_type, exc, tb)

    async def _exit(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        # Reverse order of entry: our task group, then the QUIC connection.
        self.quic.close(ErrorCode.H3_NO_ERROR, "")
        try:
            if self._cm is not None:
                cm, self._cm = self._cm, None
                cm.cancel_scope.cancel()
                await cm.__aexit__(None, None, None)
        finally:
            await self.quic.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close the connection (H3_NO_ERROR); requests still running fail."""
        self.quic.close(ErrorCode.H3_NO_ERROR, "")
        await self.quic.wait_closed()

    def _request_headers(self, method: str, path: str, headers: HeaderInput, content: Content) -> Headers:
        if not path.startswith("/") and not (path == "*" and method == "OPTIONS"):
            raise ValueError(f"path must start with '/', got {path!r}")
        authority = self.authority.encode()
        regular: Headers = []
        for name, value in headers:
            key = _to_bytes(name).lower()
            if key == b"host":
                authority = _to_bytes(value)
            elif key not in CONNECTION_SPECIFIC:
                regular.append((key, _to_bytes(value)))
        if isinstance(content, (bytes, bytearray, memoryview)) and (content or method in ("POST", "PUT", "PATCH")):
            if not any(key == b"content-length" for key, _ in regular):
                regular.append((b"content-length", str(len(content)).encode()))
        return [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority),
            (b":path", path.encode()),
            *regular,
        ]

    async def _send_request(self, method: str, path: str, headers: HeaderInput, content: Content) -> RequestStream:
        request_headers = self._request_headers(method, path, headers, content)
        request = await self._open_request(method)
        await self._send_message(request, request_headers, content)
        return request

    async def _open_request(self, method: str) -> RequestStream:
        """A new request stream (waits while the server allows no more streams)."""
        if not self.available:
            if self.session.error is not None:
                raise self.session.error
            if self._goaway is not None:
                raise RequestRejected("the server sent GOAWAY: open a new connection for more requests")
        stream = await self.quic.open_stream()
        request = self.session.request_stream(stream)
        if method == "HEAD":
            self.session.protocol.expect_no_body(stream.stream_id)
        return request

    async def _send_message(
        self, request: RequestStream, request_headers: Headers, content: Content, *, write_timeout: float | None = None
    ) -> None:
        """Send the request's headers and body; each send may take ``write_timeout``
        seconds (``TimeoutError`` after that: the stream is reset)."""
        try:
            if isinstance(content, (bytes, bytearray, memoryview)):
                with _bounded(write_timeout):
                    await request.send_headers(request_headers, end_stream=not content)
                if content:
                    with _bounded(write_timeout):
                        await request.send_data(content, end_stream=True)
            else:
                with _bounded(write_timeout):
                    await request.send_headers(request_headers)
                async for chunk in content:
                    with _bounded(write_timeout):
                        await request.send_data(chunk)
                with _bounded(write_timeout):
                    await request.send_data(b"", end_stream=True)
        except StreamReset as exc:
            # STOP_SENDING: the server answers without reading the rest (RFC 9114 4.1).
            if exc.error_code != ErrorCode.H3_NO_ERROR:
                request.close()
                raise _reset_error(exc) from None
        except BaseException:
            request.reset(ErrorCode.H3_REQUEST_CANCELLED)
            request.close()
            raise

    async def _receive_head(self, request: RequestStream) -> H3StreamResponse:
        try:
            event = await request.receive_event()
        except StreamReset as exc:
            raise _reset_error(exc) from None
        except ConnectionClosed:
            if self._goaway is not None and request.stream_id >= self._goaway:
                raise RequestRejected(
                    f"the server sent GOAWAY before request stream {request.stream_id}: send it again"
                ) from None
            raise
        if isinstance(event, StreamError):
            raise _malformed(request, event)
        if not isinstance(event, HeadersReceived):
            raise H3ProtocolError(
                f"the server ended stream {request.stream_id} without a response", error_code=ErrorCode.H3_MESSAGE_ERROR
            )
        status = int(next(value for name, value in event.headers if name == b":status"))
        headers = [(name, value) for name, value in event.headers if name[:1] != b":"]
        return H3StreamResponse(request, status, headers)

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, headers: HeaderInput = (), content: Content = b""
    ) -> AsyncIterator[H3StreamResponse]:
        """Send a request; yield the response once its headers are in, body unread.

        ``async with conn.stream("GET", "/big") as response:`` then
        ``async for chunk in response.aiter_bytes()``. Leaving the block stops
        the rest of the body (STOP_SENDING to the server).
        """
        request = await self._send_request(method, path, headers, content)
        try:
            response = await self._receive_head(request)
            yield response
        except BaseException:
            request.reset(ErrorCode.H3_REQUEST_CANCELLED)
            raise
        finally:
            request.close()

    async def request(
        self, method: str, path: str, *, headers: HeaderInput = (), content: Content = b""
    ) -> H3Response:
        """Send a request and read the whole response.

        ``content`` is the body: bytes, or an async iterable of bytes (streamed).
        Raises :class:`H3ProtocolError` for a malformed response,
        :class:`RequestRejected` when the server did not process the request,
        ``StreamReset`` when it reset it, ``ConnectionClosed`` when the
        connection ends first.
        """
        async with self.stream(method, path, headers=headers, content=content) as response:
            body = await response.aread()
            return H3Response(response.status, response.headers, body, response.trailers, response.stream_id)


class _OpenH3Connection:
    """What :func:`open_h3_connection` returns: awaitable, and an async context manager."""

    def __init__(self, host: str, port: int, config: QuicConfig, settings: H3Settings) -> None:
        self._args = (host, port, config, settings)
        self._conn: H3Connection | None = None

    async def _connect(self) -> H3Connection:
        host, port, config, settings = self._args
        if "h3" not in config.alpn:
            raise ValueError(f"HTTP/3 needs 'h3' in QuicConfig.alpn (it is {list(config.alpn)!r})")
        quic = await open_quic_connection(host, port, config=config)
        return H3Connection(quic, _authority(host, port), settings=settings)

    def __await__(self) -> Generator[Any, None, H3Connection]:
        return self._connect().__await__()

    async def __aenter__(self) -> H3Connection:
        self._conn = await self._connect()
        return await self._conn.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        await self._conn.__aexit__(exc_type, exc, tb)


def _authority(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == 443 else f"{name}:{port}"


def open_h3_connection(
    host: str, port: int, *, config: QuicConfig, qpack_encoder_table_capacity: int = 0
) -> _OpenH3Connection:
    """Connect to an HTTP/3 server (``config.alpn`` must offer ``"h3"``).

    Use it as ``async with open_h3_connection(...) as conn:``, or as
    ``conn = await open_h3_connection(...)`` followed by ``async with conn:``.
    Leaving the block closes the connection.

    ``qpack_encoder_table_capacity``: how many bytes of the dynamic table the
    server offers our QPACK encoder may use; 0 (the default) sends every
    request's fields without it (see :class:`aiopquic.h3.H3Settings`).  Set it
    (4096, say) when the requests repeat long fields, such as a token.
    """
    settings = H3Settings(qpack_encoder_table_capacity=qpack_encoder_table_capacity)
    return _OpenH3Connection(host, port, config, settings)
