"""``HTTP3Transport``: httpx's ``AsyncClient`` speaking HTTP/3 through aiopquic.

::

    async with httpx.AsyncClient(transport=HTTP3Transport()) as client:
        response = await client.get("https://example.com/")
        assert response.http_version == "HTTP/3"

One HTTP/3 connection per origin (``https``, host, port), every one through
one :class:`aiopquic.QuicClient` (one UDP socket, one network thread);
concurrent requests to an origin share its connection. After a GOAWAY or a
close the next request opens a new one. Needs the ``httpx`` extra.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import cast

import anyio
import httpx
from anyio.abc import TaskGroup

from ..quic.client import QuicClient, enter_with_task_group
from ..quic.config import QuicConfig
from ..quic.errors import ConnectionClosed, HandshakeError, StreamReset
from ._frames import ErrorCode
from ._protocol import H3Settings
from .client import Content, H3Connection, H3StreamResponse, _authority
from .errors import H3ProtocolError, RequestRejected

__all__ = ["HTTP3Transport"]

logger = logging.getLogger("aiopquic.h3.httpx")

Origin = tuple[str, str, int]

#: Errors that mean the connection or the stream went away under a request.
_BROKEN = (ConnectionClosed, StreamReset, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError)


@contextmanager
def _mapped(phase: str) -> Iterator[None]:
    """Turn aiopquic's (and anyio's) failures into httpx's exception types.

    ``phase`` is what the request was doing: "connect", "pool", "write" or "read".
    """
    try:
        yield
    except httpx.TransportError:
        raise
    except TimeoutError as exc:
        timeout = {
            "connect": httpx.ConnectTimeout,
            "pool": httpx.PoolTimeout,
            "write": httpx.WriteTimeout,
        }.get(phase, httpx.ReadTimeout)
        raise timeout(f"HTTP/3 {phase} timed out") from exc
    except H3ProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except RequestRejected as exc:
        raise httpx.RemoteProtocolError(str(exc)) from exc
    except (HandshakeError, OSError) as exc:
        if phase in ("connect", "pool"):
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        raise (httpx.WriteError if phase == "write" else httpx.ReadError)(str(exc) or type(exc).__name__) from exc
    except _BROKEN as exc:
        message = str(exc) or type(exc).__name__
        if phase in ("connect", "pool"):
            raise httpx.ConnectError(message) from exc
        raise (httpx.WriteError if phase == "write" else httpx.ReadError)(message) from exc


def _timeouts(request: httpx.Request) -> dict[str, float | None]:
    timeout = request.extensions.get("timeout", {})
    return {key: timeout.get(key) for key in ("connect", "read", "write", "pool")}


class _Pooled:
    """A connection of the pool and the requests using it."""

    def __init__(self, origin: Origin, conn: H3Connection) -> None:
        self.origin = origin
        self.conn = conn
        self.active = 0
        self.retired = False

    def close(self) -> None:
        self.conn.quic.close(ErrorCode.H3_NO_ERROR, "")


class _ResponseStream(httpx.AsyncByteStream):
    """The body of one response: it owns the request stream and closes it in ``aclose``."""

    def __init__(self, response: H3StreamResponse, read_timeout: float | None, release: Callable[[], None]) -> None:
        self._response = response
        self._read_timeout = read_timeout
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = cast(AsyncGenerator[bytes, None], self._response.aiter_bytes())
        try:
            while True:
                with _mapped("read"):
                    with anyio.fail_after(self._read_timeout):
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            return
                yield chunk
        finally:
            await chunks.aclose()

    async def aclose(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            self._response.aclose()
            release()


class HTTP3Transport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that sends every request over HTTP/3.

    ``config`` is the QUIC configuration of the connections (``alpn`` must
    offer ``"h3"``); without one, ``QuicConfig(alpn=["h3"])`` with the default
    certificate verification. ``verify`` is httpx's: ``False`` turns
    verification off, a path names a CA bundle (PEM) to trust instead of the
    default ones. ``local_host`` and ``local_port`` bind the
    :class:`~aiopquic.QuicClient` every connection goes through.
    ``qpack_encoder_table_capacity``: how many bytes of the dynamic table a
    server offers our QPACK encoder may use; 0 (the default) sends every
    request's fields without it (see :class:`aiopquic.h3.H3Settings`).  Set it
    (4096, say) when the requests repeat long fields, such as a token.

    Use it inside ``async with httpx.AsyncClient(transport=...)``: its
    connections need a task group, which that block holds. Failures come out
    as httpx's exceptions: ``ConnectError`` (refused, unreachable, untrusted
    certificate), ``ConnectTimeout``/``ReadTimeout``/``WriteTimeout``/
    ``PoolTimeout`` (from the request's ``timeout``), ``ReadError``/
    ``WriteError`` (the connection or stream went away),
    ``RemoteProtocolError`` (the server broke HTTP/3). A request the server
    refused unprocessed (GOAWAY, H3_REQUEST_REJECTED) is sent again once on a
    new connection when its body is bytes.
    """

    def __init__(
        self,
        config: QuicConfig | None = None,
        *,
        verify: bool | str | os.PathLike[str] = True,
        local_host: str | None = None,
        local_port: int = 0,
        qpack_encoder_table_capacity: int = 0,
    ) -> None:
        self._settings = H3Settings(qpack_encoder_table_capacity=qpack_encoder_table_capacity)
        if config is None:
            config = QuicConfig(alpn=["h3"])
        elif not isinstance(config, QuicConfig):
            raise TypeError("config must be a QuicConfig")
        if "h3" not in config.alpn:
            raise ValueError(f"HTTP/3 needs 'h3' in QuicConfig.alpn (it is {list(config.alpn)!r})")
        if verify is False:
            config = dataclasses.replace(config, verify=False)
        elif isinstance(verify, (str, os.PathLike)):
            config = dataclasses.replace(config, cafile=verify, verify=True)
        elif verify is not True:
            raise TypeError(f"verify must be True, False or the path of a CA bundle, got {verify!r}")
        self.config = config
        self._client = QuicClient(config, local_host=local_host, local_port=local_port)
        self._task_group: TaskGroup | None = None
        self._pool: dict[Origin, _Pooled] = {}
        self._retired: set[_Pooled] = set()
        self._locks: dict[Origin, anyio.Lock] = {}
        self._state = "new"  # "new", "open", "closed"

    # -- lifetime ------------------------------------------------------------

    async def __aenter__(self) -> HTTP3Transport:
        if self._state != "new":
            raise RuntimeError("an HTTP3Transport can be entered only once")
        self._task_group = await enter_with_task_group(self._client)
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        try:
            await self.aclose()
            task_group, self._task_group = self._task_group, None
            assert task_group is not None
            task_group.cancel_scope.cancel()
            await task_group.__aexit__(None, None, None)
        finally:
            await self._client.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close every connection (H3_NO_ERROR); requests still running on them fail."""
        for pooled in [*self._pool.values(), *self._retired]:
            pooled.close()
        self._pool.clear()
        self._retired.clear()

    # -- connections ---------------------------------------------------------

    def _running(self) -> TaskGroup:
        if self._state == "new":
            raise RuntimeError(
                "HTTP3Transport needs a task group for its connections: "
                "use it inside `async with httpx.AsyncClient(transport=...)`"
            )
        if self._state == "closed" or self._task_group is None:
            raise RuntimeError("this HTTP3Transport is closed")
        return self._task_group

    def _retire(self, pooled: _Pooled) -> None:
        """No new requests on ``pooled``: close it once its last request is done."""
        if self._pool.get(pooled.origin) is pooled:
            del self._pool[pooled.origin]
        pooled.retired = True
        if pooled.active:
            self._retired.add(pooled)
        else:
            pooled.close()

    def _release(self, pooled: _Pooled) -> None:
        """One request on ``pooled`` is done: close it if it was its retired connection's last."""
        pooled.active -= 1
        if pooled.active:
            return
        if pooled.retired:
            self._retired.discard(pooled)
            pooled.close()
        elif not pooled.conn.available:
            self._retire(pooled)

    async def _acquire(self, origin: Origin, timeouts: dict[str, float | None]) -> _Pooled:
        """The origin's connection (opened now if it has none usable), one more request on it."""
        task_group = self._running()
        pooled = self._pool.get(origin)
        if pooled is None or not pooled.conn.available:
            with _mapped("connect"), anyio.fail_after(timeouts["connect"]):
                lock = self._locks.setdefault(origin, anyio.Lock())
                async with lock:
                    pooled = self._pool.get(origin)
                    if pooled is not None and not pooled.conn.available:
                        self._retire(pooled)
                        pooled = None
                    if pooled is None:
                        pooled = _Pooled(origin, await self._connect(origin, task_group))
                        self._pool[origin] = pooled
        pooled.active += 1
        return pooled

    async def _connect(self, origin: Origin, task_group: TaskGroup) -> H3Connection:
        _, host, port = origin
        quic = await self._client.connect(host, port)
        try:
            await quic.__aenter__()
            conn = H3Connection(quic, _authority(host, port), settings=self._settings)
            await conn._start(task_group)
        except BaseException:
            quic.close(ErrorCode.H3_INTERNAL_ERROR, "")
            raise
        logger.debug("HTTP/3 connection to %s:%d opened", host, port)
        return conn

    # -- requests ------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "https":
            raise httpx.UnsupportedProtocol(f"HTTP/3 needs an https:// URL, got {url.scheme!r}")
        if not url.host:
            raise httpx.UnsupportedProtocol(f"no host in the URL {url!s}")
        origin: Origin = ("https", url.host, url.port or 443)
        timeouts = _timeouts(request)
        content: Content
        try:
            content = request.content  # a body of known length, read already
        except httpx.RequestNotRead:
            stream = request.stream
            assert isinstance(stream, httpx.AsyncByteStream), "HTTP3Transport needs an async request body"
            content = stream
        replayable = not isinstance(content, httpx.AsyncByteStream)
        try:
            return await self._send(request, origin, content, timeouts)
        except httpx.RemoteProtocolError as exc:
            if not (replayable and isinstance(exc.__cause__, RequestRejected)):
                raise
            logger.debug("%s %s rejected unprocessed (%s): sending it again", request.method, url, exc.__cause__)
            return await self._send(request, origin, content, timeouts)

    async def _send(
        self, request: httpx.Request, origin: Origin, content: Content, timeouts: dict[str, float | None]
    ) -> httpx.Response:
        pooled = await self._acquire(origin, timeouts)
        conn = pooled.conn
        try:
            with _mapped("pool"):
                headers = conn._request_headers(
                    request.method, request.url.raw_path.decode("ascii"), request.headers.raw, content
                )
                with anyio.fail_after(timeouts["pool"]):
                    stream = await conn._open_request(request.method)
        except BaseException:
            self._release(pooled)
            raise
        try:
            with _mapped("write"):
                await conn._send_message(stream, headers, content, write_timeout=timeouts["write"])
            with _mapped("read"), anyio.fail_after(timeouts["read"]):
                response = await conn._receive_head(stream)
        except BaseException:
            stream.reset(ErrorCode.H3_REQUEST_CANCELLED)
            stream.close()
            self._release(pooled)
            raise
        body = _ResponseStream(response, timeouts["read"], lambda: self._release(pooled))
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=body,
            extensions={"http_version": b"HTTP/3", "h3_stream_id": response.stream_id},
        )

    def __repr__(self) -> str:
        return f"<HTTP3Transport {self._state}, {len(self._pool)} connection(s)>"
