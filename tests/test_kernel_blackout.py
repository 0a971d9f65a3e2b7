"""A blackout made by the kernel, not by a relay (issue 12): client and server in
two network namespaces joined by a veth pair (tests/netns.py); half-way
through a verified transfer the network goes dark for two seconds, and the
transfer must finish, after the outage, with every byte right.

Two kinds of outage: the server's interface taken down (its sends fail with
ENETUNREACH), and a qdisc that drops everything on both interfaces (sends
succeed, nothing arrives, as with ``netem loss 100%``, which this kernel may
lack).  Before picoquic patch 0023 the first one killed every connection: the
send error started a path challenge on the only path, which failed during the
outage, and the server never sent again (idle timeout).  The relay's blackout
(tests/test_lossy.py) causes no send error, which is why it did not show.
"""

from __future__ import annotations

import dataclasses
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator

import anyio
import pytest

from aiopquic import QuicConfig, open_quic_connection

from .helpers import running_server
from .lossy_transfer import client_transfer, configs, payload, transfer_handler
from .netns import SERVER_ADDRESS, NetnsThread, VethPair, missing_tools, unavailable

MIB = 1024 * 1024
SIZE = 8 * MIB
BLACKOUT = 2.0
TIMEOUT = 25.0  # each side's bound; the idle timeout (30 s) must not be what ends it

#: (outage, congestion control, direction).  "server-link" / "client-link": that
#: side's interface goes down, so the send errors hit that side.
CASES = [
    pytest.param("server-link", "cubic", "down", id="server-link-cubic-down"),
    pytest.param("client-link", "cubic", "up", id="client-link-cubic-up"),
    pytest.param("client-link", "bbr", "down", id="client-link-bbr-down"),
    pytest.param("qdisc", "cubic", "down", id="qdisc-cubic-down"),
]


@pytest.fixture
def net() -> Iterator[VethPair]:
    """Two fresh namespaces, deleted after the test."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)  # not root: a developer's own run, never CI's
    missing = missing_tools()
    if missing:
        pytest.fail(f"{', '.join(missing)} (iproute2) not installed: run the suite through bash tools/run.sh test")
    with VethPair() as pair:
        yield pair


class Blackout:
    """Turns the network off when called (from the client's loop, half-way)
    and back on ``BLACKOUT`` seconds later, from a timer thread."""

    def __init__(self, net: VethPair, kind: str) -> None:
        side = kind.removesuffix("-link")
        self._set: Callable[[bool], None] = (
            net.set_drop_all if kind == "qdisc" else lambda off: net.set_link(side, not off)
        )
        self._timer: threading.Timer | None = None
        self.ended_at: float | None = None

    def __call__(self) -> None:
        self._set(True)
        self._timer = threading.Timer(BLACKOUT, self._end)
        self._timer.start()

    def _end(self) -> None:
        self._set(False)
        self.ended_at = time.monotonic()

    def wait(self) -> None:
        """Bounded: the outage is over (it always ends, whatever the transfer did)."""
        if self._timer is not None:
            self._timer.join(BLACKOUT + 10.0)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(("kind", "cc", "direction"), CASES)
def test_transfer_survives_kernel_blackout(
    net: VethPair, server_config: QuicConfig, client_config: QuicConfig,
    backend: str, kind: str, cc: str, direction: str,
) -> None:
    server_cfg, client_cfg = configs(server_config, client_config, cc, idle_timeout=30.0)
    # A fixed 1 MiB receive window: when the outage starts half-way, at most that
    # much more can already be on its way, so the rest needs the network back.
    server_cfg = dataclasses.replace(server_cfg, max_stream_data=MIB, max_stream_window=MIB)
    client_cfg = dataclasses.replace(
        client_cfg, max_stream_data=MIB, max_stream_window=MIB, server_name="localhost"  # the certificate's name
    )
    ports: queue.Queue[int] = queue.Queue()
    blackout = Blackout(net, kind)

    async def serve() -> None:
        closed = anyio.Event()
        with anyio.move_on_after(TIMEOUT):
            async with running_server(transfer_handler(closed), server_cfg, host=SERVER_ADDRESS) as listener:
                ports.put(listener.port)
                await closed.wait()

    # The server is on asyncio whatever the backend: serve_quic binds its socket
    # in a worker thread, and trio's are cached process-wide, so one made in
    # another namespace (or none) could bind it.  anyio's asyncio workers belong
    # to the loop and start in its namespace.  The client binds in its loop's
    # thread: it runs on ``backend``.
    server = NetnsThread(net.server_ns, serve, "asyncio").start()
    try:
        port = ports.get(timeout=15.0)
    except queue.Empty:
        server.result(5.0)  # raises what kept it from serving
        raise

    async def client() -> tuple[bytes, int, float]:
        with anyio.fail_after(TIMEOUT):
            async with open_quic_connection(SERVER_ADDRESS, port, config=client_cfg) as conn:
                digest, got = await client_transfer(conn, direction, SIZE, midway=blackout)
                return digest, got, time.monotonic()

    try:
        digest, got, done_at = NetnsThread(net.client_ns, client, backend).start().result(TIMEOUT + 5.0)
    finally:
        blackout.wait()
    server.result(TIMEOUT + 5.0)
    assert got == SIZE and digest == hashlib.sha256(payload(SIZE)).digest(), f"{got} of {SIZE} bytes, or wrong bytes"
    assert blackout.ended_at is not None and done_at > blackout.ended_at, "the transfer did not span the outage"
