"""A peer's asyncio loop in a thread of its own, for the tests' independent peers."""

from __future__ import annotations

import asyncio
import threading
from typing import TypeVar

T = TypeVar("T", bound="LoopThread")


class LoopThread:
    """Runs :meth:`_serve_until` in an asyncio loop on a daemon thread.

    :meth:`start` returns once ``_serve_until`` has called ``self._ready.set()``
    (or raises what made it fail); :meth:`stop` sets the event ``_serve_until``
    waits on and joins the thread. Usable as a context manager.
    """

    def __init__(self, name: str, timeout: float) -> None:
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self: T) -> T:
        name = self._thread.name
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise RuntimeError(f"{name} did not start")
        if self._failure is not None:
            raise RuntimeError(f"{name} failed to start") from self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(self._timeout)
        assert not self._thread.is_alive(), f"{self._thread.name} did not stop"
        if self._failure is not None:
            raise RuntimeError(f"{self._thread.name} failed") from self._failure

    def __enter__(self: T) -> T:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() and stop()
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self._serve_until(self._stop)

    async def _serve_until(self, stop: asyncio.Event) -> None:
        """Set up, call ``self._ready.set()``, serve until ``stop`` is set, clean up."""
        raise NotImplementedError
