"""qh3 through its stream API (asyncio): ``server`` or ``client rr``.

    python benchmarks/peers/qh3_streams_peer.py server --certs DIR
    python benchmarks/peers/qh3_streams_peer.py client rr --certs DIR --port N

``qh3_peer.py`` drives qh3 at the protocol level: the server answers from
inside the callback that delivers the request's last bytes, and no task runs
per request.  A user of aiopquic writes a handler per stream instead, and
aiopquic runs each in a task of its own (``serve_streams``).  This peer is
qh3 used that way, through the API its documentation offers for it: the
server's ``stream_handler`` starts a task per stream that reads the request
from an ``asyncio.StreamReader`` and answers through an ``asyncio.StreamWriter``;
the client opens each request's stream with ``create_stream()``.  Same
protocol, pattern, command line and JSON output as the other peers; only the
request/response workload (``rr``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers import quic_library

quic_library.use("qh3")

from benchmarks.common import (  # noqa: E402
    BULK_READ_SIZE,
    PatternChecker,
    RepeatBudget,
    RequestParser,
    emit,
    pattern_slice,
    peak_rss_kib,
    peer_arguments,
    request,
    summarize_rr,
)
from benchmarks.peers.aioquic_peer import STATS, connect, make_config, serve_until_signalled  # noqa: E402

WORKLOADS = ("rr",)


# -- server ------------------------------------------------------------------


async def serve_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request: read it to its FIN, check it, answer with the size it asks for."""
    parser = RequestParser()
    while data := await reader.read(BULK_READ_SIZE):
        parser.feed(data)
    STATS.bytes_checked += parser.checker.offset
    if not parser.ok or parser.response_size is None:
        STATS.bad_streams += 1
        writer.close()
        return
    writer.write(bytes(pattern_slice(0, parser.response_size)))
    writer.write_eof()
    STATS.streams += 1


async def run_server(args) -> None:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = loop.create_task(serve_stream(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await serve_until_signalled(args, stream_handler=on_stream)


# -- client ------------------------------------------------------------------


class BadBytes(Exception):
    pass


async def client_rr(args, config) -> dict:
    payload = request(1024, 1024)
    latencies: list[float] = []
    async with connect(args.host, args.port, configuration=config) as proto:
        for i in range(args.warmup + args.iterations):
            t0 = time.perf_counter_ns()
            reader, writer = await proto.create_stream()
            writer.write(payload)
            writer.write_eof()
            checker = PatternChecker()
            while data := await reader.read(BULK_READ_SIZE):
                checker.feed(data)
            if not checker.ok or checker.offset != 1024:
                raise BadBytes(f"got {checker.offset} of 1024 bytes, pattern ok={checker.ok}")
            if i >= args.warmup:
                latencies.append((time.perf_counter_ns() - t0) / 1000.0)
    return summarize_rr(latencies)


async def run_client(args) -> None:
    config = make_config(args, server=False)
    results = []
    error = None
    try:
        if args.workload not in WORKLOADS:
            raise ValueError(f"this peer runs only {', '.join(WORKLOADS)}")
        budget = RepeatBudget(args.repeat, args.budget)
        while budget.more():
            results.append(await asyncio.wait_for(client_rr(args, config), args.timeout))
    except (asyncio.TimeoutError, TimeoutError):
        error = f"no result within {args.timeout} s (hang?)"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    emit({"workload": args.workload, "results": results, "error": error, "peak_rss_kib": peak_rss_kib()})


def main() -> None:
    args = peer_arguments("qh3 stream-API benchmark peer", ("asyncio",))
    asyncio.run(run_server(args) if args.mode == "server" else run_client(args))


if __name__ == "__main__":
    main()
