"""aiopquic benchmark peer: ``server`` or ``client WORKLOAD``, on asyncio, trio, or
asyncio on uvloop (``--backend uvloop``: anyio's ``use_uvloop``).

    python benchmarks/peers/aiopquic_peer.py server --certs DIR [--backend trio]
    python benchmarks/peers/aiopquic_peer.py client rr --certs DIR --port N [--backend trio]

The server prints ``{"event": "listening", "port": N}`` once it serves, runs
until SIGTERM/SIGINT, then prints its counters and peak RSS; on SIGUSR1 it
prints ``{"event": "state", ...}``, where its endpoint stands (run.py asks for
it when a client fails).  The client runs the workload ``--repeat`` times and
prints one JSON line of results.  Protocol and byte pattern: see
``benchmarks/common.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import anyio

import aiopquic
from aiopquic.cli._backend import run as run_on
from benchmarks.common import (
    ALPN,
    BULK_READ_SIZE,
    BULK_WRITE_SIZE,
    ERROR_BAD_BYTES,
    HEADER_SIZE,
    MAX_DATA,
    MAX_STREAM_DATA,
    MAX_STREAMS_BIDI,
    PatternChecker,
    RepeatBudget,
    RequestParser,
    emit,
    header,
    pattern_slice,
    peak_rss_kib,
    peer_arguments,
    request,
    summarize_rr,
)


def make_config(args, *, server: bool) -> aiopquic.QuicConfig:
    certs = Path(args.certs)
    options: dict = dict(
        alpn=[ALPN],
        max_data=MAX_DATA,
        max_stream_data=MAX_STREAM_DATA,
        max_streams_bidi=MAX_STREAMS_BIDI,
        idle_timeout=30.0,
    )
    if args.cc:
        options["congestion_control"] = args.cc
    if args.fixed_window:
        options["max_stream_window"] = MAX_STREAM_DATA
    if args.no_inline_io:
        options["inline_io"] = False
    if server:
        options.update(certfile=str(certs / "cert.pem"), keyfile=str(certs / "key.pem"))
    else:
        options.update(cafile=str(certs / "ca.pem"), server_name=args.server_name)
    return aiopquic.QuicConfig(**options)


# -- server ------------------------------------------------------------------


class ServerStats:
    def __init__(self) -> None:
        self.connections = 0
        self.streams = 0
        self.bad_streams = 0
        self.broken_streams = 0
        self.bytes_checked = 0


async def send_pattern(stream, size: int) -> None:
    """Send ``size`` pattern bytes, the FIN with the last of them (as the other
    peers send data and FIN in one call: ``send_stream_data(..., end_stream=True)``)."""
    offset = 0
    while offset < size:
        n = min(BULK_WRITE_SIZE, size - offset)
        await stream.send(pattern_slice(offset, n), eof=offset + n == size)
        offset += n
    if size == 0:
        await stream.send_eof()


async def serve_stream(stream, stats: ServerStats) -> None:
    parser = RequestParser()
    try:
        while True:
            try:
                data = await stream.receive(BULK_READ_SIZE)
            except anyio.EndOfStream:
                break
            parser.feed(data)
        stats.bytes_checked += parser.checker.offset
        if not parser.ok:
            stats.bad_streams += 1
            stream.reset(ERROR_BAD_BYTES)
            return
        assert parser.response_size is not None
        await send_pattern(stream, parser.response_size)
        stats.streams += 1
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        stats.broken_streams += 1


def endpoint_state(stats: ServerStats, conn: aiopquic.QuicConnection | None) -> dict:
    """Where the server stands, for a client's failure report: its counts and,
    through ``conn`` (any connection it served), its endpoint's internals: the
    connections whose handshake it has not seen complete, those not yet handed
    to the handler, and who waits on the UDP socket."""
    state: dict = {"event": "state", "connections": stats.connections, "streams": stats.streams}
    if conn is None:
        return state
    endpoint = conn._endpoint  # a benchmark's diagnosis may look inside
    core = endpoint.core
    state.update(
        open=len(endpoint._connections),
        handshaking=[f"{c.remote_address}: closed={c.closed}, {_seen(c)}" for c in endpoint._handshaking],
        not_yet_handed_over=len(endpoint._adopted),
        signalled=core.signalled(),
        thread_error=core.thread_error(),
        socket_wanted=endpoint._socket_wanted,
        socket_paused=endpoint._socket_paused,
        socket_held=core.sockets_held(),
        bridge=core.describe(),
    )
    return state


async def run_server(args) -> None:
    config = make_config(args, server=True)
    stats = ServerStats()
    last_conn: aiopquic.QuicConnection | None = None

    async def handler(conn: aiopquic.QuicConnection) -> None:
        nonlocal last_conn
        last_conn = conn
        stats.connections += 1
        async with conn:
            await conn.serve_streams(functools.partial(serve_stream, stats=stats))

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1) as signals:
        async with anyio.create_task_group() as tg:
            listener = await tg.start(aiopquic.serve_quic, handler, args.host, args.port, config)
            emit({"event": "listening", "port": listener.port})
            async for signum in signals:
                if signum != signal.SIGUSR1:
                    break
                emit(endpoint_state(stats, last_conn))
            tg.cancel_scope.cancel()
    emit(
        {
            "event": "stopped",
            "connections": stats.connections,
            "streams": stats.streams,
            "bad_streams": stats.bad_streams,
            "broken_streams": stats.broken_streams,
            "bytes_checked": stats.bytes_checked,
            "peak_rss_kib": peak_rss_kib(),
        }
    )


# -- client ------------------------------------------------------------------


class BadBytes(Exception):
    pass


async def read_response(stream, expected: int, read_size: int = BULK_READ_SIZE) -> None:
    """Read to FIN, checking every byte against the pattern and the size."""
    checker = PatternChecker()
    while True:
        try:
            data = await stream.receive(read_size)
        except anyio.EndOfStream:
            break
        checker.feed(data)
    if not checker.ok or checker.offset != expected:
        raise BadBytes(f"stream {stream.stream_id}: got {checker.offset} of {expected} bytes, pattern ok={checker.ok}")


async def exchange(conn, payload: bytes, response_size: int) -> None:
    stream = await conn.open_stream()
    await stream.send(payload, eof=True)
    await read_response(stream, response_size, 65536)


async def bulk_down(conn, args) -> dict:
    """One download of ``args.size`` bytes on ``conn`` (anything with ``open_stream()``)."""
    t0 = time.perf_counter()
    stream = await conn.open_stream()
    await stream.send(header(args.size), eof=True)
    await read_response(stream, args.size)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "mbps": args.size * 8 / elapsed / 1e6}


async def client_bulk_down(args, config) -> dict:
    async with aiopquic.open_quic_connection(args.host, args.port, config=config) as conn:
        return await bulk_down(conn, args)


async def client_bulk_up(args, config) -> dict:
    async with aiopquic.open_quic_connection(args.host, args.port, config=config) as conn:
        t0 = time.perf_counter()
        stream = await conn.open_stream()
        await stream.send(header(HEADER_SIZE))
        await send_pattern(stream, args.size)
        try:
            await read_response(stream, HEADER_SIZE)
        except aiopquic.StreamReset as exc:
            if exc.error_code == ERROR_BAD_BYTES:
                raise BadBytes("the server found wrong bytes in the upload") from None
            raise
        elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "mbps": args.size * 8 / elapsed / 1e6}


async def request_response(conn, args) -> dict:
    """1 KiB request/response exchanges on ``conn``, a new stream each: latency percentiles."""
    payload = request(1024, 1024)
    latencies: list[float] = []
    for i in range(args.warmup + args.iterations):
        t0 = time.perf_counter_ns()
        await exchange(conn, payload, 1024)
        if i >= args.warmup:
            latencies.append((time.perf_counter_ns() - t0) / 1000.0)
    return summarize_rr(latencies)


async def client_rr(args, config) -> dict:
    async with aiopquic.open_quic_connection(args.host, args.port, config=config) as conn:
        return await request_response(conn, args)


class ConnectionFailed(Exception):
    """One connection of a handshake run failed: which one, and what it saw."""


def _seen(conn: aiopquic.QuicConnection | None) -> str:
    if conn is None:
        return "it never opened"
    try:
        st = conn.stats
    except Exception as exc:  # the report must not hide the failure it describes
        return f"its figures are gone ({type(exc).__name__})"
    return (
        f"it sent {st.packets_sent} packets ({st.packets_lost} lost) and {st.bytes_sent} stream bytes, "
        f"received {st.bytes_received} stream bytes, rtt {st.rtt * 1e6:.0f} us"
    )


async def sequential_handshakes(args, config, client=None, label: str = "") -> tuple[float, list[float]]:
    """Connections one after the other for ``args.duration`` s: (per second, durations).

    Each from an endpoint of its own (``open_quic_connection``), or all through
    ``client``.  A failure names the run (``label``), the connection and what it saw."""
    payload = header(HEADER_SIZE)
    times: list[float] = []
    start = time.perf_counter()
    deadline = start + args.duration
    while len(times) < args.max_connections and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        if client is None:
            opening = aiopquic.open_quic_connection(args.host, args.port, config=config)
        else:
            opening = client.connect(args.host, args.port)
        conn = None
        try:
            async with opening as conn:
                await exchange(conn, payload, HEADER_SIZE)
        except aiopquic.QuicError as exc:
            raise ConnectionFailed(
                f"{label} connection {len(times) + 1}, after {time.perf_counter() - t0:.1f} s: "
                f"{type(exc).__name__}: {exc}; {_seen(conn)}"
            ) from exc
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    times.sort()
    return len(times) / elapsed, times


async def client_handshake(args, config) -> dict:
    # Full handshakes (like the other peers'), then resumed ones (the default of a
    # config that connects again: no certificate to send or verify), then full
    # ones again, all through one QuicClient (no endpoint and thread per connection).
    full_config = dataclasses.replace(config, resume_sessions=False)
    full, times = await sequential_handshakes(args, full_config, label="full handshakes:")
    resumed, _ = await sequential_handshakes(args, config, label="resumed handshakes:")
    async with aiopquic.QuicClient(full_config) as client:
        shared, _ = await sequential_handshakes(args, full_config, client, label="one QuicClient:")
    return {
        "per_second": full,
        "per_second_resumed": resumed,
        "per_second_shared": shared,
        "connections": len(times),
        "p50_ms": times[len(times) // 2] * 1e3,
        "max_ms": times[-1] * 1e3,
    }


async def exchange_pipelined(conn, payload: bytes, response_size: int, count: int) -> None:
    """``count`` exchanges in flight at once, from one task: every request is sent
    (each on a stream of its own, with its FIN) before the first response is read,
    as the aioquic and qh3 peers send theirs; then the responses, in that order."""
    streams = []
    for _ in range(count):
        stream = await conn.open_stream()
        await stream.send(payload, eof=True)
        streams.append(stream)
    for stream in streams:
        await read_response(stream, response_size, 65536)


async def exchange_in_tasks(conn, payload: bytes, response_size: int, count: int) -> None:
    """``count`` exchanges at once, each in a task of its own (anyio's task group)."""
    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(exchange, conn, payload, response_size)


async def client_streams(args, config) -> dict:
    """The fan-out twice, each on a new connection (handshake excluded): pipelined
    from one task ("seconds"), then a task per stream ("seconds_tasks")."""
    payload = request(HEADER_SIZE + args.stream_size, HEADER_SIZE)
    result: dict = {"streams": args.streams}
    for key, fan_out in (("seconds", exchange_pipelined), ("seconds_tasks", exchange_in_tasks)):
        async with aiopquic.open_quic_connection(args.host, args.port, config=config) as conn:
            t0 = time.perf_counter()
            await fan_out(conn, payload, HEADER_SIZE, args.streams)
            result[key] = time.perf_counter() - t0
    return result


CLIENTS = {
    "bulk-down": client_bulk_down,
    "bulk-up": client_bulk_up,
    "rr": client_rr,
    "handshake": client_handshake,
    "streams": client_streams,
}


async def run_client(args) -> None:
    config = make_config(args, server=False)
    results = []
    error = None
    budget = RepeatBudget(args.repeat, args.budget)
    i = 0
    while budget.more():
        i += 1
        try:
            with anyio.fail_after(args.timeout):
                results.append(await CLIENTS[args.workload](args, config))
        except TimeoutError:
            error = f"repeat {i}: no result within {args.timeout} s (hang?)"
            break
        except Exception as exc:  # reported to the orchestrator, not raised
            error = f"repeat {i}: {type(exc).__name__}: {exc}"
            break
    emit({"workload": args.workload, "results": results, "error": error, "peak_rss_kib": peak_rss_kib()})


def main() -> None:
    args = peer_arguments("aiopquic benchmark peer", ("asyncio", "trio", "uvloop"))
    run_on(run_server if args.mode == "server" else run_client, args, backend=args.backend)


if __name__ == "__main__":
    main()
