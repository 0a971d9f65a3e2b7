"""A parking spot: one task waits in it until another wakes it.

Streams and connections wait for the dispatcher this way thousands of times a
second.  An ``anyio.Event`` per wait costs a backend lookup, an event object of
anyio's and one of the backend's; a spot is the cheapest wait each backend has
(an asyncio future, trio's ``wait_task_rescheduled``), made once and reused.
Cancellation is the backend's own, as with an event: a cancelled wait raises
where it waited and a later ``wake()`` is a no-op.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Protocol

__all__ = ["Spot", "spot_factory"]


class Spot(Protocol):
    """Where one task waits (``await spot.wait()``) until ``spot.wake()``."""

    @property
    def occupied(self) -> bool:
        """True while a task waits here."""

    async def wait(self) -> None:
        """Wait until woken (or cancelled)."""

    def wake(self) -> None:
        """Wake the waiting task, if any."""


class AsyncioSpot:
    """A spot on asyncio: the waiter awaits a future."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    @property
    def occupied(self) -> bool:
        return self._future is not None

    async def wait(self) -> None:
        self._future = future = asyncio.get_running_loop().create_future()
        try:
            await future
        finally:
            self._future = None

    def wake(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)


@functools.cache
def _trio_spot() -> type[Spot]:
    """The spot class for trio (made on first use: trio is imported only then)."""
    from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

    class TrioSpot:
        """A spot on trio: the waiter parks with ``wait_task_rescheduled``."""

        __slots__ = ("_task",)

        def __init__(self) -> None:
            self._task: Any = None

        @property
        def occupied(self) -> bool:
            return self._task is not None

        async def wait(self) -> None:
            self._task = current_task()
            await wait_task_rescheduled(self._abort)

        def _abort(self, raise_cancel: object) -> Abort:
            self._task = None
            return Abort.SUCCEEDED

        def wake(self) -> None:
            task = self._task
            if task is not None:
                self._task = None
                reschedule(task)

    return TrioSpot


def spot_factory(library: str) -> type[Spot]:
    """The spot class for the async library ``library`` (sniffio's name for it)."""
    if library == "asyncio":
        return AsyncioSpot
    if library == "trio":
        return _trio_spot()
    raise RuntimeError(f"aiopquic runs on asyncio or trio, not {library}")
