"""A blackout made by the kernel (issue 12), the long version of
tests/test_kernel_blackout.py: server and client in two network namespaces
joined by a veth pair (tests/netns.py; root and iproute2 needed), a bulk
transfer (64 MiB, sizes checked by the peers), and half-way through it the
network goes dark for 3 s, made by the kernel:

  link   the server's interface goes down: its sends fail (ENETUNREACH),
         nothing arrives (before picoquic patch 0023 this killed every
         connection of ours, and aioquic survived)
  qdisc  a qdisc that drops every packet on both interfaces: sends succeed,
         nothing arrives (what ``netem loss 100%`` does; netem itself may be
         missing from the kernel, as on the machine this was written on)

The 20 ms RTT comes from the delaying relay of run.py --rtt-ms (benchmarks/relay.py,
tests/lossy_relay.py: no loss), which runs in the client's namespace, for want of
netem; the client reaches it over loopback, the relay reaches the server over
the veth pair.  Every peer is a process: ours (benchmarks/peers/aiopquic_peer.py,
both sides on ``--backend``) and aioquic (benchmarks/peers/aioquic_peer.py, reno and
cubic only).  Prints goodput in Mbit/s, or STALL / ERR.

    python benchmarks/kernel_blackout.py
    python benchmarks/kernel_blackout.py --cc cubic,bbr --outage link --backend trio --peers ours,aioquic
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiopquic.cli.certs import make_certificates  # noqa: E402
from aiopquic.quic.config import CONGESTION_CONTROLS  # noqa: E402
from benchmarks.run import PEERS_DIR, Server  # noqa: E402
from tests.netns import SERVER_ADDRESS, VethPair, missing_tools, unavailable  # noqa: E402

MIB = 1024 * 1024
AIOQUIC_CCS = ("newreno", "cubic")


def interface_bytes(net: VethPair) -> int:
    """Bytes through the server's interface so far, both ways."""
    out = subprocess.run(["ip", "-n", net.server_ns, "-j", "-s", "link", "show", "dev", net.server_if],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])


def set_outage(net: VethPair, outage: str, on: bool) -> None:
    if outage == "link":
        net.set_link("server", not on)
    else:
        net.set_drop_all(on)


def one(args: argparse.Namespace, certs: Path, workdir: Path, peer: str, backend: str, cc: str,
        outage: str, direction: str) -> str:
    """One transfer in fresh namespaces; returns the table cell."""
    if peer == "aioquic" and cc not in AIOQUIC_CCS:
        return "-"
    script = str(PEERS_DIR / ("aiopquic_peer.py" if peer == "ours" else "aioquic_peer.py"))
    extra = ["--backend", backend] if peer == "ours" else []
    size = int(args.mib * MIB)
    with VethPair() as net:
        server = Server(["ip", "netns", "exec", net.server_ns, sys.executable, script, "server",
                         "--certs", str(certs), "--host", SERVER_ADDRESS, "--port", "0", "--cc", cc, *extra],
                        workdir, peer)
        relay = None
        client = None
        try:
            ready = server.wait_json("listening", 60.0)
            if ready is None:
                print(f"  {peer} server did not start: {server.stderr_tail()}", file=sys.stderr)
                return "ERR"
            relay = Server(["ip", "netns", "exec", net.client_ns, sys.executable, str(ROOT / "benchmarks" / "relay.py"),
                            "--upstream-host", SERVER_ADDRESS, "--upstream-port", str(ready["port"]),
                            "--rtt-ms", str(args.rtt_ms)], workdir, "relay")
            relayed = relay.wait_json("listening", 30.0)
            if relayed is None:
                return "ERR"
            workload = "bulk-down" if direction == "down" else "bulk-up"
            client = subprocess.Popen(
                ["ip", "netns", "exec", net.client_ns, sys.executable, script, "client", workload,
                 "--certs", str(certs), "--port", str(relayed["port"]), "--cc", cc, "--size", str(size),
                 "--timeout", str(args.timeout), *extra],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
            start = interface_bytes(net)
            deadline = time.monotonic() + args.timeout
            while client.poll() is None and interface_bytes(net) - start < size // 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            if client.poll() is None:
                set_outage(net, outage, True)
                time.sleep(args.blackout)
                set_outage(net, outage, False)
            try:
                out, err = client.communicate(timeout=max(1.0, deadline - time.monotonic()) + 10.0)
            except subprocess.TimeoutExpired:
                return "STALL"
            report = None
            for line in out.splitlines():
                with contextlib.suppress(ValueError):
                    report = json.loads(line)
            if not report or not report.get("results"):
                error = (report or {}).get("error") or err.strip()[-200:]
                print(f"  {peer}/{backend} {cc} {outage} {direction}: {error}", file=sys.stderr)
                return "STALL" if "timed out" in str(error) or "no result" in str(error) else "ERR"
            return f"{report['results'][0]['mbps']:.1f}"
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
            for proc in (relay, server):
                if proc is not None:
                    proc.stop(expect_json=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=64.0, help="transfer size (MiB)")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--blackout", type=float, default=3.0, help="seconds without network")
    parser.add_argument("--cc", default="", help="comma-separated congestion controls (default: all)")
    parser.add_argument("--direction", default="up,down")
    parser.add_argument("--outage", default="link,qdisc")
    parser.add_argument("--backend", default="asyncio,trio", help="our backends, comma-separated")
    parser.add_argument("--peers", default="ours,aioquic", help="ours, aioquic")
    parser.add_argument("--timeout", type=float, default=60.0, help="client limit (s); the idle timeout is 30 s")
    args = parser.parse_args()
    reason = unavailable() or (f"{', '.join(missing_tools())} (iproute2) not installed" if missing_tools() else "")
    if reason:
        raise SystemExit(reason)
    ccs = args.cc.split(",") if args.cc else list(CONGESTION_CONTROLS)
    outages, directions = args.outage.split(","), args.direction.split(",")
    rows = [(peer, backend) for peer in args.peers.split(",")
            for backend in (args.backend.split(",") if peer == "ours" else ["asyncio"])]
    columns = [f"{o}/{d}" for o in outages for d in directions]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(make_certificates(Path(tmp)).cafile).parent
        print(f"kernel blackout {args.blackout:g} s half-way through {args.mib:g} MiB, RTT {args.rtt_ms:g} ms "
              f"(relay), goodput Mbit/s")
        print(f"{'cc':<8}{'peer':<16}" + "".join(f"{c:>14}" for c in columns), flush=True)
        for cc in ccs:
            for peer, backend in rows:
                label = f"{peer}/{backend}" if peer == "ours" else peer
                cells = [one(args, certs, Path(tmp), peer, backend, cc, o, d) for o in outages for d in directions]
                failures += sum(not (c[0].isdigit() or c == "-") for c in cells)
                print(f"{cc:<8}{label:<16}" + "".join(f"{c:>14}" for c in cells), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
