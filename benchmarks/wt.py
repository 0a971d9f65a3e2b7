"""WebTransport benchmark (issue 10): a WebTransport session's streams and datagrams
against raw QUIC of the same library, and datagrams against pywebtransport.

    bash tools/run.sh bench wt            # or: python benchmarks/wt.py
    python benchmarks/wt.py --quick       # smaller sizes, one round
    python benchmarks/wt.py --backends trio --rounds 5

Rows, on each backend, aiopquic at both ends, server and client in two processes:
  bulk         one stream's download of ``--bulk-mib`` (every byte checked): a
               WebTransport stream (benchmarks/peers/wt_peer.py) over a raw QUIC
               stream (benchmarks/peers/aiopquic_peer.py). Target >= 80 %.
  rr           1 KiB request and 1 KiB response on a new stream each, p50 latency:
               WebTransport over raw QUIC. Target <= 1.2x.
  datagrams    echoes per second with 32 datagrams of 64 bytes in flight for
               ``--seconds``: ours over pywebtransport at both ends
               (benchmarks/peers/pywt_peer.py, asyncio on aioquic). Target >= 5x.
Each figure is the median over ``--rounds`` rounds; within a round the peers run
one after the other, so a slow spell on this shared machine hits both sides of a
ratio alike more often than not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import SERVER_START_TIMEOUT, Server, _last_json, log, run_process  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"


@dataclass
class Measure:
    """One row: what it runs and the figures it collected."""

    name: str
    script: str
    workload: str
    key: str  # the figure of a client result: "mbps", "p50_us" or "per_second"
    backend: str
    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


def client_arguments(workload: str, args: argparse.Namespace) -> list[str]:
    if workload == "bulk-down":
        return ["--size", str(args.bulk_mib << 20)]
    if workload == "rr":
        return ["--iterations", str(args.rr_iterations), "--warmup", str(args.rr_iterations // 10)]
    return ["--duration", str(args.seconds)]


def run_once(measure: Measure, certs: Path, workdir: Path, args: argparse.Namespace) -> None:
    """Start the measure's server, run its client once, record the figure or the error."""
    script = str(PEERS / measure.script)
    common = ["--certs", str(certs), "--backend", measure.backend]
    server = Server([sys.executable, script, "server", *common, "--port", "0"], workdir, measure.name)
    try:
        ready = server.wait_json("listening", SERVER_START_TIMEOUT)
        if ready is None:
            measure.errors.append(f"server did not start: {server.stderr_tail()}")
            return
        timeout = 120.0
        proc = run_process([sys.executable, script, "client", measure.workload, *common, "--port", str(ready["port"]),
                            "--timeout", str(timeout), *client_arguments(measure.workload, args)],
                           timeout=timeout + 30, cwd=workdir)
        report = _last_json(proc.stdout) or {}
        if report.get("error") or not report.get("results"):
            measure.errors.append(report.get("error") or f"no report: {proc.stderr.strip()[-300:]}")
            return
        value = float(report["results"][0][measure.key])
        measure.values.append(value)
        log(f"  {measure.name}: {value:,.0f} {measure.key}")
    finally:
        _, _, problem = server.stop(expect_json=True)
        if problem:
            measure.errors.append(problem)


def measures_for(backend: str) -> dict[str, Measure]:
    return {
        "bulk raw": Measure(f"raw QUIC/{backend} bulk", "aiopquic_peer.py", "bulk-down", "mbps", backend),
        "bulk wt": Measure(f"WebTransport/{backend} bulk", "wt_peer.py", "bulk-down", "mbps", backend),
        "rr raw": Measure(f"raw QUIC/{backend} rr", "aiopquic_peer.py", "rr", "p50_us", backend),
        "rr wt": Measure(f"WebTransport/{backend} rr", "wt_peer.py", "rr", "p50_us", backend),
        "dg wt": Measure(f"WebTransport/{backend} datagrams", "wt_peer.py", "datagrams", "per_second", backend),
    }


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_table(rows: dict[str, dict[str, Measure]], baseline: Measure, args: argparse.Namespace) -> None:
    print(f"\nWebTransport vs raw QUIC and pywebtransport, medians of {args.rounds} round(s)\n")
    print("| backend | bulk Mbps raw / WT | WT/raw (>= 0.80) | rr p50 us raw / WT | WT/raw (<= 1.2) "
          "| datagrams/s WT | vs pywebtransport (>= 5x) |")
    print("|---|---|---|---|---|---|---|")
    base = baseline.median()
    for backend, m in rows.items():
        bulk_raw, bulk_wt = m["bulk raw"].median(), m["bulk wt"].median()
        rr_raw, rr_wt = m["rr raw"].median(), m["rr wt"].median()
        dg = m["dg wt"].median()
        print(f"| {backend} | {fmt(bulk_raw)} / {fmt(bulk_wt)} | {ratio(bulk_wt, bulk_raw)} | {fmt(rr_raw)} / {fmt(rr_wt)} "
              f"| {ratio(rr_wt, rr_raw)} | {fmt(dg)} | {ratio(dg, base)} |")
    print(f"\npywebtransport 0.8 (asyncio, both ends): {fmt(base)} datagrams/s")
    for m in [baseline, *(x for r in rows.values() for x in r.values())]:
        for error in m.errors:
            print(f"  {m.name}: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description="WebTransport benchmark")
    parser.add_argument("--backends", default="asyncio,trio")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk-mib", type=int, default=128)
    parser.add_argument("--rr-iterations", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0, help="datagram workload: seconds per run")
    parser.add_argument("--quick", action="store_true", help="32 MiB, 500 exchanges, 2 s, one round")
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    if args.quick:
        args.bulk_mib, args.rr_iterations, args.seconds, args.rounds = 32, 500, 2.0, 1
    rows = {backend: measures_for(backend) for backend in args.backends.split(",")}
    baseline = Measure("pywebtransport datagrams", "pywt_peer.py", "datagrams", "per_second", "asyncio")
    with tempfile.TemporaryDirectory(prefix="aiopquic-wt-bench-") as tmp:
        workdir = Path(tmp)
        certs = workdir / "certs"
        from aiopquic.cli.certs import make_certificates

        make_certificates(certs)
        for round_ in range(1, args.rounds + 1):
            log(f"round {round_} of {args.rounds}")
            run_once(baseline, certs, workdir, args)
            for measures in rows.values():
                for measure in measures.values():
                    run_once(measure, certs, workdir, args)
    print_table(rows, baseline, args)
    if args.json:
        figures: dict[str, Any] = {m.name: {"values": m.values, "errors": m.errors}
                                   for m in [baseline, *(x for r in rows.values() for x in r.values())]}
        Path(args.json).write_text(json.dumps(figures, indent=2))
    failed = [m for m in [baseline, *(x for r in rows.values() for x in r.values())] if not m.values]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
