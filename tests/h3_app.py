"""One small ASGI 3 app and its routes, for every HTTP/3 server in the tests
(hypercorn now, aiopquic.h3.serve_h3 later); tests/aioquic_h3.py's aioquic
server answers the same routes, so a test can run against any server.

Routes (any method unless said):
  /echo             the request body back; content-type copied from the request
  /bytes/N          N bytes of :func:`pattern` (GET)
  /trailers         the request body back, then trailers
                    ``x-sha256: <hex digest of the request body>`` and
                    ``x-length: <its size>`` (hypercorn sends trailers only when the
                    request carried ``te: trailers``, as RFC 9110 allows)
  /headers          JSON ``[[name, value], ...]`` of the request headers as the
                    server saw them (latin-1)
  /status/N         an empty response with status N
  /scope            JSON of the ASGI scope's plain fields (ASGI servers only)
anything else gets 404.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PATTERN_UNIT = bytes(range(256)) * 256  # 64 KiB


def pattern(size: int, offset: int = 0) -> bytes:
    """``size`` bytes of a fixed repeating pattern (so a body of any size can be
    checked without keeping a copy)."""
    unit = len(_PATTERN_UNIT)
    start = offset % unit
    out = bytearray()
    while len(out) < size:
        out += _PATTERN_UNIT[start : start + size - len(out)]
        start = 0
    return bytes(out)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def trailers_for(body: bytes) -> list[tuple[bytes, bytes]]:
    """What the /trailers route sends after the body."""
    return [(b"x-sha256", sha256(body).encode()), (b"x-length", str(len(body)).encode())]


#: Chunk size the servers use for /bytes/N.
CHUNK = 64 * 1024


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body)


def _scope_summary(scope: Scope) -> dict[str, Any]:
    plain = {}
    for key, value in scope.items():
        if key in ("headers", "raw_path", "query_string"):
            continue
        if isinstance(value, (str, int, float, bool, type(None))):
            plain[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
            plain[key] = list(value)
        elif isinstance(value, dict) and key in ("asgi", "extensions"):
            plain[key] = {k: v if isinstance(v, (str, int)) else repr(v) for k, v in value.items()}
    plain["query_string"] = scope.get("query_string", b"").decode("latin-1")
    return plain


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The test app (ASGI 3, ``http`` and ``lifespan``)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope.get("state", {})["started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return

    path: str = scope["path"]
    headers = dict(scope["headers"])

    async def respond(status: int, body: bytes = b"", extra: Sequence[tuple[bytes, bytes]] = (), trailers: bool = False) -> None:
        response_headers = [(b"content-length", str(len(body)).encode()), *extra]
        await send({"type": "http.response.start", "status": status, "headers": response_headers, "trailers": trailers})
        await send({"type": "http.response.body", "body": body})

    if path == "/echo":
        body = await _read_body(receive)
        extra = [(b"content-type", headers[b"content-type"])] if b"content-type" in headers else []
        await respond(200, body, extra)
    elif path.startswith("/bytes/"):
        await _read_body(receive)
        size = int(path[len("/bytes/") :])
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-length", str(size).encode()), (b"content-type", b"application/octet-stream")],
        })
        sent = 0
        while sent < size:
            n = min(CHUNK, size - sent)
            await send({"type": "http.response.body", "body": pattern(n, sent), "more_body": sent + n < size})
            sent += n
        if size == 0:
            await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        body = await _read_body(receive)
        await respond(200, body, trailers=True)
        await send({"type": "http.response.trailers", "headers": trailers_for(body), "more_trailers": False})
    elif path == "/headers":
        await _read_body(receive)
        listed = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        await respond(200, json.dumps(listed).encode(), [(b"content-type", b"application/json")])
    elif path.startswith("/status/"):
        await _read_body(receive)
        await respond(int(path[len("/status/") :]))
    elif path == "/scope":
        await _read_body(receive)
        await respond(200, json.dumps(_scope_summary(scope)).encode(), [(b"content-type", b"application/json")])
    else:
        await _read_body(receive)
        await respond(404, b"not found")
