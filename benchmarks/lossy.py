"""Transfers over an impaired network (issue 12), the long version of
tests/test_lossy.py: every condition x every congestion control x both
directions, 16 MiB each, every byte verified, through the seeded UDP relay of
tests/lossy_relay.py.  Prints a goodput table (Mbit/s; STALL = not done within
--timeout, BAD = wrong bytes).

    python benchmarks/lossy.py                          # everything, 16 MiB, asyncio
    python benchmarks/lossy.py --backend trio --mib 4
    python benchmarks/lossy.py --only loss2,blackout --cc newreno,cubic --seeds 3

Conditions (one-way delay d, so RTT = 2d):
  loss2       2 % random loss, RTT 40 ms            (issue 12: newreno stalled)
  loss5       5 % random loss, RTT 40 ms
  loss10      10 % random loss, RTT 20 ms
  bursty      Gilbert-Elliott bursts (enter 1 %, leave 30 %), RTT 40 ms
  reorder     25 % of datagrams held back up to 20 ms, RTT 20 ms
  dup         5 % duplicated, RTT 20 ms
  bottleneck  20 Mbit/s with a 1 MiB drop-tail queue, RTT 40 ms
  blackout    3 s with nothing delivered, mid-transfer, RTT 20 ms
  blackout64  the issue's case: 64 MiB (whatever --mib says), RTT 20 ms, 3 s blackout
Idle timeout 30 s everywhere.

Peers (--peers): ``ours`` (our client and server in this process, every byte
hashed), ``picoquicdemo`` (its server and its perf client, built from the same
patched picoquic sources as ours, see run.py; its figure is its own
Upload/Download_Mbps, which counts the handshake; it checks sizes, not bytes)
and ``aioquic`` (benchmarks/peers/aioquic_peer.py as server and client, sizes
checked; it has reno and cubic only, other algorithms print "-").  Every
peer's client reaches its server through the same relay with the same seed.

    python benchmarks/lossy.py --peers ours,picoquicdemo,aioquic --cc cubic,bbr --direction down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiopquic import QuicConfig  # noqa: E402
from aiopquic.cli.certs import make_certificates  # noqa: E402
from aiopquic.quic.config import CONGESTION_CONTROLS  # noqa: E402
from tests.lossy_relay import Impairment, LossyRelay  # noqa: E402
from tests.lossy_transfer import configs, transfer  # noqa: E402
from benchmarks.common import HEADER_SIZE  # noqa: E402
from benchmarks.run import PEERS_DIR, Server, free_udp_port, picoquicdemo, run_process  # noqa: E402

MIB = 1024 * 1024

#: name -> (impairment, blackout seconds)
CONDITIONS: dict[str, tuple[Impairment, float]] = {
    "loss2": (Impairment(delay=0.020, loss=0.02), 0.0),
    "loss5": (Impairment(delay=0.020, loss=0.05), 0.0),
    "loss10": (Impairment(delay=0.010, loss=0.10), 0.0),
    "bursty": (Impairment(delay=0.020, burst_enter=0.01, burst_leave=0.3), 0.0),
    "reorder": (Impairment(delay=0.010, reorder=0.25, jitter=0.020), 0.0),
    "dup": (Impairment(delay=0.010, duplicate=0.05), 0.0),
    "bottleneck": (Impairment(delay=0.020, rate=20e6 / 8, queue=MIB), 0.0),
    "blackout": (Impairment(delay=0.010), 3.0),
    "blackout64": (Impairment(delay=0.010), 3.0),
}

#: conditions with a size of their own (the issue's 64 MiB blackout case)
SIZES: dict[str, int] = {"blackout64": 64 * MIB}

PEERS = ("ours", "picoquicdemo", "aioquic")
AIOQUIC_CCS = {"newreno": "reno", "cubic": "cubic"}


async def one(
    server: QuicConfig, client: QuicConfig, condition: str, direction: str, size: int,
    seed: int, timeout: float, detail: bool = False,
) -> str:
    impairment, blackout = CONDITIONS[condition]
    try:
        result = await transfer(
            server, client, direction=direction, size=size, impairment=impairment,
            seed=seed, timeout=timeout, blackout=blackout,
        )
    except TimeoutError as exc:
        print(f"  {condition} {direction} seed {seed}: {exc}", file=sys.stderr)
        return "STALL"
    except AssertionError as exc:
        print(f"  {condition} {direction} seed {seed}: {exc}", file=sys.stderr)
        return "BAD"
    except Exception as exc:  # a connection error is a result too: report it, go on
        print(f"  {condition} {direction} seed {seed}: {exc!r}", file=sys.stderr)
        return "ERR"
    if detail and result.sender_stats is not None and result.receiver_stats is not None:
        sender, receiver = result.sender_stats, result.receiver_stats
        print(
            f"  {server.congestion_control} {condition} {direction} seed {seed}: "
            f"{result.goodput_mbps:.1f} Mbit/s; sender: {sender.packets_sent} packets, "
            f"{sender.packets_lost} lost, final cwnd {sender.congestion_window // 1024} KiB; "
            f"receiver: stream window {receiver.stream_window // 1024} KiB, RTT {receiver.rtt * 1e3:.1f} ms",
            file=sys.stderr,
        )
    return f"{result.goodput_mbps:.1f}"


def _relay(port: int, condition: str, seed: int, size: int) -> LossyRelay:
    impairment, blackout = CONDITIONS[condition]
    return LossyRelay(("127.0.0.1", port), impairment, seed=seed, blackout=blackout, blackout_after=size // 2)


def external(peer: str, binary: Path | None, certs: Path, workdir: Path, cc: str, condition: str,
             direction: str, size: int, seed: int, timeout: float) -> str:
    """One transfer between picoquicdemo's (or aioquic's) own client and server,
    through the relay; blocking (run in a worker thread).  Returns the cell."""
    if peer == "aioquic" and cc not in AIOQUIC_CCS:
        return "-"
    if peer == "picoquicdemo":
        if binary is None:
            return "-"
        port = free_udp_port()
        server = Server([str(binary), "-p", str(port), "-c", str(certs / "cert.pem"), "-k", str(certs / "key.pem"),
                         "-G", cc], workdir, peer)
    else:
        server = Server([sys.executable, str(PEERS_DIR / "aioquic_peer.py"), "server", "--certs", str(certs),
                         "--cc", cc, "--port", "0"], workdir, peer)
    try:
        if peer == "aioquic":
            ready = server.wait_json("listening", 20.0)
            if ready is None:
                return "ERR"
            port = int(ready["port"])
        with _relay(port, condition, seed, size) as relay:
            if peer == "picoquicdemo":
                scenario = f"*1:{HEADER_SIZE}:{size};" if direction == "down" else f"*1:{HEADER_SIZE + size}:{HEADER_SIZE};"
                with tempfile.TemporaryDirectory(prefix="pqd-client-") as cwd:  # no tickets: no 0-RTT
                    proc = run_process([str(binary), "-a", "perf", "-D", "-G", cc, "-t", str(certs / "ca.pem"),
                                        "-n", "localhost", "127.0.0.1", str(relay.port), scenario],
                                       timeout=timeout, cwd=cwd)
                if proc.returncode is None:
                    return "STALL"
                values = {}
                for line in proc.stdout.splitlines():
                    key, sep, value = line.partition(":")
                    if sep:
                        values[key.strip()] = value.strip()
                key, want = ("Download", size) if direction == "down" else ("Upload", size + HEADER_SIZE)
                if proc.returncode != 0 or values.get(f"{key}_bytes") != str(want):
                    print(f"  {peer} {condition} {direction} seed {seed}: code {proc.returncode}, "
                          f"{values.get(f'{key}_bytes')} of {want} bytes", file=sys.stderr)
                    return "ERR"
                return f"{float(values[f'{key}_Mbps']):.1f}"
            workload = "bulk-down" if direction == "down" else "bulk-up"
            proc = run_process([sys.executable, str(PEERS_DIR / "aioquic_peer.py"), "client", workload,
                                "--certs", str(certs), "--cc", cc, "--port", str(relay.port), "--size", str(size),
                                "--timeout", str(timeout)], timeout=timeout + 30.0, cwd=workdir)
            if proc.returncode is None:
                return "STALL"
            report = None
            for line in proc.stdout.splitlines():
                with contextlib.suppress(ValueError):
                    report = json.loads(line)
            if not report or not report.get("results"):
                error = (report or {}).get("error") or proc.stderr.strip()[-200:]
                print(f"  {peer} {condition} {direction} seed {seed}: {error}", file=sys.stderr)
                return "STALL" if "no result within" in str(error) else "ERR"
            return f"{report['results'][0]['mbps']:.1f}"
    finally:
        server.stop(expect_json=False)


async def main(args: argparse.Namespace) -> int:
    conditions = args.only.split(",") if args.only else list(CONDITIONS)
    ccs = args.cc.split(",") if args.cc else list(CONGESTION_CONTROLS)
    directions = args.direction.split(",")
    peers = args.peers.split(",")
    for name in peers:
        if name not in PEERS:
            raise SystemExit(f"unknown peer {name!r}: choose from {', '.join(PEERS)}")
    binary = None
    if "picoquicdemo" in peers:
        binary, message = picoquicdemo(args.build_dir.resolve())
        if message:
            print(message, file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certificates(Path(tmp))
        certdir = Path(certs.cafile).parent
        base_server = QuicConfig(alpn=["x"], certfile=certs.certfile, keyfile=certs.keyfile)
        base_client = QuicConfig(alpn=["x"], cafile=certs.cafile)
        columns = [f"{c}/{d}" for c in conditions for d in directions]
        print(f"over tests/lossy_relay.py, {args.mib:g} MiB per transfer (blackout64: 64), our backend "
              f"{args.backend}, seeds 0..{args.seeds - 1}, timeout {args.timeout:g} s; goodput Mbit/s")
        width = max(12, *(len(c) + 1 for c in columns), 7 * args.seeds)  # room for every seed's figure
        print(f"{'cc':<8}{'peer':<14}" + "".join(f"{c:>{width}}" for c in columns), flush=True)
        failures = 0
        for cc in ccs:
            server, client = configs(base_server, base_client, cc, idle_timeout=30.0)
            for peer in peers:
                row = f"{cc:<8}{peer:<14}"
                for condition in conditions:
                    size = SIZES.get(condition, int(args.mib * MIB))
                    for direction in directions:
                        cells = []
                        for seed in range(args.seeds):
                            if peer == "ours":
                                cell = await one(
                                    server, client, condition, direction, size, seed, args.timeout, args.detail
                                )
                            else:
                                cell = await anyio.to_thread.run_sync(
                                    external, peer, binary, certdir, Path(tmp), cc, condition, direction, size,
                                    seed, args.timeout,
                                )
                            cells.append(cell)
                            failures += not (cell[0].isdigit() or cell == "-")
                        row += f"{'/'.join(cells):>{width}}"
                print(row, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=16.0, help="transfer size (MiB)")
    parser.add_argument("--only", default="", help="comma-separated conditions")
    parser.add_argument("--cc", default="", help="comma-separated congestion controls (default: all)")
    parser.add_argument("--direction", default="up,down", help="up (client sends), down, or both")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a transfer counts as stalled")
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--peers", default="ours", help="comma-separated: ours, picoquicdemo, aioquic")
    parser.add_argument(
        "--detail", action="store_true",
        help="also print each of our transfers' sender and receiver figures (cwnd, losses, window) to stderr",
    )
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build", help="Meson build directory (picoquicdemo)")
    args = parser.parse_args()
    sys.exit(anyio.run(main, args, backend=args.backend))
