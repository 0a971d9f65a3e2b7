"""The ASGI app every HTTP/3 server in benchmarks/h3.py serves (hypercorn and
aiopquic's serve_h3 alike), kept minimal so the server, not the app, is measured.

  GET /          b"ok" (2 bytes): the requests/s workload
  GET /bytes/N   N bytes (zeros, sent in 256 KiB chunks from one buffer): the download
"""

from __future__ import annotations

from typing import Any

CHUNK = 256 * 1024
_ZEROS = bytes(CHUNK)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path.startswith("/bytes/"):
        size = int(path[len("/bytes/"):])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode()),
                                (b"content-type", b"application/octet-stream")]})
        sent = 0
        view = memoryview(_ZEROS)
        while sent < size:
            n = min(CHUNK, size - sent)
            sent += n
            await send({"type": "http.response.body", "body": _ZEROS if n == CHUNK else bytes(view[:n]),
                        "more_body": sent < size})
        if size == 0:
            await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2"), (b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
