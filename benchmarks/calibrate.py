"""What this machine charges for a hand-off, measured in the same run as the peers.

Latency figures (request/response, handshakes) are mostly hand-offs between
threads and processes, and what one costs differs by an order of magnitude
between machines (on some VMs waking an idle CPU costs ~50 us).  These figures
make a run's latencies comparable with another machine's:

- ``udp_rr_us``: two Python processes exchange a 1 KiB UDP datagram each way
  on 127.0.0.1 (blocking sockets): the floor of any request/response between
  two Python peers, two process wake-ups and nothing else.
- ``thread_rr_*_us``: two threads of one Python process hand a token back and
  forth through a pair of eventfds, pinned to one CPU and to two: a round trip
  is two cross-thread wake-ups.  Where the scheduler puts the two threads
  decides which figure applies.
- ``anyio_udp_rr_{asyncio,trio}_us``: the UDP round trip again, through anyio's
  UDP sockets on that backend in both processes, the echo process answering
  each request from a task of its own (as a server does): what the event loop
  and anyio add, with no QUIC at all.  No anyio-native library's
  request/response between two processes gets below it.

Each way, an aiopquic request/response goes Python -> network thread (a thread
hop), network thread -> the peer's network thread (a process wake-up, as in the
UDP figure), then -> the peer's Python (a thread hop); aioquic and picoquicdemo
make the process wake-ups only.

Run on its own: ``python benchmarks/calibrate.py``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

ROUNDS = 2000
WARMUP = 200
PAYLOAD = bytes(1024)


def _p50_us(round_trip: Callable[[], object], rounds: int) -> float:
    """p50 in microseconds of ``round_trip()``, after ``WARMUP`` untimed calls."""
    samples = []
    for i in range(WARMUP + rounds):
        t0 = time.perf_counter_ns()
        round_trip()
        if i >= WARMUP:
            samples.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(samples)


@contextlib.contextmanager
def _echo_process(*args: str) -> Iterator[int]:
    """Run this file as an echo process with ``args``; yield the UDP port it prints.
    An empty datagram sent to it ends it."""
    echo = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        yield int(echo.stdout.readline())
    finally:
        try:
            echo.wait(timeout=5)
        except subprocess.TimeoutExpired:
            echo.kill()
            echo.wait()


def udp_rr_us(rounds: int = ROUNDS) -> float:
    """p50 of a 1 KiB UDP round trip between this process and an echo process."""
    with _echo_process("--udp-echo") as port, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5.0)
        sock.connect(("127.0.0.1", port))

        def round_trip() -> None:
            sock.send(PAYLOAD)
            sock.recv(2048)

        try:
            return _p50_us(round_trip, rounds)
        finally:
            sock.send(b"")


def _udp_echo() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(30.0)
        print(sock.getsockname()[1], flush=True)
        while True:
            data, peer = sock.recvfrom(2048)
            if not data:
                return
            sock.sendto(data, peer)


def anyio_udp_rr_us(backend: str, rounds: int = ROUNDS) -> float:
    """p50 of a 1 KiB request/response over anyio UDP sockets between two processes
    on ``backend``, the echo process answering each request from a task of its own."""
    import anyio

    async def client(port: int) -> float:
        async with await anyio.create_connected_udp_socket("127.0.0.1", port, family=socket.AF_INET) as sock:
            samples = []
            for i in range(WARMUP + rounds):
                t0 = time.perf_counter_ns()
                await sock.send(PAYLOAD)
                await sock.receive()
                if i >= WARMUP:
                    samples.append((time.perf_counter_ns() - t0) / 1000)
            await sock.send(b"")
            return statistics.median(samples)

    with _echo_process("--anyio-echo", backend) as port:
        return anyio.run(client, port, backend=backend)


def _anyio_echo(backend: str) -> None:
    import anyio

    async def serve() -> None:
        async with await anyio.create_udp_socket(local_host="127.0.0.1", family=socket.AF_INET) as sock:
            print(sock.extra(anyio.abc.SocketAttribute.local_port), flush=True)

            async def answer(data: bytes, peer: tuple[str, int]) -> None:
                await sock.sendto(data, *peer)

            with anyio.move_on_after(60):
                async with anyio.create_task_group() as tg:
                    async for data, peer in sock:
                        if not data:
                            break  # the client is done
                        tg.start_soon(answer, data, peer)

    anyio.run(serve, backend=backend)


def thread_rr_us(cpus: tuple[int, int] | None = None, rounds: int = ROUNDS) -> float:
    """p50 of a token's round trip between two threads through two eventfds,
    the threads pinned to ``cpus`` (this thread first) if given."""
    ping, pong = os.eventfd(0), os.eventfd(0)
    saved = os.sched_getaffinity(0)

    def other() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[1]})  # pid 0: the calling thread only
        while os.eventfd_read(ping) != 2:
            os.eventfd_write(pong, 1)

    if cpus is not None:
        os.sched_setaffinity(0, {cpus[0]})
    thread = threading.Thread(target=other, name="calibrate-echo")
    thread.start()

    def round_trip() -> None:
        os.eventfd_write(ping, 1)
        os.eventfd_read(pong)

    try:
        return _p50_us(round_trip, rounds)
    finally:
        os.eventfd_write(ping, 2)
        thread.join()
        os.close(ping)
        os.close(pong)
        os.sched_setaffinity(0, saved)


def measure() -> dict[str, float]:
    figures = {"udp_rr_us": udp_rr_us()}
    for backend in ("asyncio", "trio"):
        figures[f"anyio_udp_rr_{backend}_us"] = anyio_udp_rr_us(backend)
    cpus = sorted(os.sched_getaffinity(0))
    figures["thread_rr_same_cpu_us"] = thread_rr_us((cpus[0], cpus[0]))
    if len(cpus) > 1:
        figures["thread_rr_cross_cpu_us"] = thread_rr_us((cpus[0], cpus[1]))
    return figures


def describe(figures: dict[str, float]) -> str:
    text = (
        f"this machine: 1 KiB UDP round trip between two Python processes p50 "
        f"{figures['udp_rr_us']:.0f} us; token round trip between two threads (eventfd) p50 "
        f"{figures['thread_rr_same_cpu_us']:.0f} us on one CPU"
    )
    if "thread_rr_cross_cpu_us" in figures:
        text += f", {figures['thread_rr_cross_cpu_us']:.0f} us across two"
    text += (
        f"; the UDP round trip through anyio, a task per request on the echo side, p50 "
        f"{figures['anyio_udp_rr_asyncio_us']:.0f} us asyncio, {figures['anyio_udp_rr_trio_us']:.0f} us trio"
    )
    return text


if __name__ == "__main__":
    if sys.argv[1:] == ["--udp-echo"]:
        _udp_echo()
    elif sys.argv[1:2] == ["--anyio-echo"]:
        _anyio_echo(sys.argv[2])
    else:
        print(describe(measure()))
