"""A FastAPI application, unmodified, over serve_h3 (on both backends)."""

from __future__ import annotations

import anyio
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from aiopquic import QuicConfig
from aiopquic.cli.certs import CertificateSet
from aiopquic.h3 import open_h3_connection, serve_h3

pytestmark = pytest.mark.anyio


class Item(BaseModel):
    name: str
    count: int


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def create_item(item: Item) -> Item:
        return Item(name=item.name.upper(), count=item.count + 1)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(100):
                yield f"{i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


async def test_fastapi_app_works_unmodified(certs: CertificateSet) -> None:
    server_config = QuicConfig(alpn=["h3"], certfile=certs.certfile, keyfile=certs.keyfile)
    client_config = QuicConfig(alpn=["h3"], cafile=certs.cafile)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            listener = await tg.start(serve_h3, make_app(), "127.0.0.1", 0, server_config)
            async with open_h3_connection("localhost", listener.port, config=client_config) as conn:
                got = await conn.request("GET", "/items/7?q=x")
                created = await conn.request(
                    "POST", "/items", headers=[("content-type", "application/json")], content=b'{"name": "a", "count": 1}'
                )
                invalid = await conn.request("POST", "/items", headers=[("content-type", "application/json")], content=b"{}")
                streamed = await conn.request("GET", "/stream")
            tg.cancel_scope.cancel()
    assert got.status == 200 and got.content == b'{"item_id":7,"q":"x"}'
    assert created.status == 200 and created.content == b'{"name":"A","count":2}'
    assert invalid.status == 422
    assert streamed.content == b"".join(f"{i}\n".encode() for i in range(100))
