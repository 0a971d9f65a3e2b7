"""The event loop a command runs on: asyncio, trio, or asyncio on uvloop's loop."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["BACKENDS", "missing", "run"]

T = TypeVar("T")

#: What ``--backend`` takes.  "uvloop" is asyncio on uvloop's event loop (anyio's
#: ``use_uvloop``), which is not a dependency of aiopquic: ``pip install uvloop``.
BACKENDS = ("asyncio", "trio", "uvloop")


def missing(backend: str) -> str | None:
    """What to install for ``backend``, or None if nothing is missing."""
    if backend == "uvloop" and importlib.util.find_spec("uvloop") is None:
        return "--backend uvloop needs uvloop: pip install uvloop"
    return None


def run(func: Callable[..., Awaitable[T]], *args: object, backend: str) -> T:
    """``anyio.run(func, *args)`` on ``backend`` (one of :data:`BACKENDS`)."""
    if backend == "uvloop":
        return anyio.run(func, *args, backend="asyncio", backend_options={"use_uvloop": True})
    return anyio.run(func, *args, backend=backend)
