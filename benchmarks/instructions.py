"""Instructions per 1 KiB request/response, counted by valgrind: a figure the noise
of a shared machine does not move.

Wall-clock latencies on a shared VM swing by 20-30 % from one minute to the
next, which hides any change smaller than that.  This counts the user-space
instructions (callgrind) of one process that runs an aiopquic server and client
over loopback and makes sequential 1 KiB request/responses on fresh streams,
twice (``--short`` and ``--long`` exchanges after a warm-up); the difference per
exchange is split by where it ran: the Python interpreter, aiopquic's core
(picoquic, picotls and the bridge, one shared object), OpenSSL, the C library.
Both ends are in the one process, so a figure covers a whole exchange, client
and server.  Kernel time (system calls, wake-ups) is not counted: see run.py
for wall-clock figures.  Repeated runs agree to within ~1 % on asyncio and
~4 % on trio (inline I/O makes the turns depend on where the network thread
is): compare the means of a few runs.

    python benchmarks/instructions.py                 # asyncio and trio
    python benchmarks/instructions.py --backend trio --long 1000

``--workload wt-rr`` counts the same exchange on the streams of one WebTransport
session (``serve_webtransport``, the session's ``serve_streams``) instead of a
bare QUIC connection.

``--workload h3-rr`` counts an HTTP/3 GET of 1 KiB (``serve_h3`` with a bare ASGI
app, ``open_h3_connection``'s ``request``).

``--workload fanout`` counts the fan-out instead: batches of 100 streams opened at
once (a task each, in an anyio task group, as run.py's "streams" row does), each
sending 16 KiB and FIN and reading the server's answer (its first 1 KiB back);
``--short`` and ``--long`` then count streams, and the figure is per stream.

``--workload streams`` counts run.py's "streams" row as its peers run it: the
client opens a batch of 100 streams from one task, sending each 16 KiB and its
FIN in one ``send(..., eof=True)``, then reads the answers in order; the server
runs a task per stream with ``conn.serve_streams()`` and answers 8 bytes with
their FIN: the benchmark peer's own functions (``exchange_pipelined``,
``serve_stream``, which check every byte).  Figures per stream, like ``fanout``'s.

Needs valgrind (``apt-get install valgrind``); takes about a minute per backend.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

WARMUP = 50
#: Fan-out: streams opened at once, and what each sends.
BATCH = 100
FANOUT_REQUEST = 16 * 1024
#: What each shared object counts as (matched against its file name).
OBJECTS = [  # first match wins
    ("aiopquic core", re.compile(r"/_core\.cpython")),
    ("python", re.compile(r"libpython|/python3[.\d]*$|\.cpython-\d+")),
    ("OpenSSL", re.compile(r"libcrypto|libssl")),
    ("C library", re.compile(r"libc\.so|ld-linux")),
]


async def _read_all(stream: Any) -> bytes:
    """Every byte of ``stream`` up to the peer's FIN."""
    import anyio

    data = bytearray()
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return bytes(data)


async def _exchanges(certs: Path, count: int, workload: str = "rr") -> None:
    import anyio

    import aiopquic

    async def handler(conn: aiopquic.QuicConnection) -> None:
        async with conn, anyio.create_task_group() as tg:
            async for stream in conn:
                tg.start_soon(echo, stream)

    async def echo(stream: aiopquic.AnyQuicStream) -> None:
        data = await _read_all(stream)
        if isinstance(stream, aiopquic.QuicStream):
            await stream.send(data[:1024])
            await stream.send_eof()

    server = aiopquic.QuicConfig(alpn=["rr"], certfile=certs / "cert.pem", keyfile=certs / "key.pem")
    client = aiopquic.QuicConfig(alpn=["rr"], cafile=certs / "ca.pem")
    payload = bytes(FANOUT_REQUEST if workload in ("fanout", "streams") else 1024)

    async def exchange(conn: aiopquic.QuicConnection) -> None:
        stream = await conn.open_stream()
        await stream.send(payload)
        await stream.send_eof()
        if await _read_all(stream) != payload[:1024]:
            raise RuntimeError("the echo differs from the request")

    serve = handler
    if workload == "streams":
        # run.py's streams row is the benchmark peer's own code: count that.
        import functools

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from benchmarks.common import HEADER_SIZE, request
        from benchmarks.peers.aiopquic_peer import ServerStats, exchange_pipelined, serve_stream

        handle_stream = functools.partial(serve_stream, stats=ServerStats())
        payload = request(HEADER_SIZE + FANOUT_REQUEST, HEADER_SIZE)

        async def serve_each(conn: aiopquic.QuicConnection) -> None:
            async with conn:
                await conn.serve_streams(handle_stream)

        serve = serve_each
    async with anyio.create_task_group() as tg:
        listener = await tg.start(aiopquic.serve_quic, serve, "127.0.0.1", 0, server)
        async with aiopquic.open_quic_connection("localhost", listener.port, config=client) as conn:
            if workload == "streams":
                for _ in range(count // BATCH + 1):  # a batch of warm-up first
                    await exchange_pipelined(conn, payload, HEADER_SIZE, BATCH)
            elif workload == "fanout":
                for _ in range(count // BATCH + 1):  # a batch of warm-up first
                    async with anyio.create_task_group() as batch:
                        for _ in range(BATCH):
                            batch.start_soon(exchange, conn)
            else:
                for _ in range(WARMUP + count):
                    await exchange(conn)
        tg.cancel_scope.cancel()


async def _wt_exchanges(certs: Path, count: int) -> None:
    import anyio

    import aiopquic
    from aiopquic import webtransport as wt

    app = wt.WebTransportApp()

    @app.route("/rr")
    async def session_handler(session: wt.WebTransportSession) -> None:
        async def echo(stream: wt.WebTransportStream | wt.WebTransportReceiveStream) -> None:
            data = await _read_all(stream)
            if isinstance(stream, wt.WebTransportStream):
                await stream.send(data[:1024], eof=True)

        await session.serve_streams(echo)

    server = aiopquic.QuicConfig(alpn=["h3"], certfile=certs / "cert.pem", keyfile=certs / "key.pem")
    client = aiopquic.QuicConfig(alpn=["h3"], cafile=certs / "ca.pem")
    payload = bytes(1024)
    async with anyio.create_task_group() as tg:
        listener = await tg.start(wt.serve_webtransport, app, "127.0.0.1", 0, server)
        url = f"https://localhost:{listener.port}/rr"
        async with wt.open_webtransport_session(url, config=client) as session:
            for _ in range(WARMUP + count):
                stream = await session.open_stream()
                await stream.send(payload, eof=True)
                if await _read_all(stream) != payload:
                    raise RuntimeError("the echo differs from the request")
        tg.cancel_scope.cancel()


async def _h3_exchanges(certs: Path, count: int) -> None:
    import anyio

    import aiopquic
    from aiopquic import h3

    body = bytes(1024)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan events
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1024")]})
        await send({"type": "http.response.body", "body": body})

    server = aiopquic.QuicConfig(alpn=["h3"], certfile=certs / "cert.pem", keyfile=certs / "key.pem")
    client = aiopquic.QuicConfig(alpn=["h3"], cafile=certs / "ca.pem")
    async with anyio.create_task_group() as tg:
        listener = await tg.start(h3.serve_h3, app, "127.0.0.1", 0, server)
        async with h3.open_h3_connection("localhost", listener.port, config=client) as conn:
            for _ in range(WARMUP + count):
                response = await conn.request("GET", "/")
                if response.content != body:
                    raise RuntimeError("the response differs")
        tg.cancel_scope.cancel()


def _count(backend: str, exchanges: int, certs: Path, workdir: Path, workload: str) -> Counter[str]:
    """Run the workload under callgrind; instructions by object."""
    out = workdir / f"callgrind.{backend}.{exchanges}"
    subprocess.run(
        [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            sys.executable, __file__, "--child", backend, str(exchanges), str(certs), workload,
        ],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    annotated = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", str(out)],
        check=True, capture_output=True, text=True,
    ).stdout
    by_object: Counter[str] = Counter()
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        count = int(m.group(1).replace(",", ""))
        obj = re.search(r"\[([^\]]+)\]\s*$", m.group(2))
        name = obj.group(1) if obj else ""
        kind = next((k for k, pattern in OBJECTS if pattern.search(name)), None)
        if kind is None:
            # Lines without an object are code inlined from headers: the interpreter's.
            kind = "python" if not name or "Python-" in m.group(2) or "Include" in m.group(2) else "other"
        by_object[kind] += count
    return by_object


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        import anyio

        backend, count, certs, workload = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
        if workload == "wt-rr":
            anyio.run(_wt_exchanges, certs, count, backend=backend)
        elif workload == "h3-rr":
            anyio.run(_h3_exchanges, certs, count, backend=backend)
        else:
            anyio.run(_exchanges, certs, count, workload, backend=backend)
        return
    parser = argparse.ArgumentParser(description="instructions per request/response, counted by valgrind")
    parser.add_argument("--backend", choices=("asyncio", "trio"), action="append")
    parser.add_argument("--workload", choices=("rr", "wt-rr", "h3-rr", "fanout", "streams"), default="rr")
    parser.add_argument("--short", type=int, default=200, help="exchanges (streams) in the first run")
    parser.add_argument("--long", type=int, default=600, help="exchanges (streams) in the second run")
    args = parser.parse_args()
    if args.workload in ("fanout", "streams") and (args.short % BATCH or args.long % BATCH):
        parser.error(f"--short and --long count streams in batches of {BATCH}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        sys.exit("instructions.py needs valgrind: apt-get install valgrind")
    if args.long <= args.short:
        parser.error("--long must be larger than --short")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from aiopquic.cli.certs import make_certificates

    with tempfile.TemporaryDirectory(prefix="aiopquic-instructions-") as tmp:
        workdir = Path(tmp)
        certs = workdir / "certs"
        make_certificates(certs)  # here: the measured process never imports cryptography
        for backend in args.backend or ["asyncio", "trio"]:
            short = _count(backend, args.short, certs, workdir, args.workload)
            long = _count(backend, args.long, certs, workdir, args.workload)
            per = {k: (long[k] - short[k]) / (args.long - args.short) for k in set(short) | set(long)}
            total = sum(per.values())
            parts = ", ".join(f"{k} {v / 1000:.0f}k" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 500)
            what = {
                "fanout": "fan-out stream (16 KiB up, 1 KiB back)",
                "streams": "pipelined stream (16 KiB up, 8 bytes back)",
                "wt-rr": "1 KiB request/response on a WebTransport stream",
                "h3-rr": "HTTP/3 GET of 1 KiB",
            }.get(args.workload, "1 KiB request/response")
            print(f"{backend}: {total / 1000:.0f}k instructions per {what} ({parts})")


if __name__ == "__main__":
    main()
