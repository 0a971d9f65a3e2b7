"""The demo: an echo server and a client on loopback, printing what happens."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import anyio

from .. import QuicConfig, QuicConnection, QuicStream, open_quic_connection, serve_quic
from .certs import make_certificates
from ._backend import run as run_on

__all__ = ["run"]


async def _read_to_end(stream: QuicStream) -> bytes:
    data = bytearray()
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return bytes(data)


async def _echo(conn: QuicConnection) -> None:
    async with conn:
        print(f"server: connection from {conn.remote_address}, ALPN {conn.alpn_protocol!r}")
        async for stream in conn:
            if not isinstance(stream, QuicStream):
                continue  # the demo's client only opens bidirectional streams
            received = await _read_to_end(stream)
            print(f"server: stream {stream.stream_id}: {len(received)} bytes in, echoing them back")
            await stream.send(bytes(received))
            await stream.send_eof()


async def _main(certdir: Path) -> None:
    certs = make_certificates(certdir)
    server_config = QuicConfig(alpn=["echo"], certfile=certs.certfile, keyfile=certs.keyfile)
    client_config = QuicConfig(alpn=["echo"], cafile=certs.cafile)
    async with anyio.create_task_group() as tg:
        listener = await tg.start(serve_quic, _echo, "127.0.0.1", 0, server_config)
        print(f"server: listening on UDP 127.0.0.1:{listener.port}")
        started = time.perf_counter()
        async with open_quic_connection("localhost", listener.port, config=client_config) as conn:
            handshake = time.perf_counter() - started
            print(f"client: connected to {conn.remote_address} in {handshake * 1000:.1f} ms, "
                  f"certificate verified, ALPN {conn.alpn_protocol!r}")
            for message in (b"ping", b"hello over QUIC", bytes(range(256)) * 4096):
                stream = await conn.open_stream()
                started = time.perf_counter()
                await stream.send(message)
                await stream.send_eof()
                reply = await _read_to_end(stream)
                elapsed = (time.perf_counter() - started) * 1000
                assert reply == message, "echo mismatch"
                shown = message if len(message) < 32 else f"<{len(message)} bytes>".encode()
                print(f"client: stream {stream.stream_id}: sent {shown!r}, "
                      f"got the same {len(reply)} bytes back in {elapsed:.1f} ms")
            print(f"client: stats {conn.stats}")
        print("client: connection closed")
        tg.cancel_scope.cancel()
    print("server: stopped, port released")


def run(backend: str) -> int:
    """Run the demo on ``backend`` ("asyncio", "trio" or "uvloop"); return the exit status."""
    print(f"aiopquic demo on {backend}")
    with tempfile.TemporaryDirectory() as tmp:
        run_on(_main, Path(tmp), backend=backend)
    return 0
