"""HTTP/3 benchmark client: aiopquic's own API, httpx through aiopquic's
``HTTP3Transport``, or aioquic's H3 client, against benchmarks/h3_app.py served
by benchmarks/peers/h3_server.py.

    python benchmarks/peers/h3_client.py --client aiopquic --backend trio --port N --cafile CA \
        --requests 2000 --concurrency 100 --download-bytes 134217728 --repeat 3

Two workloads on one connection, opened before the clock starts:
  requests/s  ``--requests`` GETs of ``/`` (2 bytes), ``--concurrency`` in flight
              (a worker per slot, each sending its next GET when the last is answered)
  download    one GET of ``/bytes/N``, the body counted as it streams in (Mbps from
              the request to the body's end)

Prints one JSON line: ``{"rps": [...], "mbps": [...], "error": ..., "peak_rss_kib": N}``.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import emit, peak_rss_kib  # noqa: E402

async def measure(args: argparse.Namespace, get_small: Callable[[], Awaitable[None]],
                  download: Callable[[int], Awaitable[int]], run_workers: Callable[..., Awaitable[None]]) -> dict[str, Any]:
    rps, mbps = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        await run_workers(get_small, args.requests, args.concurrency)
        rps.append(args.requests / (time.perf_counter() - t0))
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        got = await download(args.download_bytes)
        elapsed = time.perf_counter() - t0
        if got != args.download_bytes:
            raise RuntimeError(f"download: {got} of {args.download_bytes} bytes")
        mbps.append(got * 8 / elapsed / 1e6)
    return {"rps": rps, "mbps": mbps}


async def anyio_workers(get_small: Callable[[], Awaitable[None]], total: int, concurrency: int) -> None:
    import anyio

    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await get_small()

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)


async def run_aiopquic(args: argparse.Namespace) -> dict[str, Any]:
    import aiopquic
    from aiopquic import h3

    config = aiopquic.QuicConfig(alpn=["h3"], cafile=args.cafile)
    async with h3.open_h3_connection("localhost", args.port, config=config) as conn:

        async def get_small() -> None:
            response = await conn.request("GET", "/")
            if response.status != 200 or response.content != b"ok":
                raise RuntimeError(f"GET / answered {response.status} {response.content[:20]!r}")

        async def download(size: int) -> int:
            got = 0
            async with conn.stream("GET", f"/bytes/{size}") as response:
                async for chunk in response.aiter_bytes():
                    got += len(chunk)
            return got

        return await measure(args, get_small, download, anyio_workers)


async def run_httpx(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    import aiopquic
    from aiopquic import h3

    config = aiopquic.QuicConfig(alpn=["h3"], cafile=args.cafile)
    base = f"https://localhost:{args.port}"
    async with httpx.AsyncClient(transport=h3.HTTP3Transport(config=config), base_url=base) as client:
        await client.get("/")  # the connection is opened before the clock starts

        async def get_small() -> None:
            response = await client.get("/")
            if response.status_code != 200 or response.content != b"ok":
                raise RuntimeError(f"GET / answered {response.status_code}")

        async def download(size: int) -> int:
            got = 0
            async with client.stream("GET", f"/bytes/{size}") as response:
                async for chunk in response.aiter_raw():
                    got += len(chunk)
            return got

        return await measure(args, get_small, download, anyio_workers)


async def run_aioquic(args: argparse.Namespace) -> dict[str, Any]:
    from aioquic.asyncio import connect
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.h3.connection import H3_ALPN, H3Connection
    from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import QuicEvent

    class Response:
        def __init__(self) -> None:
            self.status = 0
            self.size = 0
            self.done = asyncio.get_running_loop().create_future()

    class Client(QuicConnectionProtocol):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.h3 = H3Connection(self._quic)
            self.responses: dict[int, Response] = {}

        async def get(self, path: str) -> Response:
            stream_id = self._quic.get_next_available_stream_id()
            self.h3.send_headers(stream_id, [(b":method", b"GET"), (b":scheme", b"https"),
                                             (b":authority", f"localhost:{args.port}".encode()),
                                             (b":path", path.encode())], end_stream=True)
            response = self.responses[stream_id] = Response()
            self.transmit()
            await response.done
            return response

        def quic_event_received(self, event: QuicEvent) -> None:
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)

        def _h3_event(self, event: H3Event) -> None:
            response = self.responses.get(getattr(event, "stream_id", -1))
            if response is None:
                return
            if isinstance(event, HeadersReceived):
                response.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, DataReceived):
                response.size += len(event.data)
            if getattr(event, "stream_ended", False):
                del self.responses[event.stream_id]
                response.done.set_result(None)

    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, cafile=args.cafile,
                                      verify_mode=ssl.CERT_REQUIRED, max_data=1 << 30, max_stream_data=1 << 30)
    async with connect("localhost", args.port, configuration=configuration, create_protocol=Client) as client:
        assert isinstance(client, Client)

        async def get_small() -> None:
            response = await client.get("/")
            if response.status != 200 or response.size != 2:
                raise RuntimeError(f"GET / answered {response.status}")

        async def download(size: int) -> int:
            return (await client.get(f"/bytes/{size}")).size

        return await measure(args, get_small, download, anyio_workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=("aiopquic", "httpx", "aioquic"), required=True)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="aiopquic and httpx only")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--download-bytes", type=int, default=128 << 20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"rps": [], "mbps": [], "error": None}
    try:
        if args.client == "aioquic":
            result.update(asyncio.run(run_aioquic(args)))
        else:
            import anyio

            runner = run_aiopquic if args.client == "aiopquic" else run_httpx
            result.update(anyio.run(runner, args, backend=args.backend))
    except Exception as exc:  # reported to the orchestrator, not raised
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["peak_rss_kib"] = peak_rss_kib()
    emit(result)


if __name__ == "__main__":
    main()
