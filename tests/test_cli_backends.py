"""``--backend`` of ``python -m aiopquic``: asyncio, trio, or asyncio on uvloop's loop."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from aiopquic.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["asyncio", "trio", "uvloop"])
def test_the_demo_runs_on_every_backend(backend: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiopquic", "demo", "--backend", backend],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"aiopquic demo on {backend}\n")
    assert "got the same 1048576 bytes back" in result.stdout
    assert result.stdout.rstrip().endswith("server: stopped, port released")


def test_uvloop_not_installed_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--backend", "uvloop"])
    assert exit_info.value.code == 2
    assert "--backend uvloop needs uvloop: pip install uvloop" in capsys.readouterr().err
