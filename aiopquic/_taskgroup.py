"""A task group for many short tasks, such as one per HTTP/3 request.

Since anyio 4.14, every ``TaskGroup.start_soon`` makes a ``TaskHandle`` with a
cancel scope and an event of its own, and runs the task inside that scope: on
trio about a sixth of an HTTP/3 server's time per small request.  On trio,
anyio's task group is a trio nursery plus those per-task objects, so this opens
the nursery itself: inside anyio's cancel scopes (which are trio's there),
with trio's own cancellation and exception groups, as before.  On other
backends it is anyio's task group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import sniffio

if TYPE_CHECKING:
    from typing_extensions import TypeVarTuple, Unpack

    PosArgsT = TypeVarTuple("PosArgsT")

__all__ = ["TaskSpawner", "open_task_group"]


class CancelScopeLike(Protocol):
    """A cancel scope, anyio's or trio's."""

    def cancel(self) -> None:
        """Cancel every task in the scope."""


class TaskSpawner(Protocol):
    """What both an anyio task group and a trio nursery offer."""

    @property
    def cancel_scope(self) -> CancelScopeLike:
        """The scope that cancels the group's tasks."""

    def start_soon(
        self, func: Callable[[Unpack[PosArgsT]], Coroutine[Any, Any, Any]], *args: Unpack[PosArgsT], name: object = None
    ) -> object:
        """Start ``func(*args)`` as a task of the group."""


@asynccontextmanager
async def open_task_group() -> AsyncIterator[TaskSpawner]:
    """A trio nursery on trio, else an anyio task group."""
    if sniffio.current_async_library() == "trio":
        import trio

        async with trio.open_nursery() as nursery:
            yield nursery
    else:
        async with anyio.create_task_group() as tg:
            yield tg
