"""aioquic benchmark peer (asyncio): ``server`` or ``client WORKLOAD``.

    python benchmarks/peers/aioquic_peer.py server --certs DIR
    python benchmarks/peers/aioquic_peer.py client rr --certs DIR --port N

Same protocol, pattern, command line and JSON output as ``aiopquic_peer.py``.

aioquic is driven the fast way, at the ``QuicConnectionProtocol`` level (no
``asyncio.StreamReader``/``StreamWriter`` adapters in the data path), so the
comparison is with aioquic at its best.  aioquic has no send-side
backpressure, so bulk senders keep at most ``SEND_BUFFER`` unsent bytes queued
on the stream and top it up after every received datagram (the ACKs): the same
1 MiB send buffer aiopquic uses by default.  The server raises its
MAX_STREAMS_BIDI to 1000 through aioquic's (private) limit object, as aioquic
has no setting for it.

``benchmarks/peers/qh3_peer.py`` runs this same peer on qh3 (aioquic's fork with
a Rust core, same API), which differs in four places, each marked ``QH3``:

- bulk senders measure the unsent bytes with qh3's public
  ``get_send_buffer_size(stream_id)`` (aioquic: private sender fields);
- qh3 hard-codes MAX_STREAMS_BIDI 100 (and raises, not queues, beyond the
  peer's limit), so the peer patches it to MAX_STREAMS_BIDI (1000): private,
  like aioquic's limit object;
- qh3 delivers batches of datagrams (recvmmsg/GRO) through
  ``datagrams_received``, which tops up bulk senders too;
- qh3 has no congestion control setting: ``--cc`` is ignored.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import importlib

from benchmarks.peers import quic_library

LIBRARY = quic_library.NAME
QH3 = LIBRARY == "qh3"
_asyncio_api = importlib.import_module(f"{LIBRARY}.asyncio")
QuicConnectionProtocol, connect, serve = _asyncio_api.QuicConnectionProtocol, _asyncio_api.connect, _asyncio_api.serve
QuicConfiguration = importlib.import_module(f"{LIBRARY}.quic.configuration").QuicConfiguration
_events = importlib.import_module(f"{LIBRARY}.quic.events")
ConnectionTerminated, StreamDataReceived, StreamReset = (
    _events.ConnectionTerminated, _events.StreamDataReceived, _events.StreamReset
)

from benchmarks.common import (
    ALPN,
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

SEND_BUFFER = 1024 * 1024


def _raise_qh3_max_streams_bidi() -> None:
    """Make qh3 2.1 allow MAX_STREAMS_BIDI instead of its hard-coded 100 (private API).

    The limit is written twice: in the transport parameters the TLS bridge sends,
    and as an argument of the core (the 22nd) that enforces it."""
    connection = importlib.import_module("qh3.quic.connection")
    tls_bridge = importlib.import_module("qh3.quic.tls_bridge")
    params, core = tls_bridge.QuicTransportParameters, connection.QuicConnectionCore

    def make_params(**kwargs):
        return params(**{**kwargs, "initial_max_streams_bidi": MAX_STREAMS_BIDI})

    def make_core(*args):
        assert args[21] == 100, "qh3's QuicConnectionCore arguments changed"
        return core(*args[:21], MAX_STREAMS_BIDI, *args[22:])

    tls_bridge.QuicTransportParameters = make_params
    connection.QuicConnectionCore = make_core


if QH3:
    _raise_qh3_max_streams_bidi()


class Stats:
    connections = 0
    streams = 0
    bad_streams = 0
    broken_streams = 0
    bytes_checked = 0


STATS = Stats()


class BadBytes(Exception):
    pass


class _Sender:
    """A pattern of ``size`` bytes still to queue on a stream (then FIN)."""

    __slots__ = ("offset", "size")

    def __init__(self, size: int) -> None:
        self.offset = 0
        self.size = size


class _Waiter:
    """Client side of one request: checks the response, resolves a future at FIN."""

    __slots__ = ("checker", "expected", "future")

    def __init__(self, future: asyncio.Future, expected: int) -> None:
        self.future = future
        self.expected = expected
        self.checker = PatternChecker()


class PerfProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        quic = self._quic
        if not QH3:  # qh3's limit is raised at import (_raise_qh3_max_streams_bidi)
            quic._local_max_streams_bidi.value = MAX_STREAMS_BIDI
            quic._local_max_streams_bidi.sent = MAX_STREAMS_BIDI
        self._senders: dict[int, _Sender] = {}
        self._parsers: dict[int, RequestParser] = {}
        self._waiters: dict[int, _Waiter] = {}
        if not quic.configuration.is_client:
            STATS.connections += 1

    # -- sending --------------------------------------------------------

    def start_sending(self, stream_id: int, size: int) -> None:
        """Queue ``size`` pattern bytes then FIN on ``stream_id``, at most SEND_BUFFER unsent at a time."""
        if size <= SEND_BUFFER:
            self._quic.send_stream_data(stream_id, bytes(pattern_slice(0, size)) if size else b"", end_stream=True)
            return
        self._senders[stream_id] = _Sender(size)
        self._pump()

    def _pump(self) -> None:
        quic = self._quic
        for stream_id, sender in list(self._senders.items()):
            if QH3:
                unsent = quic.get_send_buffer_size(stream_id)
            else:
                stream = quic._streams.get(stream_id)
                if stream is None:
                    del self._senders[stream_id]
                    continue
                unsent = stream.sender._buffer_stop - stream.sender.highest_offset
            while unsent < SEND_BUFFER and sender.offset < sender.size:
                n = min(BULK_WRITE_SIZE, sender.size - sender.offset)
                last = sender.offset + n == sender.size
                quic.send_stream_data(stream_id, bytes(pattern_slice(sender.offset, n)), end_stream=last)
                sender.offset += n
                unsent += n
            if sender.offset == sender.size:
                del self._senders[stream_id]

    def datagram_received(self, data, addr) -> None:  # type: ignore[override]
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        self._after_receive()

    if QH3:  # qh3 hands over batches of datagrams (recvmmsg/GRO) here

        def datagrams_received(self, data, addr) -> None:  # type: ignore[override]
            self._quic.receive_many_datagrams(data, addr, now=self._loop.time())
            self._after_receive()

    def _after_receive(self) -> None:
        self._process_events()
        if self._senders:
            self._pump()
        self.transmit()

    # -- client requests ------------------------------------------------

    def request(self, payload: bytes, response_size: int, upload: int = 0, transmit: bool = True) -> asyncio.Future:
        """Send a request (``payload``, then ``upload`` pattern bytes, then FIN); the future
        resolves once the whole, checked response has arrived."""
        stream_id = self._quic.get_next_available_stream_id()
        future = self._loop.create_future()
        self._waiters[stream_id] = _Waiter(future, response_size)
        if upload:
            self._quic.send_stream_data(stream_id, payload)
            self.start_sending(stream_id, upload)
        else:
            self._quic.send_stream_data(stream_id, payload, end_stream=True)
        if transmit:
            self.transmit()
        return future

    # -- events ---------------------------------------------------------

    def quic_event_received(self, event) -> None:
        if isinstance(event, StreamDataReceived):
            waiter = self._waiters.get(event.stream_id)
            if waiter is not None:
                if event.data:
                    waiter.checker.feed(event.data)
                if event.end_stream:
                    del self._waiters[event.stream_id]
                    if not waiter.future.done():
                        c = waiter.checker
                        if c.ok and c.offset == waiter.expected:
                            waiter.future.set_result(None)
                        else:
                            waiter.future.set_exception(
                                BadBytes(f"stream {event.stream_id}: got {c.offset} of {waiter.expected} bytes, pattern ok={c.ok}")
                            )
                return
            if self._quic.configuration.is_client:
                return
            parser = self._parsers.get(event.stream_id)
            if parser is None:
                parser = self._parsers[event.stream_id] = RequestParser()
            if event.data:
                parser.feed(event.data)
            if event.end_stream:
                del self._parsers[event.stream_id]
                STATS.bytes_checked += parser.checker.offset
                if not parser.ok:
                    STATS.bad_streams += 1
                    self._quic.reset_stream(event.stream_id, ERROR_BAD_BYTES)
                else:
                    STATS.streams += 1
                    assert parser.response_size is not None
                    self.start_sending(event.stream_id, parser.response_size)
                self.transmit()
        elif isinstance(event, StreamReset):
            self._senders.pop(event.stream_id, None)
            self._parsers.pop(event.stream_id, None)
            waiter = self._waiters.pop(event.stream_id, None)
            if waiter is not None and not waiter.future.done():
                if event.error_code == ERROR_BAD_BYTES:
                    waiter.future.set_exception(BadBytes("the server found wrong bytes in the upload"))
                else:
                    waiter.future.set_exception(ConnectionError(f"stream reset with code {event.error_code}"))
            if not self._quic.configuration.is_client:
                STATS.broken_streams += 1
        elif isinstance(event, ConnectionTerminated):
            for waiter in self._waiters.values():
                if not waiter.future.done():
                    waiter.future.set_exception(ConnectionError(f"connection closed: {event.reason_phrase!r}"))
            self._waiters.clear()
            self._senders.clear()


def make_config(args, *, server: bool) -> QuicConfiguration:
    certs = Path(args.certs)
    config = QuicConfiguration(
        is_client=not server,
        alpn_protocols=[ALPN],
        max_data=MAX_DATA,
        max_stream_data=MAX_STREAM_DATA,
        idle_timeout=30.0,
    )
    # aioquic knows "reno" (= NewReno) and "cubic"; other names keep its default
    # (reno). qh3 has no congestion control setting: args.cc is ignored.
    cc = {"newreno": "reno"}.get(args.cc, args.cc)
    if cc in ("reno", "cubic") and not QH3:
        config.congestion_control_algorithm = cc
    if server:
        config.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    else:
        config.load_verify_locations(cafile=str(certs / "ca.pem"))
        config.verify_mode = ssl.CERT_REQUIRED
        config.server_name = args.server_name
    return config


# -- server ------------------------------------------------------------------


async def run_server(args) -> None:
    await serve_until_signalled(args, create_protocol=PerfProtocol)


async def serve_until_signalled(args, **options) -> None:
    """Serve (``serve(..., **options)``) until SIGTERM/SIGINT, printing the
    listening port first and the server's counters last."""
    config = make_config(args, server=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await serve(args.host, args.port, configuration=config, **options)
    assert server._transport is not None
    port = server._transport.get_extra_info("sockname")[1]
    emit({"event": "listening", "port": port})
    await stop.wait()
    server.close()
    emit(
        {
            "event": "stopped",
            "connections": STATS.connections,
            "streams": STATS.streams,
            "bad_streams": STATS.bad_streams,
            "broken_streams": STATS.broken_streams,
            "bytes_checked": STATS.bytes_checked,
            "peak_rss_kib": peak_rss_kib(),
        }
    )


# -- client ------------------------------------------------------------------


def _connect(args, config):
    return connect(args.host, args.port, configuration=config, create_protocol=PerfProtocol)


async def client_bulk_down(args, config) -> dict:
    async with _connect(args, config) as proto:
        t0 = time.perf_counter()
        await proto.request(header(args.size), args.size)
        elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "mbps": args.size * 8 / elapsed / 1e6}


async def client_bulk_up(args, config) -> dict:
    async with _connect(args, config) as proto:
        t0 = time.perf_counter()
        await proto.request(header(HEADER_SIZE), HEADER_SIZE, upload=args.size)
        elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "mbps": args.size * 8 / elapsed / 1e6}


async def client_rr(args, config) -> dict:
    payload = request(1024, 1024)
    latencies: list[float] = []
    async with _connect(args, config) as proto:
        for i in range(args.warmup + args.iterations):
            t0 = time.perf_counter_ns()
            await proto.request(payload, 1024)
            if i >= args.warmup:
                latencies.append((time.perf_counter_ns() - t0) / 1000.0)
    return summarize_rr(latencies)


async def client_handshake(args, config) -> dict:
    payload = header(HEADER_SIZE)
    times: list[float] = []
    start = time.perf_counter()
    deadline = start + args.duration
    while len(times) < args.max_connections and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        async with _connect(args, config) as proto:
            await proto.request(payload, HEADER_SIZE)
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    times.sort()
    return {
        "per_second": len(times) / elapsed,
        "connections": len(times),
        "p50_ms": times[len(times) // 2] * 1e3,
        "max_ms": times[-1] * 1e3,
    }


async def client_streams(args, config) -> dict:
    payload = request(HEADER_SIZE + args.stream_size, HEADER_SIZE)
    async with _connect(args, config) as proto:
        t0 = time.perf_counter()
        futures = [proto.request(payload, HEADER_SIZE, transmit=False) for _ in range(args.streams)]
        proto.transmit()
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "streams": args.streams}


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
            results.append(await asyncio.wait_for(CLIENTS[args.workload](args, config), args.timeout))
        except (asyncio.TimeoutError, TimeoutError):
            error = f"repeat {i}: no result within {args.timeout} s (hang?)"
            break
        except Exception as exc:
            error = f"repeat {i}: {type(exc).__name__}: {exc}"
            break
    emit({"workload": args.workload, "results": results, "error": error, "peak_rss_kib": peak_rss_kib()})


def main() -> None:
    args = peer_arguments(f"{LIBRARY} benchmark peer", ("asyncio",))
    asyncio.run(run_server(args) if args.mode == "server" else run_client(args))


if __name__ == "__main__":
    main()
