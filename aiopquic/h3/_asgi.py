"""One HTTP/3 request served by an ASGI 3 application (the ``http`` scope)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import anyio

from ..quic.errors import ConnectionClosed, StreamReset
from ._events import DataReceived, HeadersReceived, StreamError, TrailersReceived
from ._frames import ErrorCode
from ._headers import CONNECTION_SPECIFIC, Headers
from ._session import RequestStream
from .errors import H3ProtocolError

logger = logging.getLogger("aiopquic.h3.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PEER_GONE = (StreamReset, ConnectionClosed, H3ProtocolError, anyio.ClosedResourceError, anyio.BrokenResourceError)


def build_scope(
    headers: Headers,
    *,
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    root_path: str,
    state: dict[str, Any] | None,
) -> Scope:
    """The ASGI ``http`` scope of a validated request."""
    pseudo = {name: value for name, value in headers if name[:1] == b":"}
    regular = [(name, value) for name, value in headers if name[:1] != b":"]
    authority = pseudo.get(b":authority")
    if authority and not any(name == b"host" for name, _ in regular):
        regular.insert(0, (b"host", authority))
    raw_path, _, query = pseudo.get(b":path", b"").partition(b"?")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "3",
        "method": pseudo[b":method"].decode("ascii"),
        "scheme": pseudo.get(b":scheme", b"https").decode("ascii"),
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": root_path,
        "headers": regular,
        "client": client,
        "server": server,
        "extensions": {"http.response.trailers": {}},
    }
    if b":protocol" in pseudo:
        scope["extensions"]["http.connect_protocol"] = pseudo[b":protocol"].decode("ascii")
    if state is not None:
        scope["state"] = dict(state)
    return scope


def response_headers(status: int, headers: Any, extra: Headers) -> Headers:
    """Our HEADERS for an app's ``http.response.start``: lowercase, no HTTP/1.1-only fields."""
    out: Headers = [(b":status", str(status).encode())]
    for name, value in headers:
        name = bytes(name).lower()
        if name not in CONNECTION_SPECIFIC:
            out.append((name, bytes(value)))
    present = {name for name, _ in out}
    out.extend(item for item in extra if item[0] not in present)
    return out


class RequestCycle:
    """Runs the app for one request and keeps the ASGI message rules."""

    def __init__(self, request: RequestStream, app: ASGIApp, scope: Scope, extra_headers: Headers, first: HeadersReceived) -> None:
        self.request = request
        self.app = app
        self.scope = scope
        self.extra_headers = extra_headers
        self.body_done = first.stream_ended
        self.disconnected = anyio.Event()
        self.started = False
        self.finished = False
        self.expect_trailers = False
        self._pending_start: Headers | None = None
        #: A response to HEAD has no content (RFC 9110 9.3.2): the app's body is dropped.
        self.head = scope["method"] == "HEAD"

    async def run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except _PEER_GONE as exc:
            logger.debug("request on stream %d: the client went away (%s)", self.request.stream_id, exc)
            self.disconnected.set()
            return
        except Exception:
            logger.exception("ASGI app raised for %s %s", self.scope["method"], self.scope["path"])
            await self._fail()
            return
        if not self.finished:
            if self.started or self._pending_start is not None:
                logger.error("ASGI app returned before finishing its response; resetting the stream")
                self.request.reset(ErrorCode.H3_INTERNAL_ERROR)
            else:
                logger.error("ASGI app returned without a response; answering 500")
                await self._fail()

    async def _fail(self) -> None:
        """500 if nothing went out yet, else a reset: the client must not take a cut body as whole."""
        if self.finished:
            return
        if self.started:
            self.request.reset(ErrorCode.H3_INTERNAL_ERROR)
            return
        try:
            body = b"Internal Server Error"
            await self.request.send_headers(
                response_headers(500, [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())], []),
            )
            await self.request.send_data(body, end_stream=True)
        except _PEER_GONE:
            pass
        self.finished = True

    async def receive(self) -> Message:
        if self.disconnected.is_set():
            return {"type": "http.disconnect"}
        if self.body_done:
            await self._wait_disconnect()
            return {"type": "http.disconnect"}
        try:
            event = await self.request.receive_event()
        except _PEER_GONE:
            self.disconnected.set()
            return {"type": "http.disconnect"}
        if isinstance(event, DataReceived):
            self.body_done = event.stream_ended
            return {"type": "http.request", "body": event.data, "more_body": not event.stream_ended}
        if isinstance(event, StreamError):
            logger.info("request body on stream %d is malformed: %s", self.request.stream_id, event.reason)
            self.request.reset(event.error_code)
            self.disconnected.set()
            return {"type": "http.disconnect"}
        # Request trailers (ASGI has no message for them) or the end.
        assert event is None or isinstance(event, TrailersReceived)
        self.body_done = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def _wait_disconnect(self) -> None:
        """Until the response is complete or the client aborts the stream."""
        async with anyio.create_task_group() as tg:

            async def peer_abort() -> None:
                await self.request.stream.wait_aborted()
                self.disconnected.set()

            tg.start_soon(peer_abort)
            await self.disconnected.wait()
            tg.cancel_scope.cancel()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if self.disconnected.is_set() and kind != "http.response.start":
            raise anyio.BrokenResourceError("the client went away")
        if kind == "http.response.start":
            if self.started or self._pending_start is not None:
                raise RuntimeError("http.response.start sent twice")
            self.expect_trailers = bool(message.get("trailers", False))
            # Held back until the first body message, so headers and a small body
            # leave in one packet.
            self._pending_start = response_headers(int(message["status"]), message.get("headers", ()), self.extra_headers)
        elif kind == "http.response.body":
            if self._pending_start is None and not self.started:
                raise RuntimeError("http.response.body before http.response.start")
            if self.finished:
                raise RuntimeError("http.response.body after the response ended")
            more = bool(message.get("more_body", False))
            end = not more and not self.expect_trailers
            body = b"" if self.head else message.get("body", b"")
            if self._pending_start is not None:  # headers and the first body bytes in one write
                headers, self._pending_start = self._pending_start, None
                self.started = True
                await self._guarded(self.request.send_headers_and_data(headers, body, end_stream=end))
            else:
                await self._guarded(self.request.send_data(body, end_stream=end))
            if end:
                self._finish()
        elif kind == "http.response.trailers":
            if not self.expect_trailers:
                raise RuntimeError("http.response.trailers without trailers=True in http.response.start")
            await self._start()
            more = bool(message.get("more_trailers", False))
            if more:
                raise RuntimeError("more_trailers is not supported: send all trailers in one message")
            trailers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
            await self._guarded(self.request.send_headers(trailers, end_stream=True))
            self._finish()
        else:
            raise RuntimeError(f"unknown ASGI message type {kind!r} for an http scope")

    async def _start(self) -> None:
        if self._pending_start is not None:
            headers, self._pending_start = self._pending_start, None
            self.started = True
            await self._guarded(self.request.send_headers(headers))

    async def _guarded(self, sending: Awaitable[None]) -> None:
        try:
            await sending
        except _PEER_GONE:
            self.disconnected.set()
            raise

    def _finish(self) -> None:
        self.finished = True
        self.disconnected.set()  # the response is complete: receive() reports http.disconnect from now
