"""pywebtransport benchmark peer (asyncio, on aioquic): datagram echo, ``server`` or ``client datagrams``.

    python benchmarks/peers/pywt_peer.py server --certs DIR
    python benchmarks/peers/pywt_peer.py client datagrams --certs DIR --port N

The same datagram workload as benchmarks/peers/wt_peer.py (the server echoes every
datagram of a session at ``/bench``; the client keeps ``--window`` in flight for
``--duration`` seconds and counts the echoes), so pywebtransport at both ends is
the baseline of the "datagrams echoed per second" row.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pywebtransport import ClientConfig, ServerApp, ServerConfig, WebTransportClient, WebTransportSession

from benchmarks.common import emit, peak_rss_kib
from benchmarks.run import free_udp_port
from benchmarks.peers.wt_peer import LOSS_TIMEOUT, PATH

#: pywebtransport's own session limits default to 0 (nothing allowed until a
#: capsule grants it); the datagram workload needs none of them, but give some.
SESSION_LIMITS = dict(initial_max_data=1 << 20, initial_max_streams_bidi=100, initial_max_streams_uni=100)


async def run_server(args: argparse.Namespace) -> None:
    certs = Path(args.certs)
    if args.port == 0:  # pywebtransport takes no port 0
        args.port = free_udp_port()
    app = ServerApp(config=ServerConfig(
        certfile=str(certs / "cert.pem"), keyfile=str(certs / "key.pem"), bind_host=args.host, bind_port=args.port,
        **SESSION_LIMITS,
    ))
    echoed = 0

    @app.route(path=PATH)
    async def bench(session: WebTransportSession) -> None:
        nonlocal echoed
        transport = await session.create_datagram_transport()
        while not session.is_closed:
            await transport.send(data=await transport.receive())
            echoed += 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with app:
        await app.server.listen(host=args.host, port=args.port)
        emit({"event": "listening", "port": app.server.local_address[1]})
        serving = asyncio.create_task(app.server.serve_forever())
        await stop.wait()
        serving.cancel()
    emit({"event": "stopped", "datagrams_echoed": echoed, "peak_rss_kib": peak_rss_kib()})


async def datagram_rate(session: WebTransportSession, args: argparse.Namespace) -> dict[str, Any]:
    """wt_peer.datagram_rate's sender, receiver and watchdog, in asyncio tasks."""
    transport = await session.create_datagram_transport()
    payload = bytes(args.datagram_size)
    credits = asyncio.Semaphore(args.window)
    echoes = 0

    async def send() -> None:
        while True:
            await credits.acquire()
            await transport.send(data=payload)

    async def receive() -> None:
        nonlocal echoes
        while True:
            await transport.receive()
            echoes += 1
            credits.release()

    async def watch() -> None:
        seen = -1
        while True:
            await asyncio.sleep(LOSS_TIMEOUT)
            if echoes == seen and credits._value < args.window:
                credits.release()
            seen = echoes

    start = time.perf_counter()
    tasks = [asyncio.create_task(task()) for task in (send, receive, watch)]
    try:
        await asyncio.sleep(args.duration)
        counted, elapsed = echoes, time.perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"per_second": counted / elapsed, "echoes": counted, "seconds": elapsed}


async def run_client(args: argparse.Namespace) -> None:
    config = ClientConfig(ca_certs=str(Path(args.certs) / "ca.pem"), verify_mode=ssl.CERT_REQUIRED, **SESSION_LIMITS)
    results = []
    error = None
    for i in range(1, args.repeat + 1):
        try:
            async with asyncio.timeout(args.timeout), WebTransportClient(config=config) as client:
                session = await client.connect(url=f"https://{args.host}:{args.port}{PATH}")
                results.append(await datagram_rate(session, args))
                await session.close()
        except Exception as exc:  # reported to the orchestrator, not raised
            error = f"repeat {i}: {type(exc).__name__}: {exc}"
            break
    emit({"workload": args.workload, "results": results, "error": error, "peak_rss_kib": peak_rss_kib()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("server", "client"))
    parser.add_argument("workload", nargs="?", choices=("datagrams",), help="client only")
    parser.add_argument("--backend", choices=("asyncio",), default="asyncio")
    parser.add_argument("--certs", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--datagram-size", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(run_server(args) if args.mode == "server" else run_client(args))


if __name__ == "__main__":
    main()
