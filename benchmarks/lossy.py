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
Idle timeout 30 s everywhere.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiopquic import QuicConfig  # noqa: E402
from aiopquic.cli.certs import make_certificates  # noqa: E402
from aiopquic.quic.config import CONGESTION_CONTROLS  # noqa: E402
from tests.lossy_relay import Impairment  # noqa: E402
from tests.lossy_transfer import configs, transfer  # noqa: E402

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
}


async def one(
    server: QuicConfig, client: QuicConfig, condition: str, direction: str, size: int,
    seed: int, timeout: float,
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
    return f"{result.goodput_mbps:.1f}"


async def main(args: argparse.Namespace) -> int:
    conditions = args.only.split(",") if args.only else list(CONDITIONS)
    ccs = args.cc.split(",") if args.cc else list(CONGESTION_CONTROLS)
    directions = args.direction.split(",")
    size = int(args.mib * MIB)
    with tempfile.TemporaryDirectory() as tmp:
        certs = make_certificates(Path(tmp))
        base_server = QuicConfig(alpn=["x"], certfile=certs.certfile, keyfile=certs.keyfile)
        base_client = QuicConfig(alpn=["x"], cafile=certs.cafile)
        columns = [f"{c}/{d}" for c in conditions for d in directions]
        print(f"aiopquic over tests/lossy_relay.py, {args.mib:g} MiB per transfer, backend "
              f"{args.backend}, seeds 0..{args.seeds - 1}, timeout {args.timeout:g} s; goodput Mbit/s")
        width = max(12, *(len(c) + 1 for c in columns))
        print(f"{'cc':<8}" + "".join(f"{c:>{width}}" for c in columns), flush=True)
        failures = 0
        for cc in ccs:
            server, client = configs(base_server, base_client, cc, idle_timeout=30.0)
            row = f"{cc:<8}"
            for condition in conditions:
                for direction in directions:
                    cells = []
                    for seed in range(args.seeds):
                        cells.append(await one(server, client, condition, direction, size, seed, args.timeout))
                        failures += not cells[-1][0].isdigit()
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
    args = parser.parse_args()
    sys.exit(anyio.run(main, args, backend=args.backend))
