"""The few low-level operations streams and connections do thousands of times a
second, in the cheapest form each backend offers, chosen once per endpoint.

- A parking spot: one task waits in it until another wakes it.  An
  ``anyio.Event`` per wait costs a backend lookup, an event object of anyio's and
  one of the backend's; a spot is an asyncio future or trio's
  ``wait_task_rescheduled``, made once and reused (both in ``_fast.pyx``).
  Cancellation is the backend's own, as with an event: a cancelled wait raises
  where it waited and a later ``wake()`` is a no-op.
  On asyncio the spots of an endpoint make their futures with its loop's
  ``future_maker``, chosen once (``Lowlevel.bind``): asking for the running loop
  at each wait costs a ``getpid`` on Python 3.11.
- Checkpoints: anyio's ``lowlevel.checkpoint*`` look the backend up on every
  call; these are the backend's own functions, looked up once (asyncio's plain
  checkpoint, a bare yield, is one Cython object: ``_fast.asyncio_checkpoint``).
- ``wait_readable``: trio's own, without anyio's backend lookup and wrapper.
- ``current_time``: the event loop's clock, without anyio's backend lookup
  (on asyncio the endpoint's loop's ``time``, without asking for the running loop).
- ``call_soon``: run a plain function once the event loop's current turn is
  done (asyncio's ``loop.call_soon``, trio's ``TrioToken.run_sync_soon``); the
  endpoint wakes its network thread that way once for all of a turn's writes
  (on trio only until its dispatcher runs: then ``hook_flusher`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio.lowlevel

from ._fast import (
    NO_CHECKPOINT,
    AsyncioSpot,
    EarlyDispatch,
    Flusher,
    SpotBase,
    TrioSpot,
    asyncio_checkpoint,
    asyncio_checkpoint_if_cancelled_for,
    future_maker,
)

__all__ = ["Lowlevel", "Spot", "lowlevel_for"]


class Spot(Protocol):
    """Where one task waits (``await spot.wait()``) until ``spot.wake()``."""

    @property
    def occupied(self) -> bool:
        """True while a task waits here."""

    async def wait(self) -> None:
        """Wait until woken (or cancelled)."""

    def wake(self) -> None:
        """Wake the waiting task, if any."""


def _no_call_later() -> None:
    return None


@dataclasses.dataclass(frozen=True)
class Lowlevel:
    """The spot class and checkpoints of one async library."""

    #: Makes a spot (call it inside the event loop that will wait in it).
    spot: Callable[[], SpotBase]
    checkpoint: Callable[[], Awaitable[None]]
    checkpoint_if_cancelled: Callable[[], Awaitable[None]]
    cancel_shielded_checkpoint: Callable[[], Awaitable[None]]
    #: The running loop's ``call_soon`` (call it inside that loop).
    current_call_soon: Callable[[], Callable[[Callable[[], object]], object]]
    #: Wait until a file descriptor is readable (``anyio.wait_readable``).
    wait_readable: Callable[[int], Awaitable[None]]
    #: The event loop's clock (``anyio.current_time``).
    current_time: Callable[[], float] = anyio.current_time
    #: Have a flusher flush whenever the loop has run its runnable tasks (trio:
    #: see ``Flusher``); returns the function that stops it.  None: call_soon does.
    hook_flusher: Callable[[Flusher], Callable[[], None]] | None = None
    #: Have an endpoint's early dispatch run each time the loop has waited for
    #: I/O, before it runs the tasks that woke (trio: see ``EarlyDispatch``);
    #: returns the function that stops it.  None: nothing to gain (asyncio
    #: dispatches from a reader callback already).
    hook_after_io_wait: Callable[[EarlyDispatch], Callable[[], None]] | None = None
    #: The running loop's ``call_later`` (asyncio; call it inside that loop), or
    #: None where ``hook_flusher`` makes it needless.
    current_call_later: Callable[[], Callable[..., object] | None] = _no_call_later
    #: For an operation that can finish at once: a cancellable ``checkpoint()``
    #: before it costs less than ``checkpoint_if_cancelled()`` and a
    #: ``cancel_shielded_checkpoint()`` after it (asyncio: anyio's shielded yield
    #: makes a cancel scope; on trio it is the other way round).
    yield_first: bool = False

    def bind(self) -> Lowlevel:
        """These operations for one endpoint, in the running event loop: on asyncio,
        spots that make their futures with this loop, not the running loop's, and
        this loop's clock, and anyio's ``checkpoint_if_cancelled()`` for this
        loop in one Cython call (``_fast.AsyncioCheckpointIfCancelled``)."""
        if self.spot is AsyncioSpot:
            loop = asyncio.get_running_loop()
            check = asyncio_checkpoint_if_cancelled_for(loop) or self.checkpoint_if_cancelled
            return dataclasses.replace(
                self,
                spot=functools.partial(AsyncioSpot, future_maker(loop)),
                current_time=loop.time,
                checkpoint_if_cancelled=check,
            )
        return self

    def first_checkpoint(self, ready: bool) -> tuple[bool, Awaitable[None]]:
        """How a call that may take something (bytes, a stream, a datagram) begins:
        ``yielded, checkpoint = ll.first_checkpoint(ready); await checkpoint``.

        With something ``ready`` where ``yield_first`` holds, the call's one yield
        comes first and may be cancelled, while nothing is taken yet (``yielded``
        is True).  Otherwise it checks for cancellation, and a call that then
        takes something without having waited still owes its one yield: a
        ``cancel_shielded_checkpoint()``, which keeps what it took.

        Where ``yield_first`` holds (asyncio) and nothing is ready, the call is
        about to wait, and its wait is where a cancellation lands: the separate
        check (anyio's, which looks up the current task: a getpid on Python
        3.11) is skipped.  If something lands in that instant, the call takes it
        without waiting, and its shielded yield follows as above.
        """
        if self.yield_first:
            return (True, self.checkpoint()) if ready else (False, NO_CHECKPOINT)
        return False, self.checkpoint_if_cancelled()

    def checkpoint_after_handing_over(self) -> Awaitable[None]:
        """The yield of a call that has just handed something over for good (the
        last bytes of a stream, a FIN): after ``checkpoint_if_cancelled()`` and the
        hand-over, as trio's own sends do, so that it leaves with the event loop's
        current turn instead of after the task's next step.

        On trio a ``cancel_shielded_checkpoint()``.  On asyncio a plain yield,
        cheaper than anyio's shielded one: a cancellation there finds the thing
        handed over, which loses nothing."""
        return self.checkpoint() if self.yield_first else self.cancel_shielded_checkpoint()


def _trio_hook_flusher(flusher: Flusher) -> Callable[[], None]:
    """Make ``flusher`` a trio instrument whose ``before_io_wait`` trio calls each
    time its runnable tasks are done; return the function that removes it."""
    import trio

    remove = _add_trio_instrument(flusher)
    flusher.hooked = True

    def unhook() -> None:
        flusher.hooked = False
        remove()
        flusher.flush()  # what the last turn left, if anything

    return unhook


def _add_trio_instrument(instrument: Any) -> Callable[[], None]:
    """Add a trio instrument (a Cython class of ours counts as one: its hooks
    are Instrument's); return the function that removes it."""
    import trio

    trio.abc.Instrument.register(type(instrument))
    trio.lowlevel.add_instrument(instrument)

    def remove() -> None:
        with contextlib.suppress(KeyError):  # already removed (by trio, after an error)
            trio.lowlevel.remove_instrument(instrument)

    return remove


def _trio_hook_after_io_wait(instrument: EarlyDispatch) -> Callable[[], None]:
    """Make ``instrument`` a trio instrument whose ``after_io_wait`` trio calls each
    time it has waited for I/O, before it runs the batch of tasks it then has;
    return the function that removes it.

    Tasks that it wakes or starts join that batch: an endpoint that delivers its
    events there saves its dispatcher's pass through the run loop before the
    tasks they are for run."""
    return _add_trio_instrument(instrument)


def _asyncio_call_soon() -> Callable[[Callable[[], object]], object]:
    return asyncio.get_running_loop().call_soon


def _asyncio_call_later() -> Callable[..., object]:
    return asyncio.get_running_loop().call_later


@functools.cache
def lowlevel_for(library: str) -> Lowlevel:
    """The operations for the async library ``library`` (sniffio's name for it)."""
    if library == "trio":
        import trio.lowlevel

        return Lowlevel(
            TrioSpot,
            trio.lowlevel.checkpoint,
            trio.lowlevel.checkpoint_if_cancelled,
            trio.lowlevel.cancel_shielded_checkpoint,
            lambda: trio.lowlevel.current_trio_token().run_sync_soon,
            trio.lowlevel.wait_readable,
            current_time=trio.current_time,
            hook_flusher=_trio_hook_flusher,
            hook_after_io_wait=_trio_hook_after_io_wait,
        )
    if library != "asyncio":
        raise RuntimeError(f"aiopquic runs on asyncio or trio, not {library}")
    try:
        # anyio's own asyncio checkpoints (they follow its cancel scopes), without
        # the backend lookup of each call; through a private name, hence the fallback.
        from anyio._core._eventloop import get_async_backend

        backend: Any = get_async_backend("asyncio")
        return Lowlevel(
            AsyncioSpot,
            asyncio_checkpoint,  # what backend.checkpoint does, in one object
            backend.checkpoint_if_cancelled,
            backend.cancel_shielded_checkpoint,
            _asyncio_call_soon,
            anyio.wait_readable,
            current_call_later=_asyncio_call_later,
            yield_first=True,
        )
    except (ImportError, AttributeError, TypeError):
        return Lowlevel(
            AsyncioSpot,
            anyio.lowlevel.checkpoint,
            anyio.lowlevel.checkpoint_if_cancelled,
            anyio.lowlevel.cancel_shielded_checkpoint,
            _asyncio_call_soon,
            anyio.wait_readable,
            current_call_later=_asyncio_call_later,
            yield_first=True,
        )
