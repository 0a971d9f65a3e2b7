"""A seeded, impairing UDP relay for tests and benchmarks (loopback only).

The relay sits between one QUIC client and one server::

    client  <->  relay.port (127.0.0.1)  <->  upstream (the server)

It runs in its own thread with blocking sockets, so it works the same under
asyncio and trio and never competes with the event loop under test.  Every
datagram goes through an :class:`Impairment` for its direction: random loss,
bursty (Gilbert-Elliott) loss, reordering (extra delay for some packets),
duplication, a rate cap with a bounded queue (tail drop), a fixed one-way
delay, and a blackout window during which everything is dropped.  Random
choices come from ``random.Random(seed)``, one stream per direction, so the
same seed makes the same per-packet decisions (timing on a shared machine
still varies a little, which is why the seed is printed on failure).
"""

from __future__ import annotations

import heapq
import os
import random
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Impairment", "LossyRelay", "RelayStats"]


@dataclass(frozen=True)
class Impairment:
    """What happens to the datagrams of one direction.

    ``delay`` is the one-way delay in seconds (RTT = the sum of both
    directions).  ``loss`` is the probability of dropping a datagram.  Bursty
    loss follows a two-state Gilbert-Elliott chain: from the good state the
    chain enters the bad state with probability ``burst_enter``, leaves it with
    ``burst_leave``, and drops with probability ``burst_loss`` while bad.
    ``reorder`` is the probability that a datagram is held back by an extra
    uniform ``0 .. jitter`` seconds (so later ones overtake it).
    ``duplicate`` is the probability that a datagram is delivered twice.
    ``rate`` (bytes/s, 0 = unlimited) serialises datagrams through a queue of
    at most ``queue`` bytes; what does not fit is dropped (a bottleneck with a
    drop-tail buffer).  Blackouts are a property of the whole relay (see
    :class:`LossyRelay`).
    """

    delay: float = 0.0
    loss: float = 0.0
    burst_enter: float = 0.0
    burst_leave: float = 0.25
    burst_loss: float = 1.0
    reorder: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    rate: float = 0.0
    queue: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "burst_enter", "burst_leave", "burst_loss", "reorder", "duplicate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: a probability between 0 and 1, not {value!r}")
        for name in ("delay", "jitter", "rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")


@dataclass
class RelayStats:
    """Datagram counts of one direction."""

    received: int = 0
    forwarded: int = 0
    bytes_forwarded: int = 0
    lost: int = 0
    burst_lost: int = 0
    queue_dropped: int = 0
    blackout_dropped: int = 0
    reordered: int = 0
    duplicated: int = 0

    def __str__(self) -> str:
        return (
            f"rx {self.received} fwd {self.forwarded} lost {self.lost} burst {self.burst_lost} "
            f"queue {self.queue_dropped} blackout {self.blackout_dropped} "
            f"reordered {self.reordered} dup {self.duplicated}"
        )


@dataclass
class _Direction:
    impairment: Impairment
    rng: random.Random
    stats: RelayStats = field(default_factory=RelayStats)
    bad: bool = False  # Gilbert-Elliott state
    drop_next: int = 0  # datagrams of at least drop_min_size bytes still to drop (drop_next())
    drop_min_size: int = 0
    link_free_at: float = 0.0  # when the rate-capped link finishes what is queued


class LossyRelay:
    """Forward UDP between one client and ``upstream`` through impairments.

    Use as a context manager (the thread stops and the sockets close on exit)::

        with LossyRelay(("127.0.0.1", server_port), Impairment(loss=0.02), seed=1) as relay:
            ... connect the client to ("127.0.0.1", relay.port) ...

    ``to_server`` applies to client->server datagrams; ``to_client`` defaults
    to the same impairment for the reverse direction.  With ``blackout`` (a
    duration in seconds), every datagram in both directions is dropped for that
    long once ``blackout_after`` bytes have been forwarded (both directions
    counted): a link that goes dark mid-transfer.  Clients reach the relay on
    ``listen_host`` (loopback unless said).
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        to_server: Impairment | None = None,
        to_client: Impairment | None = None,
        *,
        seed: int = 0,
        blackout: float = 0.0,
        blackout_after: int = 0,
        listen_host: str = "127.0.0.1",
    ) -> None:
        to_server = to_server or Impairment()
        to_client = to_client or to_server
        self.seed = seed
        self._blackout = blackout
        self._blackout_after = blackout_after
        self._blackout_start: float | None = None
        self._bytes_forwarded = 0
        self._upstream = upstream
        self._up = _Direction(to_server, random.Random(f"{seed}-up"))
        self._down = _Direction(to_client, random.Random(f"{seed}-down"))
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (self._front, self._back):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setblocking(False)
        self._front.bind((listen_host, 0))
        # Towards a server outside loopback (another network namespace), the
        # kernel picks the source address.
        self._back.bind(("127.0.0.1" if upstream[0].startswith("127.") else "0.0.0.0", 0))
        self._client: tuple[str, int] | None = None
        self._heap: list[tuple[float, int, bool, bytes]] = []  # (due, seq, to_server, data)
        self._seq = 0
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="lossy-relay", daemon=True)
        self.error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port clients connect to (on ``listen_host``)."""
        return int(self._front.getsockname()[1])

    @property
    def to_server_stats(self) -> RelayStats:
        return self._up.stats

    @property
    def to_client_stats(self) -> RelayStats:
        return self._down.stats

    def __str__(self) -> str:
        return f"seed {self.seed}; to server: {self._up.stats}; to client: {self._down.stats}"

    def drop_next(self, count: int = 1, *, to_server: bool = True, min_size: int = 0) -> None:
        """Drop the next ``count`` datagrams of one direction that have at least
        ``min_size`` bytes (counted as ``lost``), before any other impairment."""
        d = self._up if to_server else self._down
        d.drop_min_size = min_size
        d.drop_next = count

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._stopping = True
            os.write(self._wake_w, b"x")
            self._thread.join(5.0)
        for sock in (self._front, self._back):
            sock.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> LossyRelay:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported to the test through .error
            self.error = exc

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._front, selectors.EVENT_READ, True)
        sel.register(self._back, selectors.EVENT_READ, False)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping:
                now = time.monotonic()
                self._deliver_due(now)
                timeout = None if not self._heap else max(0.0, self._heap[0][0] - now)
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        return
                    self._drain(key.fileobj, bool(key.data))  # type: ignore[arg-type]
        finally:
            sel.close()

    def _drain(self, sock: socket.socket, from_client: bool) -> None:
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:  # ICMP from a closed peer port: ignore
                continue
            now = time.monotonic()
            if from_client:
                self._client = addr
                self._impair(self._up, data, now, to_server=True)
            elif self._client is not None:
                self._impair(self._down, data, now, to_server=False)

    def _impair(self, d: _Direction, data: bytes, now: float, *, to_server: bool) -> None:
        imp, rng, st = d.impairment, d.rng, d.stats
        st.received += 1
        # Draw every random number for every datagram, in a fixed order, so the
        # decisions for datagram N do not depend on what happened before.
        r_loss, r_ge, r_burst, r_reorder, r_jitter, r_dup = (rng.random() for _ in range(6))
        if d.drop_next > 0 and len(data) >= d.drop_min_size:
            d.drop_next -= 1
            st.lost += 1
            return
        if self._blackout > 0:
            if self._blackout_start is None and self._bytes_forwarded >= self._blackout_after:
                self._blackout_start = now
            if self._blackout_start is not None and now < self._blackout_start + self._blackout:
                st.blackout_dropped += 1
                return
        if imp.burst_enter > 0:
            d.bad = (r_ge >= imp.burst_leave) if d.bad else (r_ge < imp.burst_enter)
            if d.bad and r_burst < imp.burst_loss:
                st.burst_lost += 1
                return
        if r_loss < imp.loss:
            st.lost += 1
            return
        due = now
        if imp.rate > 0:
            start_tx = max(now, d.link_free_at)
            if imp.queue and (start_tx - now) * imp.rate + len(data) > imp.queue:
                st.queue_dropped += 1
                return
            d.link_free_at = start_tx + len(data) / imp.rate
            due = d.link_free_at
        due += imp.delay
        if r_reorder < imp.reorder:
            st.reordered += 1
            due += r_jitter * imp.jitter
        copies = 1
        if r_dup < imp.duplicate:
            st.duplicated += 1
            copies = 2
        for _ in range(copies):
            st.forwarded += 1
            st.bytes_forwarded += len(data)
            self._bytes_forwarded += len(data)
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, to_server, data))

    def _deliver_due(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, to_server, data = heapq.heappop(self._heap)
            try:
                if to_server:
                    self._back.sendto(data, self._upstream)
                elif self._client is not None:
                    self._front.sendto(data, self._client)
            except (BlockingIOError, ConnectionRefusedError):
                pass  # a full socket buffer or a closed peer: the datagram is lost
