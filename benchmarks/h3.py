"""HTTP/3 benchmark: the same ASGI app (benchmarks/h3_app.py) served by hypercorn
and by aiopquic's ``h3.serve_h3`` on asyncio and trio, loaded by a C client so
the client is not what is measured: ngtcp2's ``gtlsclient`` (Debian package
``ngtcp2-client``, installed here with apt-get when missing).

    bash tools/run.sh bench h3              # or: python benchmarks/h3.py
    python benchmarks/h3.py --quick         # smaller sizes, one repeat
    python benchmarks/h3.py --only hypercorn --requests 5000 --download-mib 256 --repeat 3

Servers: hypercorn (the baseline of the ratios), aiopquic on asyncio and trio, and
picoquicdemo's own HTTP/3 server (C, picoquic's h3zero, built by Meson like in
benchmarks/run.py): the ceiling of what this client and this machine allow.

Workloads, each a fresh gtlsclient process and connection:
  requests/s   ``-n N`` GETs of ``/`` (2 bytes) on one connection; gtlsclient keeps
               as many in flight as the server's MAX_STREAMS allows (128 here for
               every server), and the time is the process's wall time, handshake
               included (a few ms). Every response is counted from gtlsclient's log.
  download     one GET of ``/bytes/N``, saved with ``--download`` and its size
               checked; Mbps over the process's wall time.
  raw QUIC     (aiopquic only) the single-stream bulk download of
               benchmarks/peers/aiopquic_peer.py (no HTTP/3), the same size, for the
               ratio "H3 download / raw QUIC bulk" (issue 9: >= 80 %).
  Python clients  (aiopquic's servers) benchmarks/peers/h3_client.py: aiopquic's own
               API and httpx through HTTP3Transport on the server's backend, and
               aioquic's H3 client (asyncio): the same GETs with 100 in flight, and
               the same download, on a connection opened before the clock starts.
               Their own API's download over the raw QUIC bulk download of the same
               backend is the like-for-like "H3 / raw QUIC" (aiopquic at both ends).

gtlsclient: verifies no certificate (it has no option to), offers ALPN h3 and
sends :authority from the URL (the address to reach comes separately). Its receive
windows are opened to 1 GiB from the start (see CLIENT_WINDOWS: with smaller ones
hypercorn's downloads stall). A stalled run ends in gtlsclient's 5 s idle timeout,
counts as a failed repeat and is listed under the table. The best of ``--repeat``
runs is kept.

gtlsclient leaves its UDP socket's receive buffer at the system default
(net.core.rmem_default, 208 KiB on Debian): at loopback rates it overflows and
drops ~0.5 % of the packets (UdpRcvbufErrors), and every server then runs its
congestion control against losses the client made. Run as root, the benchmark
raises that default to ``CLIENT_RCVBUF`` for its own duration and restores it
(``--keep-rmem`` leaves it alone); the table says which it was.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import SERVER_START_TIMEOUT, Server, _last_json, log, picoquicdemo, run_process  # noqa: E402

PEERS_DIR = Path(__file__).resolve().parent / "peers"
GTLSCLIENT = "gtlsclient"
#: Receive windows for gtlsclient, large enough that the download needs no window
#: update: with its defaults (15M connection / 6M stream, autotuned up to 24M/16M),
#: or even 64M/32M, downloads from hypercorn (aioquic) stall for good after 35-50 MB,
#: a window-update problem between ngtcp2 0.12 and aioquic.
CLIENT_WINDOWS = ["--max-data=1G", "--max-stream-data-bidi-local=1G"]
NO_H3 = 3  # h3_server.py's exit code when aiopquic.h3 is missing
#: The receive buffer gtlsclient's socket gets (through net.core.rmem_default).
CLIENT_RCVBUF = 4 << 20
RMEM_DEFAULT = Path("/proc/sys/net/core/rmem_default")
#: gtlsclient's idle timeout: a transfer that stalls this long ends the run (exit
#: code 0 all the same: the checks below catch it) and counts as a failed repeat.
IDLE_TIMEOUT = "5s"


@dataclass
class ClientSpec:
    """A Python HTTP/3 client (benchmarks/peers/h3_client.py) run against a server."""

    name: str
    args: list[str]


@dataclass
class ServerSpec:
    name: str
    args: list[str]
    raw_backend: str | None = None  # aiopquic: the backend of the raw QUIC bulk row
    #: The small GET and the download (``{n}``: its size) on this server.
    small_path: str = "/"
    bytes_path: str = "/bytes/{n}"
    #: Python clients run against this server after gtlsclient, the first one
    #: aiopquic's own API on the server's backend (the like-for-like "H3 / raw QUIC").
    clients: list[ClientSpec] = field(default_factory=list)


SERVERS = [
    ServerSpec("picoquicdemo", ["--server", "picoquicdemo"], small_path="/2", bytes_path="/{n}"),
    ServerSpec("hypercorn", ["--server", "hypercorn"]),
    ServerSpec("aiopquic/asyncio", ["--server", "aiopquic", "--backend", "asyncio"], "asyncio", clients=[
        ClientSpec("aiopquic own API/asyncio", ["--client", "aiopquic", "--backend", "asyncio"]),
        ClientSpec("httpx + HTTP3Transport/asyncio", ["--client", "httpx", "--backend", "asyncio"]),
        ClientSpec("aioquic H3 client", ["--client", "aioquic"]),
    ]),
    ServerSpec("aiopquic/trio", ["--server", "aiopquic", "--backend", "trio"], "trio", clients=[
        ClientSpec("aiopquic own API/trio", ["--client", "aiopquic", "--backend", "trio"]),
        ClientSpec("httpx + HTTP3Transport/trio", ["--client", "httpx", "--backend", "trio"]),
    ]),
]
BASELINE = "hypercorn"
#: Requests in flight from a Python client (a worker each).
CLIENT_CONCURRENCY = 100


@dataclass
class ClientRow:
    server: str
    rps: list[float] = field(default_factory=list)
    mbps: list[float] = field(default_factory=list)
    error: str | None = None


@dataclass
class Row:
    rps: list[float] = field(default_factory=list)
    mbps: list[float] = field(default_factory=list)
    raw_mbps: list[float] = field(default_factory=list)
    rss_kib: int | None = None
    error: str | None = None
    #: Repeats that failed (a stall ends in gtlsclient's idle timeout, IDLE_TIMEOUT).
    failures: list[str] = field(default_factory=list)
    clients: dict[str, ClientRow] = field(default_factory=dict)


def ensure_gtlsclient() -> str:
    path = shutil.which(GTLSCLIENT)
    if path:
        return path
    log("gtlsclient is missing: installing Debian's ngtcp2-client")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "ngtcp2-client"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    path = shutil.which(GTLSCLIENT)
    if not path:
        raise SystemExit("gtlsclient is still missing after installing ngtcp2-client")
    return path


@contextlib.contextmanager
def client_receive_buffer(size: int, keep: bool) -> Iterator[str]:
    """Raise net.core.rmem_default to ``size`` while the block runs (root only);
    yields what the table should say about it."""
    try:
        before = int(RMEM_DEFAULT.read_text())
    except (OSError, ValueError):
        yield "gtlsclient's receive buffer: the system default (unknown)"
        return
    if keep or before >= size:
        yield f"gtlsclient's receive buffer: the system default, {before >> 10} KiB"
        return
    try:
        RMEM_DEFAULT.write_text(str(size))
    except OSError:
        yield (f"gtlsclient's receive buffer: the system default, {before >> 10} KiB "
               "(not root: expect its drops to slow the downloads)")
        return
    log(f"net.core.rmem_default {before} -> {size} for this run")
    try:
        yield f"gtlsclient's receive buffer: {size >> 20} MiB (net.core.rmem_default, restored to {before} after)"
    finally:
        RMEM_DEFAULT.write_text(str(before))


def stall(text: str) -> str:
    return "stalled: gtlsclient's idle timeout" if "ERR_IDLE_CLOSE" in text else "see gtlsclient's log"


def gtlsclient(binary: str, port: int, urls: list[str], *, n: int | None, download: Path | None,
               workdir: Path, timeout: float, quiet: bool = False) -> tuple[float, str]:
    """Run gtlsclient to completion; (wall seconds, its log). Raises on failure.

    Not ``quiet``, it logs about 3 KB per request (with its QUIC and HTTP dumps off),
    which is how the responses are counted; quiet (``-q``) for the download, whose
    log would be tens of MB."""
    cmd = [binary, "--exit-on-all-streams-close", *(["-q"] if quiet else ["--no-quic-dump", "--no-http-dump"]), f"--timeout={IDLE_TIMEOUT}",
           *CLIENT_WINDOWS]
    if n is not None:
        cmd.append(f"-n{n}")
    if download is not None:
        cmd.append(f"--download={download}")
    cmd += ["127.0.0.1", str(port), *urls]
    proc = run_process(cmd, timeout=timeout, cwd=workdir)
    if proc.returncode is None:
        raise RuntimeError(f"gtlsclient killed after {timeout:.0f} s")
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"gtlsclient exited with code {proc.returncode}: {tail}")
    return proc.seconds, proc.stderr


def measure_server(spec: ServerSpec, binary: str, certs: Path, workdir: Path, args: argparse.Namespace) -> Row:
    row = Row()
    server = Server([sys.executable, str(PEERS_DIR / "h3_server.py"), *spec.args, "--certs", str(certs)],
                    workdir, spec.name)
    try:
        ready = server.wait_json("listening", SERVER_START_TIMEOUT)
        if ready is None:
            server.proc.wait(5)
            if server.proc.returncode == NO_H3:
                row.error = "skipped: aiopquic.h3 is not there yet"
            else:
                row.error = f"server did not start: {server.stderr_tail()}"
            return row
        port = int(ready["port"])
        origin = f"https://localhost:{port}"
        for i in range(args.repeat):
            try:
                seconds, text = gtlsclient(binary, port, [origin + spec.small_path], n=args.requests, download=None,
                                           workdir=workdir, timeout=60 + args.requests / 100)
                answered = text.count("[:status: 200]")
                if answered != args.requests:
                    raise RuntimeError(f"requests: {answered} of {args.requests} answered 200 ({stall(text)})")
            except RuntimeError as exc:
                row.failures.append(str(exc))
                log(f"  {spec.name}: {exc}")
                continue
            row.rps.append(args.requests / seconds)
            log(f"  {spec.name}: {args.requests} requests in {seconds:.2f} s = {row.rps[-1]:,.0f}/s")
        size = args.download_mib << 20
        for i in range(args.repeat):
            target = workdir / f"download-{spec.name.replace('/', '-')}"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            try:
                seconds, text = gtlsclient(binary, port, [origin + spec.bytes_path.format(n=size)], n=None, download=target,
                                           workdir=workdir, timeout=60 + size / (1 << 20), quiet=True)
                got = (target / str(size)).stat().st_size if (target / str(size)).exists() else 0
                if got != size:
                    raise RuntimeError(f"download: {got} of {size} bytes ({stall(text)})")
            except RuntimeError as exc:
                row.failures.append(str(exc))
                log(f"  {spec.name}: {exc}")
                continue
            finally:
                shutil.rmtree(target, ignore_errors=True)
            row.mbps.append(size * 8 / seconds / 1e6)
            log(f"  {spec.name}: {args.download_mib} MiB in {seconds:.2f} s = {row.mbps[-1]:,.0f} Mbps")
        if not row.rps and not row.mbps:
            row.error = "every repeat failed"
        for client in spec.clients:
            row.clients[client.name] = run_client(client, spec.name, port, certs, workdir, args)
    except (RuntimeError, OSError) as exc:
        row.error = str(exc)
    finally:
        _, row.rss_kib, problem = server.stop(expect_json=True)
        if problem and not row.error:
            row.error = problem
    return row


def run_client(spec: ClientSpec, server: str, port: int, certs: Path, workdir: Path,
               args: argparse.Namespace) -> ClientRow:
    """One Python client's requests/s and download against the running server."""
    row = ClientRow(server)
    size = args.download_mib << 20
    budget = (60 + args.requests / 200 + size / (4 << 20)) * args.repeat
    proc = run_process([sys.executable, str(PEERS_DIR / "h3_client.py"), *spec.args, "--port", str(port),
                        "--cafile", str(certs / "ca.pem"), "--requests", str(args.requests),
                        "--concurrency", str(CLIENT_CONCURRENCY), "--download-bytes", str(size),
                        "--repeat", str(args.repeat)], timeout=budget, cwd=workdir)
    report = _last_json(proc.stdout) or {}
    row.rps, row.mbps = report.get("rps", []), report.get("mbps", [])
    row.error = report.get("error") or (None if report else f"no report: {proc.stderr.strip()[-300:]}")
    for v in row.rps:
        log(f"  {spec.name}: {v:,.0f} requests/s")
    for v in row.mbps:
        log(f"  {spec.name}: {args.download_mib} MiB at {v:,.0f} Mbps")
    if row.error:
        log(f"  {spec.name}: {row.error}")
    return row


def raw_bulk(backend: str, certs: Path, workdir: Path, args: argparse.Namespace) -> list[float]:
    """aiopquic's own raw QUIC bulk download (benchmarks/peers/aiopquic_peer.py)."""
    script = str(PEERS_DIR / "aiopquic_peer.py")
    base = ["--certs", str(certs), "--backend", backend]
    server = Server([sys.executable, script, "server", *base, "--port", "0"], workdir, f"raw-{backend}")
    try:
        ready = server.wait_json("listening", SERVER_START_TIMEOUT)
        if ready is None:
            log(f"  raw QUIC server ({backend}) did not start: {server.stderr_tail()}")
            return []
        size = args.download_mib << 20
        proc = run_process([sys.executable, script, "client", "bulk-down", *base, "--port", str(ready["port"]),
                            "--size", str(size), "--repeat", str(args.repeat), "--timeout", str(60 + size / (1 << 20))],
                           timeout=(60 + size / (1 << 20)) * args.repeat + 30, cwd=workdir)
        report = _last_json(proc.stdout) or {}
        if report.get("error"):
            log(f"  raw QUIC ({backend}): {report['error']}")
        values = [r["mbps"] for r in report.get("results", [])]
        for v in values:
            log(f"  aiopquic/{backend} raw QUIC: {args.download_mib} MiB at {v:,.0f} Mbps")
        return values
    finally:
        server.stop(expect_json=True)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if value >= 10 else f"{value:.2f}{unit}"


def print_table(rows: dict[str, Row], args: argparse.Namespace, rcvbuf_note: str) -> None:
    names = list(rows)
    best = {n: (max(r.rps, default=None), max(r.mbps, default=None), max(r.raw_mbps, default=None))
            for n, r in rows.items()}
    base = best.get(BASELINE)
    ratio_cols = [n for n in names if n != BASELINE and base is not None]
    header = ["workload", *names, *[f"{n} / {BASELINE}" for n in ratio_cols]]
    lines = []
    labels = [f"requests/s ({args.requests} GETs, 1 conn)", f"H3 download Mbps ({args.download_mib} MiB)",
              f"raw QUIC bulk Mbps ({args.download_mib} MiB)"]
    for i, label in enumerate(labels):
        values = [best[n][i] for n in names]
        if all(v is None for v in values):
            continue
        ratios = []
        for n in ratio_cols:
            v, b = best[n][i], base[i] if base else None
            ratios.append(f"{v / b:.2f}x" if v and b else "-")
        lines.append([label, *[fmt(v) for v in values], *ratios])
    h3_over_raw = []
    for n in names:
        _, mbps, raw = best[n]
        h3_over_raw.append(f"{mbps / raw:.0%}" if mbps and raw else "-")
    if any(v != "-" for v in h3_over_raw):
        lines.append(["H3 download (gtlsclient) / raw QUIC", *h3_over_raw, *["" for _ in ratio_cols]])
    lines.append(["server peak RSS MiB", *[fmt(rows[n].rss_kib / 1024 if rows[n].rss_kib else None) for n in names],
                  *["" for _ in ratio_cols]])
    widths = [max(len(str(line[c])) for line in [header, *lines]) for c in range(len(header))]
    print()
    print(f"HTTP/3, gtlsclient (ngtcp2) as the client, best of {args.repeat}, 127.0.0.1; {rcvbuf_note}")
    for line in [header, *lines]:
        print("  ".join(str(cell).rjust(w) if c else str(cell).ljust(w) for c, (cell, w) in enumerate(zip(line, widths))))
    for n, r in rows.items():
        if r.error:
            print(f"{n}: {r.error}")
        for failure in r.failures:
            print(f"{n}: failed repeat: {failure}")
    print_client_table(rows, args)


def print_client_table(rows: dict[str, Row], args: argparse.Namespace) -> None:
    """Python clients against aiopquic's server; "/ raw" compares with the raw QUIC
    bulk download of the same backend (both ends aiopquic: like for like)."""
    lines = []
    for server, row in rows.items():
        raw = max(row.raw_mbps, default=None)
        for name, c in row.clients.items():
            rps, mbps = max(c.rps, default=None), max(c.mbps, default=None)
            over_raw = f"{mbps / raw:.0%}" if mbps and raw and name.startswith("aiopquic own API") else ""
            lines.append([name, server, fmt(rps), fmt(mbps), over_raw])
    if not lines:
        return
    header = ["client", "server", "requests/s", "download Mbps", "download / raw QUIC"]
    widths = [max(len(line[c]) for line in [header, *lines]) for c in range(len(header))]
    print()
    print(f"HTTP/3, Python clients: {args.requests} GETs ({CLIENT_CONCURRENCY} in flight, 1 conn) and "
          f"{args.download_mib} MiB, best of {args.repeat}")
    for line in [header, *lines]:
        print("  ".join(cell.rjust(w) if c > 1 else cell.ljust(w) for c, (cell, w) in enumerate(zip(line, widths))))
    for row in rows.values():
        for name, c in row.clients.items():
            if c.error:
                print(f"{name}: {c.error}")


def main() -> int:
    parser = argparse.ArgumentParser(description="HTTP/3 benchmark (gtlsclient against hypercorn and aiopquic)")
    parser.add_argument("--requests", type=int, default=5000, help="GETs on one connection")
    parser.add_argument("--download-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1000 requests, 64 MiB, one repeat")
    parser.add_argument("--only", default="",
                        help="comma-separated servers: picoquicdemo,hypercorn,aiopquic/asyncio,aiopquic/trio")
    parser.add_argument("--json", help="write the raw figures here")
    parser.add_argument("--keep-rmem", action="store_true",
                        help="leave net.core.rmem_default alone (gtlsclient's socket buffer; see the module doc)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.download_mib, args.repeat = 1000, 64, 1
    binary = ensure_gtlsclient()
    wanted = [s for s in SERVERS if not args.only or s.name in args.only.split(",")]
    if any(s.name == "picoquicdemo" for s in wanted):
        demo, why = picoquicdemo(ROOT / "build")
        if demo is None:
            log(why)
            wanted = [s for s in wanted if s.name != "picoquicdemo"]
        else:
            wanted = [dataclasses.replace(s, args=[*s.args, "--binary", str(demo)]) if s.name == "picoquicdemo" else s
                      for s in wanted]
    if importlib.util.find_spec("aiopquic.h3") is None:
        log("aiopquic.h3 is missing: the aiopquic rows are skipped")
    rows: dict[str, Row] = {}
    with (tempfile.TemporaryDirectory(prefix="aiopquic-h3-bench-") as tmp,
          client_receive_buffer(CLIENT_RCVBUF, args.keep_rmem) as rcvbuf_note):
        workdir = Path(tmp)
        certs = workdir / "certs"
        from aiopquic.cli.certs import make_certificates

        make_certificates(certs)
        for spec in wanted:
            log(f"{spec.name} ...")
            start = time.perf_counter()
            row = rows[spec.name] = measure_server(spec, binary, certs, workdir, args)
            if spec.raw_backend and (not row.error or row.error.startswith("skipped")):
                row.raw_mbps = raw_bulk(spec.raw_backend, certs, workdir, args)
            log(f"  ({time.perf_counter() - start:.0f} s)")
    print_table(rows, args, rcvbuf_note)
    if args.json:
        Path(args.json).write_text(json.dumps({n: r.__dict__ for n, r in rows.items()}, indent=2))
    return 1 if any(r.error and not r.error.startswith("skipped") for r in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
