"""aiopquic WebTransport benchmark peer: ``server`` or ``client WORKLOAD``, on asyncio or trio.

    python benchmarks/peers/wt_peer.py server --certs DIR [--backend trio]
    python benchmarks/peers/wt_peer.py client rr --certs DIR --port N [--backend trio]

The same workloads and byte protocol as benchmarks/peers/aiopquic_peer.py, but on
the streams of one WebTransport session (``https://localhost:N/bench``) instead
of a bare QUIC connection, so the two compare like for like:

- ``bulk-down``: one stream, the server sends ``--size`` pattern bytes;
- ``rr``: a 1 KiB request and a 1 KiB response on a new stream each time;
- ``datagrams``: the server echoes every datagram; the client keeps ``--window``
  datagrams of ``--datagram-size`` bytes in flight for ``--duration`` seconds and
  counts the echoes (one lost in the network is replaced after ``LOSS_TIMEOUT``).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio

import aiopquic
from aiopquic import webtransport as wt
from benchmarks.common import MAX_DATA, MAX_STREAM_DATA, MAX_STREAMS_BIDI, RepeatBudget, emit, peak_rss_kib
from benchmarks.peers.aiopquic_peer import ServerStats, bulk_down, request_response, serve_stream

PATH = "/bench"
#: An echo not back this long after its datagram left counts as lost; one more is
#: sent in its place so the window stays full.
LOSS_TIMEOUT = 0.05


def make_config(args: Any, *, server: bool) -> aiopquic.QuicConfig:
    certs = Path(args.certs)
    options: dict[str, Any] = dict(
        alpn=["h3"], max_data=MAX_DATA, max_stream_data=MAX_STREAM_DATA, max_streams_bidi=MAX_STREAMS_BIDI,
        idle_timeout=30.0, max_datagram_frame_size=65536,
    )
    if args.cc:
        options["congestion_control"] = args.cc
    if server:
        options.update(certfile=str(certs / "cert.pem"), keyfile=str(certs / "key.pem"))
    else:
        options.update(cafile=str(certs / "ca.pem"), server_name=args.server_name)
    return aiopquic.QuicConfig(**options)


# -- server ------------------------------------------------------------------


async def echo_datagrams(session: wt.WebTransportSession, counter: list[int]) -> None:
    try:
        while True:
            await session.send_datagram(await session.receive_datagram())
            counter[0] += 1
    except wt.SessionClosed:
        pass


async def run_server(args: Any) -> None:
    stats = ServerStats()
    echoed = [0]
    app = wt.WebTransportApp()

    @app.route(PATH)
    async def bench(session: wt.WebTransportSession) -> None:
        stats.connections += 1
        async def serve(stream: wt.WebTransportStream | wt.WebTransportReceiveStream) -> None:
            if isinstance(stream, wt.WebTransportStream):
                await serve_stream(stream, stats)

        async with anyio.create_task_group() as tg:
            tg.start_soon(echo_datagrams, session, echoed)
            await session.serve_streams(serve)  # as the raw peer's server does
            tg.cancel_scope.cancel()

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            listener = await tg.start(wt.serve_webtransport, app, args.host, args.port, make_config(args, server=True))
            emit({"event": "listening", "port": listener.port})
            async for _ in signals:
                break
            tg.cancel_scope.cancel()
    emit({
        "event": "stopped", "sessions": stats.connections, "streams": stats.streams, "bad_streams": stats.bad_streams,
        "broken_streams": stats.broken_streams, "datagrams_echoed": echoed[0], "peak_rss_kib": peak_rss_kib(),
    })


# -- client ------------------------------------------------------------------


async def datagram_rate(session: wt.WebTransportSession, args: Any) -> dict[str, Any]:
    """Echoes per second with ``args.window`` datagrams in flight (see the module doc).

    A sender spends credits, a receiver returns one per echo, and a watchdog
    returns one when nothing came back for ``LOSS_TIMEOUT`` (a datagram lost)."""
    payload = bytes(args.datagram_size)
    credits = anyio.Semaphore(args.window)
    echoes = 0

    async def send() -> None:
        while True:
            await credits.acquire()
            await session.send_datagram(payload)

    async def receive() -> None:
        nonlocal echoes
        while True:
            await session.receive_datagram()
            echoes += 1
            credits.release()

    async def watch() -> None:
        seen = -1
        while True:
            await anyio.sleep(LOSS_TIMEOUT)
            if echoes == seen and credits.value < args.window:
                credits.release()
            seen = echoes

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for task in (send, receive, watch):
            tg.start_soon(task)
        await anyio.sleep(args.duration)
        counted, elapsed = echoes, time.perf_counter() - start
        tg.cancel_scope.cancel()
    return {"per_second": counted / elapsed, "echoes": counted, "seconds": elapsed}


#: aiopquic_peer's bulk-down and rr take anything with ``open_stream()``: a session too.
SESSION_WORKLOADS = {"bulk-down": bulk_down, "rr": request_response, "datagrams": datagram_rate}


async def run_client(args: Any) -> None:
    config = make_config(args, server=False)
    results = []
    error = None
    budget = RepeatBudget(args.repeat, args.budget)
    url = f"https://{args.server_name}:{args.port}{PATH}"
    i = 0
    while budget.more():
        i += 1
        try:
            with anyio.fail_after(args.timeout):
                async with wt.open_webtransport_session(url, config=config) as session:
                    results.append(await SESSION_WORKLOADS[args.workload](session, args))
        except TimeoutError:
            error = f"repeat {i}: no result within {args.timeout} s (hang?)"
            break
        except Exception as exc:  # reported to the orchestrator, not raised
            error = f"repeat {i}: {type(exc).__name__}: {exc}"
            break
    emit({"workload": args.workload, "results": results, "error": error, "peak_rss_kib": peak_rss_kib()})


def arguments() -> Any:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("server", "client"))
    parser.add_argument("workload", nargs="?", choices=("bulk-down", "rr", "datagrams"), help="client only")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--certs", required=True, help="directory with ca.pem, cert.pem, key.pem")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cc", default=None)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--budget", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--size", type=int, default=256 << 20, help="bulk-down: bytes")
    parser.add_argument("--iterations", type=int, default=2000, help="rr: timed exchanges")
    parser.add_argument("--warmup", type=int, default=200, help="rr: untimed exchanges first")
    parser.add_argument("--duration", type=float, default=3.0, help="datagrams: seconds per repeat")
    parser.add_argument("--window", type=int, default=32, help="datagrams: in flight")
    parser.add_argument("--datagram-size", type=int, default=64, help="datagrams: payload bytes")
    args = parser.parse_args()
    if args.mode == "client" and args.workload is None:
        parser.error("client needs a WORKLOAD")
    return args


def main() -> None:
    args = arguments()
    anyio.run(run_server if args.mode == "server" else run_client, args, backend=args.backend)


if __name__ == "__main__":
    main()
