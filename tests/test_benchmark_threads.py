"""benchmarks/threads.py, the per-thread scheduler figures of both benchmark peers,
runs end to end: a small bulk download, every thread of both peers reported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not Path("/proc/self/schedstat").exists(), reason="needs Linux's per-thread schedstat")
def test_threads_reports_every_thread_of_both_peers() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "threads.py"), "bulk-down", "--size", str(4 << 20), "--repeat", "1"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "client error" not in proc.stderr
    assert "'mbps': [" in proc.stdout
    rows = re.findall(r"^  (server|client) +(\S+) +ran +(\d+) ms +waited +(\d+) ms +(\d+) times on a CPU", proc.stdout, re.M)
    names = {(side, name) for side, name, *_ in rows}
    assert {("server", "aiopquic-net"), ("server", "python"), ("client", "aiopquic-net"), ("client", "python")} <= names
    # Both network threads moved the 4 MiB, so both were on a CPU.
    assert all(int(slices) > 0 for side, name, _, _, slices in rows if name == "aiopquic-net")
