"""What the benchmark peers share: the wire protocol, the byte pattern, reports.

Wire protocol: the "quicperf" protocol of picoquic's ``picoquicdemo -a perf``
(draft-banks-quic-performance), so that every peer speaks the same thing as
picoquic's own tool.  ALPN ``perf``.  On each bidirectional stream the client
sends an 8-byte big-endian *response size*, then optional payload ("post"),
then FIN.  The server reads to FIN and only then answers with *response size*
bytes and FIN.

Payload bytes (after the 8-byte header, and the whole response) follow one
deterministic pattern: byte ``i`` of a payload is ``PATTERN[i % PERIOD]``.
``PERIOD`` is a prime so that chunk boundaries never line up with it, which
catches reordered, duplicated or dropped chunks.  Receivers check every byte.
A server that finds a wrong byte resets the stream with ``ERROR_BAD_BYTES``.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from typing import Any

ALPN = "perf"
HEADER_SIZE = 8
#: Error code a server resets a stream with when the payload is wrong.
ERROR_BAD_BYTES = 0xBAD

PERIOD = 65521  # prime
MAX_SLICE = 1 << 20
PATTERN = random.Random(0x5EED).randbytes(PERIOD)
#: PATTERN repeated so that any slice of up to MAX_SLICE bytes starting anywhere
#: in the first period is contiguous.
_EXTENDED = (PATTERN * (MAX_SLICE // PERIOD + 2))[: PERIOD + MAX_SLICE]
_EXTENDED_VIEW = memoryview(_EXTENDED)

#: Receive size used by every Python peer for bulk transfers.
BULK_READ_SIZE = 1 << 20
#: Size of each send() of a bulk sender.
BULK_WRITE_SIZE = 256 * 1024

#: Flow-control windows, the same for aiopquic and aioquic (aiopquic's defaults).
MAX_DATA = 16 * 1024 * 1024
MAX_STREAM_DATA = 1024 * 1024
MAX_STREAMS_BIDI = 1000


def header(response_size: int) -> bytes:
    return response_size.to_bytes(HEADER_SIZE, "big")


def pattern_slice(offset: int, size: int) -> memoryview:
    """Pattern bytes ``offset .. offset+size`` (``size <= MAX_SLICE``), without copying."""
    start = offset % PERIOD
    return _EXTENDED_VIEW[start : start + size]


def pattern_bytes(offset: int, size: int) -> bytes:
    out = bytearray()
    while size:
        n = min(size, MAX_SLICE)
        out += pattern_slice(offset, n)
        offset += n
        size -= n
    return bytes(out)


def request(post_size: int, response_size: int) -> bytes:
    """A whole small request: header plus ``post_size - 8`` pattern bytes (post counts the header)."""
    return header(response_size) + pattern_bytes(0, max(0, post_size - HEADER_SIZE))


class PatternChecker:
    """Checks that a byte stream is the pattern from offset 0, chunk by chunk."""

    __slots__ = ("offset", "ok")

    #: False only for interop experiments with peers that send other bytes (--no-verify).
    verify = True

    def __init__(self) -> None:
        self.offset = 0
        self.ok = True

    def feed(self, data: bytes | memoryview) -> bool:
        # bytes.startswith(prefix, start) compares in place: neither side is copied.
        size = len(data)
        if not self.verify:
            pass
        elif size <= MAX_SLICE:
            if not _EXTENDED.startswith(data, self.offset % PERIOD):
                self.ok = False
        else:
            view = memoryview(data)
            for pos in range(0, size, MAX_SLICE):
                if not _EXTENDED.startswith(view[pos : pos + MAX_SLICE], (self.offset + pos) % PERIOD):
                    self.ok = False
        self.offset += size
        return self.ok


class RequestParser:
    """Server side of one quicperf stream: the header, then the payload checked."""

    __slots__ = ("_head", "checker", "response_size")

    def __init__(self) -> None:
        self._head = b""
        self.response_size: int | None = None
        self.checker = PatternChecker()

    def feed(self, data: bytes | memoryview) -> None:
        if self.response_size is None:
            # Through a view: slicing the bytes would copy the payload after the
            # header (16 KiB a stream in the streams row) only to check it.
            view = memoryview(data)
            need = HEADER_SIZE - len(self._head)
            self._head += view[:need]
            data = view[need:]
            if len(self._head) == HEADER_SIZE:
                self.response_size = int.from_bytes(self._head, "big")
        if data:
            self.checker.feed(data)

    @property
    def ok(self) -> bool:
        return self.response_size is not None and self.checker.ok


def peak_rss_kib() -> int:
    """Peak resident set size of this process (VmHWM), in KiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON line on stdout (what the orchestrator reads)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


WORKLOADS = ("bulk-down", "bulk-up", "rr", "handshake", "streams")


def peer_arguments(description: str, backends: tuple[str, ...]) -> Any:
    """Command line shared by the Python peers."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("mode", choices=("server", "client"))
    parser.add_argument("workload", nargs="?", choices=WORKLOADS, help="client only")
    parser.add_argument("--backend", choices=backends, default=backends[0])
    parser.add_argument("--certs", required=True, help="directory with ca.pem, cert.pem, key.pem")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cc", default=None, help="congestion control (default: the library's)")
    parser.add_argument("--fixed-window", action="store_true",
                        help="aiopquic: no receive window autotuning (max_stream_window = max_stream_data)")
    parser.add_argument("--no-inline-io", action="store_true",
                        help="aiopquic: all I/O on the network thread (QuicConfig.inline_io=False)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--size", type=int, default=256 << 20, help="bulk payload bytes")
    parser.add_argument("--iterations", type=int, default=2000, help="rr: timed iterations")
    parser.add_argument("--warmup", type=int, default=200, help="rr: untimed iterations first")
    parser.add_argument("--duration", type=float, default=3.0, help="handshake: seconds per repeat")
    parser.add_argument("--max-connections", type=int, default=2000, help="handshake: cap per repeat")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-size", type=int, default=16 * 1024)
    parser.add_argument("--timeout", type=float, default=60.0, help="client: limit per repeat (s)")
    parser.add_argument(
        "--budget", type=float, default=0.0,
        help="client: start no further repeat that would end after this many seconds (0 = no limit)",
    )
    parser.add_argument("--no-verify", action="store_true", help="check sizes only (for peers sending other bytes)")
    args = parser.parse_args()
    if args.no_verify:
        PatternChecker.verify = False
    if args.mode == "client" and args.workload is None:
        parser.error("client needs a WORKLOAD")
    return args


def summarize_rr(latencies_us: list[float]) -> dict[str, float]:
    values = sorted(latencies_us)
    return {
        "p50_us": percentile(values, 50),
        "p99_us": percentile(values, 99),
        "mean_us": sum(values) / len(values),
        "min_us": values[0],
        "n": len(values),
    }


class RepeatBudget:
    """Decides whether one more repeat fits in ``budget`` seconds (always at least one)."""

    def __init__(self, repeat: int, budget: float) -> None:
        import time

        self._clock = time.perf_counter
        self.repeat = repeat
        self.budget = budget
        self.start = self._clock()
        self.done = 0
        self._last = self.start

    def more(self) -> bool:
        now = self._clock()
        last_duration = now - self._last
        self._last = now
        if self.done >= self.repeat:
            return False
        if self.done and self.budget > 0 and (now - self.start) + last_duration > self.budget:
            return False
        self.done += 1
        return True
