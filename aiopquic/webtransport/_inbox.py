"""A session's queue of what the peer sent (streams, datagrams), read by one task.

The driver puts without waiting; one task takes, as ``QuicConnection`` hands
out its streams: a deque and a parking spot, no per-item objects. An anyio
memory object stream costs several times more per item, and a WebTransport
request/response pays it on every stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

from ..quic._lowlevel import Lowlevel

T = TypeVar("T")

__all__ = ["Inbox"]


class Inbox(Generic[T]):
    """Up to ``size`` items waiting; :meth:`get` raises :class:`anyio.EndOfStream`
    once closed and empty (what was put before :meth:`close` is still handed out)."""

    __slots__ = ("_activity", "_items", "_ll", "_size", "_spot", "closed", "starter")

    def __init__(self, size: int, lowlevel: Lowlevel, activity: str) -> None:
        self._items: deque[T] = deque()
        self._size = size
        self._ll = lowlevel
        self._spot = lowlevel.spot()
        self._activity = activity
        self.closed = False
        #: Takes an item instead of the queue while nothing is queued (True: taken),
        #: as ``serve_each_from_dispatch`` installs (see aiopquic._taskgroup).
        self.starter: Callable[[T], bool] | None = None

    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` for the reader; False (nothing queued) when full or closed."""
        if self.closed or len(self._items) >= self._size:
            return False
        start = self.starter
        if start is not None and not self._items and start(item):
            return True
        self._items.append(item)
        self._spot.wake()
        return True

    def close(self) -> None:
        """No more items: the reader gets what is queued, then EndOfStream."""
        self.closed = True
        self._spot.wake()

    async def get(self) -> T:
        """The next item, waiting for one; a cancelled call loses none."""
        ll = self._ll
        yielded, checkpoint = ll.first_checkpoint(bool(self._items))
        await checkpoint
        while not self._items:
            if self.closed:
                raise anyio.EndOfStream
            if self._spot.occupied:
                raise anyio.BusyResourceError(self._activity)
            await self._spot.wait()
            yielded = True
        item = self._items.popleft()
        if not yielded:  # every call yields once, as trio expects
            await ll.cancel_shielded_checkpoint()
        return item
