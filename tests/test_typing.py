"""The public API is typed: mypy --strict passes on the package (config in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiopquic


def test_package_ships_py_typed() -> None:
    assert (Path(aiopquic.__file__).parent / "py.typed").is_file()


def test_mypy_strict_passes() -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
