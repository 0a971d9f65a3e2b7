"""aiopquic benchmarks: one command, six peers, the same machine, the same run.

    python benchmarks/run.py                 # full run, a few minutes
    python benchmarks/run.py --quick         # about a minute, smaller sizes
    python benchmarks/run.py --only rr       # one workload (or one peer: --only aioquic)
    python benchmarks/run.py --bulk-mib 512 --repeat 5 --json results.json

Peers (each one runs its own client *and* its own server, in two processes):
  aiopquic/asyncio, aiopquic/trio   benchmarks/peers/aiopquic_peer.py
  aiopquic/uvloop                   the same on asyncio with uvloop's loop; only
                                    when named (``--only rr,asyncio,uvloop``),
                                    compared with picoquicdemo only (the Python
                                    peers run asyncio's own loop)
  aioquic                           benchmarks/peers/aioquic_peer.py (asyncio)
  qh3                               benchmarks/peers/qh3_peer.py (asyncio; aioquic's
                                    fork with a Rust core, the same driver)
  qh3-streams                       benchmarks/peers/qh3_streams_peer.py (asyncio;
                                    qh3 through its stream API, a task per
                                    request on the server, as aiopquic's
                                    serve_streams runs one; request/response only)
  picoquicdemo                      picoquic's own tool, built by Meson from the
                                    same fetched sources as aiopquic
                                    (``ninja -C build picoquicdemo``)

All peers speak picoquic's "quicperf" protocol (ALPN "perf"): see
benchmarks/common.py.  Everything runs on 127.0.0.1; servers bind a free port;
every process is killed if it overruns its time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import calibrate  # noqa: E402
from benchmarks.common import HEADER_SIZE  # noqa: E402
from benchmarks.common import WORKLOADS as PEER_WORKLOADS  # noqa: E402

#: The table's workloads: the peers' own, plus "bulk-down-bbr", the bulk download
#: again with every peer on bbr whatever --cc says (issue 12: bbr is pacing-limited,
#: so it shows how well a peer's loop honours picoquic's pacing timers).
WORKLOADS = PEER_WORKLOADS[:2] + ("bulk-down-bbr",) + PEER_WORKLOADS[2:]


def aes_gcm_engine() -> str:
    """The AES-GCM implementation of this build (picoquicdemo's too, on this CPU):
    picotls' "fusion" or OpenSSL's (see tests/test_crypto_engine.py)."""
    try:
        from aiopquic._core import _core
    except ImportError:
        return "? (aiopquic not importable)"
    return _core.aes_gcm_engine()


def peer_workload(workload: str, settings: Settings) -> tuple[str, str]:
    """(the workload the peer runs, its congestion control)."""
    if workload.endswith("-bbr"):
        return workload[: -len("-bbr")], "bbr"
    return workload, settings.cc

PEERS_DIR = Path(__file__).resolve().parent / "peers"
PICOQUICDEMO_TARGET = "picoquicdemo"
PICOQUICDEMO_PATH = Path("subprojects") / "picoquic" / "picoquicdemo"
SERVER_START_TIMEOUT = 60.0  # the first import of aiopquic may rebuild it
SERVER_STOP_TIMEOUT = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- settings -------------------------------------------------------------------


@dataclass
class Settings:
    bulk_bytes: int
    rr_iterations: int
    rr_warmup: int
    handshake_seconds: float
    handshake_max: int
    streams: int
    stream_size: int
    repeat: int
    budget: float  # seconds per (peer, workload): no new repeat that would overrun it
    cc: str
    rtt_ms: float  # > 0: every client reaches its server through benchmarks/relay.py
    fixed_window: bool  # aiopquic without receive window autotuning
    no_inline_io: bool  # aiopquic with all I/O on the network thread (QuicConfig.inline_io=False)
    workloads: list[str]
    peers: list[str]
    rounds: int = 1  # > 1: every peer once per round, in turn; the table shows medians


# -- processes ----------------------------------------------------------------------


@dataclass
class ProcessResult:
    returncode: int | None  # None: killed after the time limit
    stdout: str
    stderr: str
    seconds: float
    maxrss_kib: int


def run_process(cmd: list[str], *, timeout: float, cwd: str | Path | None = None) -> ProcessResult:
    """Run ``cmd``; kill it (and report None) after ``timeout`` s.

    Also samples its peak RSS (VmHWM, which only grows) while it runs: the last
    sample before it exits.  (ru_maxrss of a child would include the RSS of this
    Python process at fork time, so it is useless for a small C client.)
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd)
        deadline = start + timeout
        delay = 0.0005
        rss = 0
        code: int | None
        while True:
            try:
                code = proc.wait(delay)
                break
            except subprocess.TimeoutExpired:
                pass
            rss = max(rss, vm_hwm_kib(proc.pid) or 0)
            if time.perf_counter() > deadline:
                proc.kill()
                proc.wait()
                code = None
                break
            delay = min(delay * 2, 0.02)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return ProcessResult(
            code, out.read().decode(errors="replace"), err.read().decode(errors="replace"), seconds, rss,
        )


def vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A server process whose stdout we read line by line (JSON lines)."""

    def __init__(self, cmd: list[str], cwd: Path, name: str) -> None:
        self.name = name
        self.errpath = cwd / f"server-{name.replace('/', '-')}.stderr"
        self._err = open(self.errpath, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, cwd=cwd)
        self._buffer = b""
        self.lines: list[str] = []

    def read_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode(errors="replace")
        self.lines.append(text)
        return text

    def wait_json(self, event: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                return None
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == event:
                return obj

    def state(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """An aiopquic peer server's ``state`` report (SIGUSR1), or None."""
        if self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGUSR1)
        return self.wait_json("state", timeout)

    def stderr_tail(self, n: int = 5) -> str:
        try:
            lines = self.errpath.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def stop(self, *, expect_json: bool) -> tuple[dict[str, Any] | None, int | None, str | None]:
        """SIGTERM, wait; returns (final JSON, peak RSS KiB, problem or None)."""
        rss = vm_hwm_kib(self.proc.pid)
        problem = None
        final = None
        if self.proc.poll() is not None:
            problem = f"{self.name} server exited early (code {self.proc.returncode}): {self.stderr_tail()}"
        else:
            self.proc.send_signal(signal.SIGTERM)
            if expect_json:
                final = self.wait_json("stopped", SERVER_STOP_TIMEOUT)
            try:
                self.proc.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                problem = f"{self.name} server did not stop within {SERVER_STOP_TIMEOUT:.0f} s of SIGTERM; killed"
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()
        if final and final.get("peak_rss_kib"):
            rss = final["peak_rss_kib"]
        return final, rss, problem


# -- peers --------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one peer did on one workload."""

    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    client_rss_kib: int | None = None
    server_rss_kib: int | None = None
    server: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def relayed(port: int, workdir: Path, settings: Settings) -> Iterator[int]:
    """The port a client connects to: ``port``, or with --rtt-ms a relay's in front of it."""
    if settings.rtt_ms <= 0:
        yield port
        return
    relay = Server(
        [sys.executable, str(Path(__file__).with_name("relay.py")), "--upstream-port", str(port),
         "--rtt-ms", str(settings.rtt_ms)],
        workdir, f"relay-{port}",
    )
    try:
        ready = relay.wait_json("listening", SERVER_START_TIMEOUT)
        if ready is None:
            raise RuntimeError(f"the relay did not start: {relay.stderr_tail()}")
        yield int(ready["port"])
    finally:
        relay.stop(expect_json=True)


class PythonPeer:
    def __init__(self, name: str, script: str, backend: str | None, workloads: tuple[str, ...] | None = None) -> None:
        self.name = name
        self.script = PEERS_DIR / script
        self.backend = backend
        self.workloads = workloads  # None: every workload

    def runs(self, workload: str) -> bool:
        """Whether this peer has ``workload``."""
        return self.workloads is None or workload in self.workloads

    def _base(self, mode: str, certs: Path, cc: str, settings: Settings, workload: str | None = None) -> list[str]:
        cmd = [sys.executable, str(self.script), mode] + ([workload] if workload else [])
        cmd += ["--certs", str(certs), "--cc", cc]
        if settings.fixed_window and self.name.startswith("aiopquic"):
            cmd.append("--fixed-window")
        if settings.no_inline_io and self.name.startswith("aiopquic"):
            cmd.append("--no-inline-io")
        if self.backend:
            cmd += ["--backend", self.backend]
        return cmd

    def client_timeout(self, workload: str, settings: Settings) -> float:
        """Limit for one repeat: generous, so only a hang reaches it."""
        if workload.startswith("bulk"):
            return 30.0 + settings.bulk_bytes / (4 << 20)  # >= 4 MiB/s
        if workload == "streams":
            return 120.0
        if workload == "handshake":
            return 3 * settings.handshake_seconds + 30.0  # aiopquic: full, resumed, shared client
        return 60.0

    def run(self, workload: str, certs: Path, workdir: Path, settings: Settings) -> Outcome:
        outcome = Outcome()
        workload, cc = peer_workload(workload, settings)
        server = Server(self._base("server", certs, cc, settings) + ["--port", "0"], workdir, self.name)
        stack = contextlib.ExitStack()
        try:
            ready = server.wait_json("listening", SERVER_START_TIMEOUT)
            if ready is None:
                outcome.error = f"server did not start: {server.stderr_tail()}"
                return outcome
            per_repeat = self.client_timeout(workload, settings)
            port = stack.enter_context(relayed(int(ready["port"]), workdir, settings))
            cmd = self._base("client", certs, cc, settings, workload) + [
                "--port", str(port),
                "--repeat", str(settings.repeat), "--budget", str(settings.budget),
                "--timeout", str(per_repeat),
                "--size", str(settings.bulk_bytes),
                "--iterations", str(settings.rr_iterations), "--warmup", str(settings.rr_warmup),
                "--duration", str(settings.handshake_seconds), "--max-connections", str(settings.handshake_max),
                "--streams", str(settings.streams), "--stream-size", str(settings.stream_size),
            ]
            limit = settings.budget + per_repeat + 30.0
            proc = run_process(cmd, timeout=limit, cwd=workdir)
            outcome.seconds = proc.seconds
            outcome.client_rss_kib = proc.maxrss_kib
            report = _last_json(proc.stdout)
            if proc.returncode is None:
                outcome.error = f"client killed after {limit:.0f} s"
            elif report is None:
                tail = " | ".join(proc.stderr.strip().splitlines()[-5:])
                outcome.error = f"client exited with code {proc.returncode} and no report: {tail}"
            if report is not None:
                outcome.results = report.get("results", [])
                outcome.error = outcome.error or report.get("error")
                outcome.client_rss_kib = report.get("peak_rss_kib") or outcome.client_rss_kib
        except RuntimeError as exc:
            outcome.error = str(exc)
        finally:
            stack.close()
            if outcome.error and self.name.startswith("aiopquic"):
                state = server.state()  # before the stop: where the server stands
                if state is not None:
                    outcome.notes.append(f"the server's state after the failure: {json.dumps(state)}")
            final, rss, problem = server.stop(expect_json=True)
            outcome.server = final
            outcome.server_rss_kib = rss
            if problem:
                outcome.notes.append(problem)
            if final and final.get("bad_streams"):
                outcome.error = outcome.error or f"server found wrong bytes on {final['bad_streams']} stream(s)"
            if final and outcome.error and "streams" in final:
                # Which side stopped: did the server see the stream, did it answer?
                outcome.notes.append(
                    f"the server's count at its stop: {final.get('connections')} connections, "
                    f"{final.get('streams')} streams answered, {final.get('broken_streams')} broken"
                )
            tail = server.stderr_tail(20) if outcome.error and not problem else ""
            if tail:
                outcome.notes.append(f"the server's stderr ended with: {tail}")
        return outcome


class PicoquicDemoPeer:
    """picoquicdemo as server (-p) and client (-a perf), one client process per measurement."""

    name = "picoquicdemo"

    def runs(self, workload: str) -> bool:
        """Every workload."""
        return True

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def _client(self, scenario: str, certs: Path, port: int, cc: str, timeout: float = 120.0) -> dict[str, float]:
        # A fresh directory each time: the client stores tickets/tokens in its cwd
        # and would otherwise resume with 0-RTT.
        with tempfile.TemporaryDirectory(prefix="pqd-client-") as cwd:
            cmd = [
                str(self.binary), "-a", "perf", "-D", "-G", cc,
                "-t", str(certs / "ca.pem"), "-n", "localhost", "127.0.0.1", str(port), scenario,
            ]
            proc = run_process(cmd, timeout=timeout, cwd=cwd)
        if proc.returncode is None:
            raise RuntimeError(f"picoquicdemo client killed after {timeout:.0f} s")
        values: dict[str, float] = {"_maxrss_kib": proc.maxrss_kib, "_wall_seconds": proc.seconds}
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep and key in (
                "Connection_duration_sec", "Nb_transactions", "Upload_bytes", "Download_bytes",
                "TPS", "Upload_Mbps", "Download_Mbps",
            ):
                try:
                    values[key] = float(value)
                except ValueError:
                    pass
        if proc.returncode != 0 or "Connection_duration_sec" not in values:
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise RuntimeError(f"picoquicdemo client failed (code {proc.returncode}): {tail}")
        return values

    def run(self, workload: str, certs: Path, workdir: Path, settings: Settings) -> Outcome:
        outcome = Outcome()
        workload, cc = peer_workload(workload, settings)
        port = free_udp_port()
        server = Server(
            [str(self.binary), "-p", str(port), "-c", str(certs / "cert.pem"), "-k", str(certs / "key.pem"),
             "-G", cc],
            workdir, self.name,
        )
        start = time.perf_counter()
        client_rss = 0
        server_port = port
        stack = contextlib.ExitStack()
        try:
            port = stack.enter_context(relayed(server_port, workdir, settings))
            # Ready when a tiny exchange succeeds (it also warms the server up).
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    self._client("*1:8:8;", certs, port, cc, timeout=5.0)
                    break
                except RuntimeError as exc:
                    if time.monotonic() > deadline or server.proc.poll() is not None:
                        outcome.error = f"server not answering: {exc} {server.stderr_tail()}"
                        return outcome
                    time.sleep(0.1)
            budget_start = time.perf_counter()
            last = 0.0
            for i in range(settings.repeat):
                now = time.perf_counter()
                if i and settings.budget > 0 and (now - budget_start) + last > settings.budget:
                    break
                try:
                    result, rss = self._measure(workload, certs, port, settings, cc)
                except RuntimeError as exc:
                    outcome.error = f"repeat {i + 1}: {exc}"
                    break
                client_rss = max(client_rss, rss)
                outcome.results.append(result)
                last = time.perf_counter() - now
        except RuntimeError as exc:
            outcome.error = str(exc)
        finally:
            stack.close()
            _, server_rss, problem = server.stop(expect_json=False)
            outcome.server_rss_kib = server_rss
            outcome.client_rss_kib = client_rss or None
            outcome.seconds = time.perf_counter() - start
            if problem:
                outcome.notes.append(problem)
        return outcome

    def _measure(self, workload: str, certs: Path, port: int, s: Settings, cc: str) -> tuple[dict[str, Any], int]:
        run = lambda scenario: self._client(scenario, certs, port, cc)  # noqa: E731
        if workload == "bulk-down":
            v = run(f"*1:{HEADER_SIZE}:{s.bulk_bytes};")
            if v.get("Download_bytes") != s.bulk_bytes:
                raise RuntimeError(f"downloaded {v.get('Download_bytes')} of {s.bulk_bytes} bytes")
            return {"mbps": v["Download_Mbps"], "seconds": v["Connection_duration_sec"]}, int(v["_maxrss_kib"])
        if workload == "bulk-up":
            v = run(f"*1:{HEADER_SIZE + s.bulk_bytes}:{HEADER_SIZE};")
            if v.get("Upload_bytes") != s.bulk_bytes + HEADER_SIZE:
                raise RuntimeError(f"uploaded {v.get('Upload_bytes')} of {s.bulk_bytes + HEADER_SIZE} bytes")
            return {"mbps": v["Upload_Mbps"], "seconds": v["Connection_duration_sec"]}, int(v["_maxrss_kib"])
        if workload == "rr":
            # A chain of sequential requests (each waits for the previous stream's end);
            # minus a chain of one, to remove the handshake and the close.
            n = s.rr_iterations
            one = run(_rr_chain(1))
            many = run(_rr_chain(n + 1))
            if many.get("Nb_transactions") != n + 1:
                raise RuntimeError(f"{many.get('Nb_transactions')} of {n + 1} transactions")
            mean = (many["Connection_duration_sec"] - one["Connection_duration_sec"]) / n * 1e6
            return {"mean_us": mean, "n": n}, int(max(one["_maxrss_kib"], many["_maxrss_kib"]))
        if workload == "handshake":
            durations: list[float] = []
            walls: list[float] = []
            rss = 0
            start = time.perf_counter()
            while len(durations) < s.handshake_max and time.perf_counter() - start < s.handshake_seconds:
                v = run(f"*1:{HEADER_SIZE}:{HEADER_SIZE};")
                durations.append(v["Connection_duration_sec"])
                walls.append(v["_wall_seconds"])
                rss = max(rss, int(v["_maxrss_kib"]))
            durations.sort()
            return {
                "per_second": len(durations) / sum(durations),
                "connections": len(durations),
                "p50_ms": durations[len(durations) // 2] * 1e3,
                "process_per_second": len(walls) / sum(walls),
            }, rss
        if workload == "streams":
            base = run(f"*1:{HEADER_SIZE}:{HEADER_SIZE};")
            v = run(f"*{s.streams}:{HEADER_SIZE + s.stream_size}:{HEADER_SIZE};")
            if v.get("Nb_transactions") != s.streams:
                raise RuntimeError(f"{v.get('Nb_transactions')} of {s.streams} streams completed")
            seconds = v["Connection_duration_sec"] - base["Connection_duration_sec"]
            return {"seconds": seconds, "streams": s.streams}, int(v["_maxrss_kib"])
        raise ValueError(workload)


def merge(outcomes: dict[tuple[str, str], Outcome], key: tuple[str, str], outcome: Outcome) -> None:
    """Add one round's outcome to what earlier rounds of --rounds gathered."""
    prior = outcomes.get(key)
    if prior is None:
        outcomes[key] = outcome
        return
    prior.results.extend(outcome.results)
    prior.error = prior.error or outcome.error
    prior.notes.extend(outcome.notes)
    prior.seconds += outcome.seconds
    prior.client_rss_kib = max(prior.client_rss_kib or 0, outcome.client_rss_kib or 0) or None
    prior.server_rss_kib = max(prior.server_rss_kib or 0, outcome.server_rss_kib or 0) or None


def _rr_chain(n: int) -> str:
    parts = ["=r0:1024:1024;"] + [f"=r{i}:=r{i - 1}:1024:1024;" for i in range(1, n)]
    return "".join(parts)


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def find_ninja() -> str | None:
    for candidate in (shutil.which("ninja"), str(Path(sys.executable).parent / "ninja")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def picoquicdemo(build_dir: Path) -> tuple[Path | None, str]:
    """The picoquicdemo binary (built with ninja if needed), or None and why not."""
    binary = build_dir / PICOQUICDEMO_PATH
    if not (build_dir / "build.ninja").is_file():
        return None, (
            f"picoquicdemo skipped: no Meson build directory at {build_dir}. Build aiopquic first "
            "(bash tools/run.sh test, or pip install -e . --no-build-isolation -Cbuild-dir=build), "
            f"then: ninja -C {build_dir} {PICOQUICDEMO_TARGET}"
        )
    ninja = find_ninja()
    if ninja is None:
        if binary.is_file():
            return binary, "ninja not found; using the existing picoquicdemo as it is"
        return None, f"picoquicdemo skipped: ninja not found (pip install ninja), then: ninja -C {build_dir} {PICOQUICDEMO_TARGET}"
    log(f"building picoquicdemo: {ninja} -C {build_dir} {PICOQUICDEMO_TARGET}")
    proc = subprocess.run([ninja, "-C", str(build_dir), PICOQUICDEMO_TARGET], capture_output=True, text=True)
    if proc.returncode != 0 or not binary.is_file():
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        return None, f"picoquicdemo skipped: `ninja -C {build_dir} {PICOQUICDEMO_TARGET}` failed: {tail}"
    return binary, ""


# -- the table ------------------------------------------------------------------------


@dataclass
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    workload: str
    extract: Callable[[dict[str, Any]], float | None]
    target: str = ""  # aiopquic's goal, for information only (never asserted)


def metrics(s: Settings) -> list[Metric]:
    mib = s.bulk_bytes / (1 << 20)
    mib_text = f"{mib:g}"
    return [
        Metric("bulk-down", f"bulk download {mib_text} MiB", "Mbps", True, "bulk-down", lambda r: r.get("mbps"), ">= 0.6x pqd"),
        Metric("bulk-up", f"bulk upload {mib_text} MiB", "Mbps", True, "bulk-up", lambda r: r.get("mbps"), ">= 0.6x pqd"),
        Metric(
            "bulk-down-bbr", f"bulk download {mib_text} MiB, bbr", "Mbps", True, "bulk-down-bbr",
            lambda r: r.get("mbps"), ">= 0.8x pqd",
        ),
        Metric("rr-p50", "1 KiB req/resp p50", "us", False, "rr", lambda r: r.get("p50_us", r.get("mean_us")), "<= 250"),
        Metric("rr-p99", "1 KiB req/resp p99", "us", False, "rr", lambda r: r.get("p99_us")),
        Metric("handshake", "handshakes (sequential)", "/s", True, "handshake", lambda r: r.get("per_second"), ">= 500"),
        Metric(
            "handshake-resumed", "  the same, TLS resumed", "/s", True, "handshake",
            lambda r: r.get("per_second_resumed"),
        ),
        Metric(
            "handshake-shared", "  full, one QuicClient", "/s", True, "handshake",
            lambda r: r.get("per_second_shared"),
        ),
        Metric(
            "streams", f"{s.streams} streams x {s.stream_size // 1024} KiB", "ms", False, "streams",
            lambda r: r["seconds"] * 1e3 if "seconds" in r else None,
            "<= 500" if s.streams == 1000 and s.stream_size == 16 * 1024 else "",
        ),
        Metric(
            "streams-tasks", "  the same, a task each", "ms", False, "streams",
            lambda r: r["seconds_tasks"] * 1e3 if "seconds_tasks" in r else None,
        ),
    ]


def best(outcome: Outcome | None, metric: Metric, median: bool = False) -> float | None:
    """The best of the results, or with ``median`` (--rounds) their median."""
    if outcome is None:
        return None
    values = [v for v in (metric.extract(r) for r in outcome.results) if v is not None and math.isfinite(v)]
    if not values:
        return None
    if median:
        return statistics.median(values)
    return max(values) if metric.higher_is_better else min(values)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(s: Settings, outcomes: dict[tuple[str, str], Outcome], peer_names: list[str], skipped: dict[str, str]) -> None:
    ours = [p for p in ("aiopquic/asyncio", "aiopquic/trio", "aiopquic/uvloop") if p in peer_names]
    refs = [p for p in ("picoquicdemo", "aioquic", "qh3", "qh3-streams") if p in peer_names]
    short = {"aiopquic/asyncio": "asyncio", "aiopquic/trio": "trio", "aiopquic/uvloop": "uvloop",
             "picoquicdemo": "pqd", "aioquic": "aioquic", "qh3": "qh3", "qh3-streams": "qh3-streams"}
    # uvloop against the Python peers' default asyncio loop would not be like for like.
    pairs = [(o, r) for r in refs for o in ours if o != "aiopquic/uvloop" or r == "picoquicdemo"]
    headers = ["workload", "unit", "target"] + peer_names + [f"{short[o]}/{short[r]}" for o, r in pairs]
    rows: list[list[str]] = []
    for m in metrics(s):
        if m.workload not in s.workloads:
            continue
        cells = [m.label, m.unit + (" ↑" if m.higher_is_better else " ↓"), m.target]
        values: dict[str, float | None] = {}
        for p in peer_names:
            o = outcomes.get((p, m.workload))
            v = best(o, m, median=s.rounds > 1)
            values[p] = v
            if p in skipped:
                cell = "skipped"
            elif v is None:
                if o is not None and o.error:
                    cell = "ERROR"
                elif p == "picoquicdemo" and m.key == "rr-p99":
                    cell = "n/a"
                else:
                    cell = "-"
            else:
                cell = fmt(v)
                if p == "picoquicdemo" and m.key == "rr-p50":
                    cell += " (mean)"
                if p == "picoquicdemo" and m.key == "handshake":
                    cell += " †"
                if p in ("aioquic", "qh3") and m.key == "handshake":
                    cell += " ‡"
            cells.append(cell)
        for mine, r in pairs:
            a, b = values.get(mine), values.get(r)
            cells.append(f"{a / b:.2f}x" if a and b else "-")
        rows.append(cells)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(cells)
    )
    print(line(headers))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def _print_rows(headers: list[str], rows: list[list[str]]) -> None:
    """A small table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for cells in [headers, ["-" * w for w in widths]] + rows:
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)))


def _round_medians(outcome: Outcome | None, metric: Metric) -> dict[int, float]:
    """The median of ``metric`` in each round of --rounds that measured it."""
    by_round: dict[int, list[float]] = {}
    for r in outcome.results if outcome is not None else []:
        v = metric.extract(r)
        if v is not None and math.isfinite(v) and "round" in r:
            by_round.setdefault(r["round"], []).append(v)
    return {k: statistics.median(vs) for k, vs in by_round.items()}


def print_round_ratios(s: Settings, outcomes: dict[tuple[str, str], Outcome], peer_names: list[str]) -> None:
    """With --rounds: each round's ratio of medians (ours / theirs, measured minutes
    apart at most), their median and range.  The table's ratios compare medians of
    all rounds; these show how far one round can swing, which is what a ratio
    near a target must be read against."""
    ours = [p for p in ("aiopquic/asyncio", "aiopquic/trio") if p in peer_names]
    wanted = {"bulk-down": "picoquicdemo", "bulk-up": "picoquicdemo", "rr-p50": "qh3", "streams": "picoquicdemo"}
    rows = []
    for m in metrics(s):
        ref = wanted.get(m.key)
        if ref is None or ref not in peer_names or m.workload not in s.workloads:
            continue
        theirs = _round_medians(outcomes.get((ref, m.workload)), m)
        row = [f"{m.label} vs {ref}"]
        for mine in ours:
            mine_rounds = _round_medians(outcomes.get((mine, m.workload)), m)
            ratios = sorted(mine_rounds[k] / theirs[k] for k in mine_rounds if theirs.get(k))
            if not ratios:
                row.append("-")
                continue
            row.append(f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})")
        rows.append(row)
    if not rows:
        return
    print()
    print("the same ratios paired by round: the median of the rounds' ratios (lowest-highest)")
    headers = ["workload"] + ours
    _print_rows(headers, rows)


def print_pooled(paths: list[Path]) -> int:
    """--pool: the tables of several runs together, from their --json files.

    One run's medians swing with the machine (picoquicdemo's bulk rate moves by
    half from one round to the next here); the rounds of several runs, pooled,
    say more about a ratio near its target than any one of them."""
    outcomes: dict[tuple[str, str], Outcome] = {}
    skipped: dict[str, str] = {}
    pooled: Settings | None = None
    rounds = 0
    for path in paths:
        data = json.loads(path.read_text())
        s = Settings(**data["settings"])
        same = ("bulk_bytes", "streams", "stream_size", "cc", "rtt_ms", "fixed_window", "no_inline_io", "workloads", "peers")
        if pooled is not None and any(getattr(s, k) != getattr(pooled, k) for k in same):
            raise SystemExit(f"--pool: {path} was run with other settings than {paths[0]} (compare their --only and sizes)")
        pooled = pooled or s
        for entry in data["outcomes"]:
            key = (entry.pop("peer"), entry.pop("workload"))
            outcome = Outcome(**entry)
            for result in outcome.results:
                result["round"] = rounds + result.get("round", 0)
            merge(outcomes, key, outcome)
        rounds += s.rounds
        skipped.update(data.get("skipped", {}))
    assert pooled is not None
    pooled.rounds = rounds
    print(f"{len(paths)} runs pooled ({', '.join(p.name for p in paths)}): medians of {rounds} rounds in all")
    print()
    print_table(pooled, outcomes, pooled.peers, skipped)
    print_round_ratios(pooled, outcomes, pooled.peers)
    print_rss(pooled, outcomes, [p for p in pooled.peers if p not in skipped])
    return 0


def print_rss(s: Settings, outcomes: dict[tuple[str, str], Outcome], peer_names: list[str]) -> None:
    print()
    print("peak RSS in MiB, client / server (VmHWM)")
    headers = ["workload"] + peer_names
    rows = []
    for w in s.workloads:
        row = [w]
        for p in peer_names:
            o = outcomes.get((p, w))
            if o is None:
                row.append("-")
                continue
            c = f"{o.client_rss_kib / 1024:.0f}" if o.client_rss_kib else "-"
            sv = f"{o.server_rss_kib / 1024:.0f}" if o.server_rss_kib else "-"
            row.append(f"{c} / {sv}")
        rows.append(row)
    _print_rows(headers, rows)


NOTES = """\
How each figure is measured (best of the repeats; ratios are ours / theirs of the figure itself,
so read them with the arrow: ↑ higher is better, ↓ lower is better):
- bulk: one stream, payload = pattern bytes checked byte for byte by the receiver (server for
  upload, client for download; picoquicdemo does not check). Python peers: client wall time from
  opening the stream to the FIN of the response (upload: the server answers after the last byte
  is checked), handshake excluded. picoquicdemo: its own Upload/Download_Mbps (its connection
  duration, handshake included). "bbr": the same download with every peer on bbr, whatever --cc
  says (aioquic and qh3 have none). With --rtt-ms, clients reach servers through
  benchmarks/relay.py (a Python relay in its own process, which caps every peer at its own speed).
- req/resp: a fresh bidirectional stream per request, 1 KiB each way, sequential, after warm-up.
  picoquicdemo has no per-request timings: (mean) = (time of a chain of N+1 dependent requests
  - a chain of 1) / N. On a VM it swings between ~10 and ~80 us from run to run, depending on
  whether the scheduler puts its client and server on the same CPU (a cross-CPU wake-up costs
  ~20 us on one VM seen, ~50 us on another: see "this machine" above). aioquic and qh3 answer
  inside the callback that delivers the request (their protocol level: no task per request);
  qh3-streams is qh3 through its stream API (asyncio StreamReader/StreamWriter, a task per
  request on the server), the way aiopquic's handlers run (serve_streams: a task per stream).
- this machine (calibrate.py): the bare cost of the hand-offs every latency figure is made of.
  A 1 KiB request/response makes two process wake-ups for aioquic, qh3 and picoquicdemo (the UDP
  round trip is their floor in Python) and, for aiopquic, four more network-thread <-> Python
  hops (each half a thread round trip). "Through anyio": the same UDP round trip on anyio's
  UDP sockets, a task per request on the echo side, no QUIC: the floor of an anyio-native
  library's request/response.
- handshakes: sequential new connections, each with handshake, one 8-byte request/response and
  close. aiopquic: `async with open_quic_connection()` (a new endpoint, socket and network thread
  each), full handshakes (resume_sessions=False: the server's certificate is sent and its
  handshake signature checked each time; its chain is validated on the first connection and
  then remembered by the config); "TLS resumed": the same with the default
  config, whose later connections resume the TLS session (no certificate sent or verified;
  the other peers are not measured that way); "one QuicClient": full handshakes again, every
  connection through one `QuicClient` (one socket and network thread for all of them, so no
  endpoint or thread start-up per connection). † picoquicdemo: one process per connection; the figure is 1 / its in-process
  Connection_duration (start to close), process start-up excluded. ‡ aioquic, qh3: `async with
  connect()`, whose exit waits out the closing period (3 PTO, ~100 ms on loopback).
- streams: one connection (handshake excluded), all streams opened at once, each sends 16 KiB
  (+ 8-byte header) and FIN, the server checks it and answers 8 bytes; time until every answer is
  in. Every peer sends all its requests from one task (aioquic, qh3: one protocol object;
  aiopquic: `open_stream()` and `send(payload, eof=True)` for each, then reads the answers in
  order). "a task each": aiopquic only, on a new connection of the same repeat, each exchange
  in a task of its own in an anyio task group (what anyio's `start_soon` costs per task is in
  that row). picoquicdemo: its connection duration minus that of a one-exchange connection.
- target: aiopquic's goals, for information (never asserted).
- aiopquic, aioquic and qh3: max_data 16 MiB, max_stream_data 1 MiB, max_streams_bidi 1000, 1 MiB
  send buffer. Every peer uses the same congestion control (--cc), except qh3, which has no
  setting for it and keeps its own."""


# -- main ----------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description="aiopquic vs aioquic, qh3 and picoquicdemo, same machine, same run")
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run with smaller sizes")
    parser.add_argument("--only", default=None, help="comma-separated workloads and/or peers: " + ", ".join(WORKLOADS)
                        + ", asyncio, trio, uvloop (asyncio on uvloop: only when named), aioquic, qh3, qh3-streams, picoquicdemo")
    parser.add_argument("--bulk-mib", type=int, default=None, help="bulk payload in MiB (default 256, quick 32)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats per measurement, best-of (default 5, quick 1)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every (workload, peer) this many times in turn, so that peers alternate "
                        "through the machine's noise, and show the median of the rounds (default 1: best of --repeat)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per peer and workload after which no repeat starts (default 20, quick 8)")
    parser.add_argument("--cc", default="cubic", help="congestion control for every peer (default cubic, "
                        "QuicConfig's default; aioquic calls newreno reno)")
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="add this round-trip time: clients reach servers through benchmarks/relay.py "
                        "(a Python relay: use the bulk workloads)")
    parser.add_argument("--fixed-window", action="store_true",
                        help="aiopquic peers without receive window autotuning (the window stays max_stream_data)")
    parser.add_argument("--no-inline-io", action="store_true",
                        help="aiopquic peers with all I/O on the network thread (QuicConfig.inline_io=False)")
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build", help="Meson build directory")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw result here")
    parser.add_argument("--pool", type=Path, nargs="+", default=None, metavar="JSON",
                        help="measure nothing: print the tables of these --json files of earlier runs "
                        "(same --only and sizes) together, every round of each counted")
    args = parser.parse_args()
    if args.pool:
        return print_pooled(args.pool)

    all_peers = ["aiopquic/asyncio", "aiopquic/trio", "aiopquic/uvloop", "aioquic", "qh3", "qh3-streams", "picoquicdemo"]
    workloads = list(WORKLOADS)
    peer_names = [p for p in all_peers if p != "aiopquic/uvloop"]  # uvloop: when named in --only
    if args.only:
        aliases = {"asyncio": "aiopquic/asyncio", "trio": "aiopquic/trio", "uvloop": "aiopquic/uvloop",
                   "pqd": "picoquicdemo", "bulk": "bulk-*"}
        wanted_w, wanted_p = [], []
        for name in (n.strip() for n in args.only.split(",") if n.strip()):
            name = aliases.get(name, name)
            if name == "bulk-*":
                wanted_w += ["bulk-down", "bulk-up", "bulk-down-bbr"]
            elif name in WORKLOADS:
                wanted_w.append(name)
            elif name in all_peers:
                wanted_p.append(name)
            elif name == "aiopquic":
                wanted_p += ["aiopquic/asyncio", "aiopquic/trio"]
            else:
                parser.error(f"--only: unknown name {name!r}")
        workloads = [w for w in WORKLOADS if w in wanted_w] or workloads
        peer_names = [p for p in all_peers if p in wanted_p] or peer_names

    quick = args.quick
    s = Settings(
        bulk_bytes=(args.bulk_mib if args.bulk_mib is not None else (32 if quick else 256)) << 20,
        rr_iterations=300 if quick else 2000,
        rr_warmup=50 if quick else 200,
        handshake_seconds=1.0 if quick else 1.5,
        handshake_max=2000,
        streams=200 if quick else 1000,
        stream_size=16 * 1024,
        repeat=args.repeat if args.repeat is not None else (1 if quick else 5),
        budget=args.budget if args.budget is not None else (8.0 if quick else 20.0),
        cc=args.cc,
        rtt_ms=args.rtt_ms,
        fixed_window=args.fixed_window,
        no_inline_io=args.no_inline_io,
        workloads=workloads,
        peers=peer_names,
        rounds=max(1, args.rounds),
    )

    skipped: dict[str, str] = {}
    peers: dict[str, Any] = {
        "aiopquic/asyncio": PythonPeer("aiopquic/asyncio", "aiopquic_peer.py", "asyncio"),
        "aiopquic/trio": PythonPeer("aiopquic/trio", "aiopquic_peer.py", "trio"),
        "aiopquic/uvloop": PythonPeer("aiopquic/uvloop", "aiopquic_peer.py", "uvloop"),
        "aioquic": PythonPeer("aioquic", "aioquic_peer.py", None),
        "qh3": PythonPeer("qh3", "qh3_peer.py", None),
        "qh3-streams": PythonPeer("qh3-streams", "qh3_streams_peer.py", None, workloads=("rr",)),
    }
    for name in ("qh3", "qh3-streams"):
        if name in peer_names and importlib.util.find_spec("qh3") is None:
            skipped[name] = "not installed (pip install qh3; `bash tools/run.sh bench` installs it)"
    if "aiopquic/uvloop" in peer_names and importlib.util.find_spec("uvloop") is None:
        skipped["aiopquic/uvloop"] = "not installed (pip install uvloop; `bash tools/run.sh` installs it)"
    if "picoquicdemo" in peer_names:
        binary, message = picoquicdemo(args.build_dir.resolve())
        if message:
            log(message)
        if binary is None:
            skipped["picoquicdemo"] = message
        else:
            peers["picoquicdemo"] = PicoquicDemoPeer(binary)

    started = time.perf_counter()
    log("  calibrating: UDP, thread and anyio UDP round trips ...")
    machine = calibrate.measure()
    outcomes: dict[tuple[str, str], Outcome] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aiopquic-bench-") as tmp:
        workdir = Path(tmp)
        from aiopquic.cli.certs import make_certificates

        certs = make_certificates(workdir / "certs")
        certdir = certs.cafile.parent
        for round_no in range(s.rounds):
            prefix = f"[{round_no + 1}/{s.rounds}] " if s.rounds > 1 else ""
            for w in workloads:
                for p in peer_names:
                    if p in skipped or (p in ("aioquic", "qh3") and w.endswith("-bbr")):
                        continue  # aioquic and qh3 have no bbr
                    if not peers[p].runs(w):
                        continue
                    log(f"  {prefix}{w:<10} {p:<17} ...")
                    outcome = peers[p].run(w, certdir, workdir, s)
                    for result in outcome.results:
                        result["round"] = round_no  # for the ratios paired by round
                    merge(outcomes, (p, w), outcome)
                    status = f"{len(outcome.results)} run(s), {outcome.seconds:.1f} s"
                    figures = [r.get("mbps") for r in outcome.results if r.get("mbps") is not None]
                    if figures:
                        status += ", " + " ".join(f"{f:.0f}" for f in figures) + " Mbps"
                    if outcome.error:
                        status += f", ERROR: {outcome.error}"
                        problems.append(f"{p} {w}: {outcome.error}")
                    for note in outcome.notes:
                        problems.append(f"{p} {w}: {note}")
                    log(f"  {prefix}{w:<10} {p:<17} {status}")
    elapsed = time.perf_counter() - started

    print()
    print(
        f"aiopquic benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, "
        + (f"median of {s.rounds} alternating rounds of {s.repeat} run(s), " if s.rounds > 1 else f"best of {s.repeat} ")
        + f"(time budget {s.budget:g} s per cell), "
        f"cc {s.cc}{', --quick' if quick else ''}{f', RTT +{s.rtt_ms:g} ms (relay)' if s.rtt_ms > 0 else ''}"
        f"{', aiopquic --fixed-window' if s.fixed_window else ''}"
        f"{', aiopquic --no-inline-io' if s.no_inline_io else ''}"
        f", AES-GCM by {aes_gcm_engine()} (aiopquic and picoquicdemo)"
    )
    print(calibrate.describe(machine))
    print()
    print_table(s, outcomes, peer_names, skipped)
    if s.rounds > 1:
        print_round_ratios(s, outcomes, peer_names)
    print_rss(s, outcomes, [p for p in peer_names if p not in skipped])
    print()
    print(NOTES)
    for name, why in skipped.items():
        print(f"- {name}: {why}")
    if problems:
        print()
        print("problems:")
        for problem in problems:
            print(f"- {problem}")
    print()
    print(f"total {elapsed:.0f} s")
    if args.json:
        data = {
            "settings": s.__dict__,
            "seconds": elapsed,
            "machine": machine,
            "outcomes": [
                {"peer": p, "workload": w, **o.__dict__} for (p, w), o in outcomes.items()
            ],
            "skipped": skipped,
        }
        args.json.write_text(json.dumps(data, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
