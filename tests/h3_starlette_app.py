"""A Starlette app the httpx-transport and CLI tests serve (``tests.h3_starlette_app:app``).

/                  "hello over HTTP/3"
/info              the request as the app saw it (JSON)
/sha256            POST: the sha256 and length of the body, read as it streams
/bytes/{n}         n bytes of :func:`pattern`, in 64 KiB pieces
/sleep/{seconds}   answers after that long
/gated             sends "first;", waits for ``GATE`` to be set, sends "last"
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

_BLOCK = bytes(range(256)) * 256  # 64 KiB

#: Set by a test (on its own event loop) to let /gated finish.
GATE: anyio.Event | None = None
#: Set by /gated once its first piece is out.
GATED_STARTED: anyio.Event | None = None


def pattern(size: int) -> bytes:
    """The body /bytes/{size} serves."""
    return (_BLOCK * (size // len(_BLOCK) + 1))[:size]


async def home(request: Request) -> Response:
    return PlainTextResponse("hello over HTTP/3")


async def info(request: Request) -> Response:
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "http_version": request.scope["http_version"],
            "scheme": request.url.scheme,
            "host": request.headers.get("host"),
            "headers": {k: v for k, v in request.headers.items()},
            "body": (await request.body()).decode("latin-1"),
        }
    )


async def sha256(request: Request) -> Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    return JSONResponse({"sha256": digest.hexdigest(), "size": size})


async def sized(request: Request) -> Response:
    size = int(request.path_params["n"])

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, size, len(_BLOCK)):
            yield _BLOCK[: min(len(_BLOCK), size - start)]

    return StreamingResponse(body(), media_type="application/octet-stream", headers={"content-length": str(size)})


async def sleep(request: Request) -> Response:
    await anyio.sleep(float(request.path_params["seconds"]))
    return PlainTextResponse("slept")


async def gated(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"first;"
        if GATED_STARTED is not None:
            GATED_STARTED.set()
        if GATE is not None:
            await GATE.wait()
        yield b"last"

    return StreamingResponse(body(), media_type="text/plain")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/info", info, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/sha256", sha256, methods=["POST"]),
        Route("/bytes/{n:int}", sized),
        Route("/sleep/{seconds}", sleep),
        Route("/gated", gated),
    ]
)
