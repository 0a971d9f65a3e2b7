"""Where each thread of the two aiopquic peers spends a workload: running, or
runnable but waiting for a CPU.

    python benchmarks/threads.py bulk-down                 # server + client, asyncio
    python benchmarks/threads.py bulk-up --backend trio --runs 3

It runs ``benchmarks/peers/aiopquic_peer.py`` as run.py does (a server process,
then a client process doing ``--repeat`` runs of the workload) and reads each
thread's ``/proc/<pid>/task/<tid>/schedstat`` (Linux only): the time it ran, the
time it sat in a run queue, ready but with no CPU free, and how many times it
was put on a CPU.  Throughput and latency cannot say which of the peers' four
threads holds a workload back on a small machine; these figures can.

What it showed first (issue 11, stop 28, 2 vCPUs): in a bulk download the
sender's network thread runs 76-80 % of the transfer and waits for a CPU
another 18-21 %, and the other three threads together run more than one CPU's
worth: all four fill both vCPUs.  The sender is never short of bytes to send nor
of congestion window (see benchmarks/README.md), so the rate is set by the CPU
time all four threads need together.

Both peers' figures cover the client process's whole life: its imports and
handshake too (a few hundred ms of its Python thread), so compare like with like.
The client's threads end with it: their figures are from the last look, at most
``POLL_SECONDS`` before it exited.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = Path(__file__).resolve().parent / "peers" / "aiopquic_peer.py"
POLL_SECONDS = 0.005


@dataclasses.dataclass
class ThreadTimes:
    """One thread's (or a group of same-named threads') scheduler figures."""

    run_ns: int = 0
    wait_ns: int = 0
    slices: int = 0

    def __add__(self, other: ThreadTimes) -> ThreadTimes:
        return ThreadTimes(self.run_ns + other.run_ns, self.wait_ns + other.wait_ns, self.slices + other.slices)

    def __sub__(self, other: ThreadTimes) -> ThreadTimes:
        return ThreadTimes(self.run_ns - other.run_ns, self.wait_ns - other.wait_ns, self.slices - other.slices)


def thread_times(pid: int) -> dict[int, tuple[str, ThreadTimes]]:
    """Every live thread of ``pid``: its name and figures, by thread id."""
    threads: dict[int, tuple[str, ThreadTimes]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return threads
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns, slices = (int(v) for v in f.read().split())
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # it ended between the listing and the read
        threads[int(tid)] = (name, ThreadTimes(run_ns, wait_ns, slices))
    return threads


def by_name(threads: dict[int, tuple[str, ThreadTimes]], before: dict[int, tuple[str, ThreadTimes]]) -> dict[str, ThreadTimes]:
    """Figures since ``before``, summed over the threads of each name."""
    totals: dict[str, ThreadTimes] = {}
    for tid, (name, times) in threads.items():
        start = before.get(tid, (name, ThreadTimes()))[1]
        totals[name] = totals.get(name, ThreadTimes()) + (times - start)
    return totals


def run_once(
    args: argparse.Namespace, certs: Path
) -> tuple[dict[str, object], float, dict[str, ThreadTimes], dict[str, ThreadTimes]]:
    """One server and one client process: what the client printed, the seconds the
    shares are of, and the threads' figures over the client's life."""
    common = ["--certs", str(certs), "--backend", args.backend]
    server = subprocess.Popen([sys.executable, str(PEER), "server", *common], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["port"]
        server_before = thread_times(server.pid)
        client = subprocess.Popen(
            [sys.executable, str(PEER), "client", args.workload, *common, "--port", str(port),
             "--repeat", str(args.repeat), "--size", str(args.size)],
            stdout=subprocess.PIPE, text=True,
        )
        seen: dict[int, tuple[str, ThreadTimes]] = {}
        started = time.perf_counter()
        while client.poll() is None:
            seen.update(thread_times(client.pid))
            time.sleep(POLL_SECONDS)
        wall = time.perf_counter() - started
        output = client.stdout.read() if client.stdout is not None else ""
        server_threads = by_name(thread_times(server.pid), server_before)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    lines = output.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    if result.get("error"):
        print(f"client error: {result['error']}", file=sys.stderr)
    runs = result.get("results") or []
    summary: dict[str, object] = {"client process seconds": round(wall, 2)}
    seconds = sum(r["seconds"] for r in runs) if args.workload.startswith("bulk") and runs else 0.0
    if seconds:
        summary["timed seconds"] = round(seconds, 3)
    for key in ("mbps", "p50_us", "per_second"):
        values = [round(r[key], 1) for r in runs if key in r]
        if values:
            summary[key] = values
    return summary, seconds or wall, server_threads, by_name(seen, {})


def print_table(side: str, threads: dict[str, ThreadTimes], seconds: float) -> None:
    for name, t in sorted(threads.items()):
        share = f"{100 * t.run_ns / 1e9 / seconds:5.0f} % / {100 * t.wait_ns / 1e9 / seconds:3.0f} %"
        print(f"  {side:6} {name:14} ran {t.run_ns / 1e6:8.0f} ms  waited {t.wait_ns / 1e6:6.0f} ms  "
              f"{t.slices:7d} times on a CPU  {share}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=("bulk-down", "bulk-up", "rr", "streams", "handshake"))
    parser.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), default="asyncio")
    parser.add_argument("--repeat", type=int, default=3, help="workload runs per client process")
    parser.add_argument("--size", type=int, default=256 << 20, help="bulk payload bytes")
    parser.add_argument("--runs", type=int, default=1, help="server and client processes, one after the other")
    args = parser.parse_args()
    if not os.path.exists("/proc/self/schedstat"):
        print("threads.py needs Linux's /proc/<pid>/task/<tid>/schedstat (schedstats in the kernel)", file=sys.stderr)
        return 2
    from aiopquic.cli.certs import make_certificates

    with tempfile.TemporaryDirectory(prefix="aiopquic-threads-") as tmp:
        certs = Path(tmp)
        make_certificates(certs)
        print(f"{args.workload} on {args.backend}, {args.repeat} workload run(s) per client process. Per thread: time on a CPU, time "
              "runnable in a run queue, times put on a CPU, and the first two as shares of the client's timed "
              "runs (bulk) or of the client process's life (other workloads)")
        for i in range(args.runs):
            summary, seconds, server, client = run_once(args, certs)
            print(f"run {i + 1}: {summary}")
            print_table("server", server, seconds)
            print_table("client", client, seconds)
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
