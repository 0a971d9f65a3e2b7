"""Plain ASGI 3 applications the HTTP/3 tests serve (no framework needed)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio

Scope = dict[str, Any]


async def read_body(receive: Any) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise anyio.BrokenResourceError("client went away")
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


class TestApp:
    """Routes by path; records what it saw so tests can look.

    /echo          the body back, with an x-sha256 trailer
    /download?n=N  N bytes (a repeating pattern) in 64 KiB pieces
    /scope         the scope's plain fields as JSON
    /fail-before   raises before answering
    /fail-after    sends half a body, then raises
    /hold          answers once ``release`` is set (or reports a disconnect)
    /disconnect    waits for http.disconnect and records it
    """

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.release = anyio.Event()
        self.held = 0
        self.disconnects = 0
        self.seen_disconnect = anyio.Event()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        path = scope["path"]
        if path == "/echo":
            body = await read_body(receive)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())], "trailers": True})
            for start in range(0, len(body), 1 << 16):
                await send({"type": "http.response.body", "body": body[start : start + (1 << 16)], "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            await send({"type": "http.response.trailers", "headers": [(b"x-sha256", hashlib.sha256(body).hexdigest().encode())]})
        elif path == "/download":
            size = int(dict(pair.split("=") for pair in scope["query_string"].decode().split("&"))["n"])
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
            piece = bytes(range(256)) * 256
            sent = 0
            while sent < size:
                chunk = piece[: min(len(piece), size - sent)]
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": sent < size})
        elif path == "/scope":
            fields = {k: v for k, v in scope.items() if isinstance(v, (str, int, list, tuple, dict, type(None))) and k != "headers"}
            fields.update({k: v.decode() for k, v in scope.items() if isinstance(v, bytes)})
            fields["headers"] = [[n.decode(), v.decode()] for n, v in scope["headers"]]
            fields["state"] = scope.get("state")
            fields["extensions"] = sorted(scope.get("extensions", {}))
            body = json.dumps(fields, default=str).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"Content-Type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
        elif path == "/fail-before":
            raise RuntimeError("the app fails before answering")
        elif path == "/fail-after":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"half", "more_body": True})
            raise RuntimeError("the app fails half way")
        elif path == "/hold":
            self.held += 1
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"released"})
        elif path == "/disconnect":
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnects += 1
            self.seen_disconnect.set()
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not found"})

    async def _lifespan(self, scope: Scope, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.lifespan.append("startup")
                scope["state"]["greeting"] = "hello"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.lifespan.append("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return


async def no_lifespan_app(scope: Scope, receive: Any, send: Any) -> None:
    """An app that does not speak the lifespan protocol (raises on it, as many do)."""
    if scope["type"] != "http":
        raise ValueError("only http")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
