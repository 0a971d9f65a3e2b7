"""Helpers shared by the tests: run a server in a task group, read a whole stream,
count network threads."""

from __future__ import annotations

import datetime
import os
import re
import selectors
import socket
import subprocess
import sys
import time

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
from anyio.abc import ByteReceiveStream

from aiopquic import AnyQuicStream, QuicConfig, QuicConnection, QuicListener, QuicStream, serve_quic
from aiopquic.cli.certs import CertificateSet, make_certificates

Handler = Callable[[QuicConnection], Awaitable[None]]
T = TypeVar("T")


@asynccontextmanager
async def running_server(
    handler: Handler, config: QuicConfig, host: str | None = "127.0.0.1"
) -> AsyncIterator[QuicListener]:
    """Run ``serve_quic`` for the duration of the block."""
    async with anyio.create_task_group() as tg:
        listener = await tg.start(serve_quic, handler, host, 0, config)
        yield listener
        tg.cancel_scope.cancel()


async def read_all(stream: ByteReceiveStream) -> bytes:
    """Receive until FIN."""
    data = bytearray()
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return bytes(data)


async def echo_once(conn: QuicConnection, payload: bytes) -> None:
    """Send ``payload`` on a new stream of ``conn`` and check it comes back (echo_handler)."""
    stream = await conn.open_stream()
    await stream.send(payload)
    await stream.send_eof()
    assert await read_all(stream) == payload


async def echo_handler(conn: QuicConnection) -> None:
    """Echo every bidirectional stream back, then FIN."""
    async with conn, anyio.create_task_group() as tg:
        async for stream in conn:
            tg.start_soon(echo_stream, stream)


async def echo_stream(stream: AnyQuicStream) -> None:
    """Echo one stream back."""
    data = await read_all(stream)
    if isinstance(stream, QuicStream):  # a unidirectional stream is only drained
        await stream.send(data)
        await stream.send_eof()


def make_odd_certificates(
    directory: Path, *, not_before_days: float = -1, server_auth: bool = True, ca_first: bool = False
) -> CertificateSet:
    """A CA and a leaf for localhost it signs, the leaf's flaws chosen: valid only from
    ``not_before_days`` from now, without serverAuth in its extendedKeyUsage, or
    written after the CA certificate in ``certfile`` (a chain out of order)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return make_certificates(
        directory,
        ("localhost",),
        not_before=now + datetime.timedelta(days=not_before_days),
        server_auth=server_auth,
        ca_first=ca_first,
    )


def bound_udp_addresses(port: int) -> set[str]:
    """The local addresses of this host's UDP sockets bound to ``port`` (read from
    /proc/net: what the kernel really bound, whatever the library reports)."""
    found = set()
    for table, family in (("/proc/net/udp", socket.AF_INET), ("/proc/net/udp6", socket.AF_INET6)):
        with open(table) as f:
            next(f)  # the header
            for line in f:
                address, _, hex_port = line.split()[1].partition(":")
                if int(hex_port, 16) == port:
                    raw = bytes.fromhex(address)
                    if sys.byteorder == "little":  # printed as 32-bit words in host order
                        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    found.add(socket.inet_ntop(family, raw))
    return found


def network_threads() -> int:
    """Threads of this process that are aiopquic network threads (named by the core)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            count += (task / "comm").read_text().strip() == "aiopquic-net"
        except FileNotFoundError:
            pass  # the thread ended while we looked
    return count


async def assert_network_threads(expected: int) -> None:
    """Assert that ``expected`` network threads run, allowing the kernel a moment to
    remove threads already joined: pthread_join() returns when a thread has exited,
    a little before its /proc entry goes."""
    with anyio.move_on_after(1.0):
        while network_threads() != expected:
            await anyio.sleep(0.005)
    assert network_threads() == expected


async def run_blocking(func: Callable[..., T], *args: Any, timeout: float = 20.0, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` in a worker thread (a blocking peer client: aioquic's,
    curl_cffi), failing the test if it takes over ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        return await anyio.to_thread.run_sync(partial(func, *args, **kwargs), abandon_on_cancel=True)


def wait_for_line(process: subprocess.Popen[bytes], pattern: str, timeout: float) -> re.Match[str]:
    """Read a child process's stderr until what it said matches ``pattern`` (bounded by ``timeout``)."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            match = re.search(pattern, seen.decode(errors="replace"))
            if match:
                return match
    raise AssertionError(f"no line matching {pattern!r} from the process; it said: {seen!r}")
