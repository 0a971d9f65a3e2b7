"""An endpoint: one core ``Endpoint`` (socket + network thread) and its dispatcher.

The dispatcher is one task that waits for the core's wake fd to become readable,
drains every pending event in one call and wakes the tasks concerned.  It runs
in the task group of whoever owns the endpoint: ``open_quic_connection``'s
connection or ``serve_quic``.  On asyncio a reader callback of the loop does the
draining instead; on trio an instrument hook drains too, right after each wait
for I/O, so that the tasks woken run in the batch that follows.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

import anyio
import sniffio

from .._core import EV_READY, ConnHandle, Endpoint
from . import _fast
from ._fast import EarlyDispatch, Flusher
from ._lowlevel import lowlevel_for
from .config import QuicConfig
from .connection import QuicConnection
from .errors import ConnectionClosed

__all__ = ["QuicEndpoint", "check_socket_buffer_limits", "close_core"]

logger = logging.getLogger("aiopquic.quic")


@functools.cache
def check_socket_buffer_limits(requested: int) -> None:
    """Say once (at INFO) when the kernel will clamp the UDP socket buffers we ask for."""
    for name in ("rmem_max", "wmem_max"):
        try:
            with open(f"/proc/sys/net/core/{name}") as f:
                limit = int(f.read())
        except (OSError, ValueError):
            return
        if limit < requested:
            logger.info(
                "the kernel caps UDP socket buffers at %d bytes (net.core.%s) below the %d "
                "requested (QuicConfig.socket_buffer_size): at multi-Gbps rates packets may be "
                "dropped; raise it with sysctl -w net.core.%s=%d",
                limit, name, requested, name, requested,
            )


async def close_core(core: Endpoint) -> None:
    """Close ``core``: stop its network thread (joining it), close its socket, free it.

    When the thread has already exited (as it does once its connections are
    closed) that is quick and happens here; otherwise the join waits for the thread
    to notice, so a worker thread does it, out of the event loop.  Shielded: it
    always completes.
    """
    if not core.closed and core.thread_error() is None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(core.close)
    core.close()  # no-op if done above


class QuicEndpoint:
    """Routes the core's events to connections and streams (internal)."""

    def __init__(
        self,
        core: Endpoint,
        config: QuicConfig,
        *,
        on_connection: Callable[[QuicConnection], object] | None = None,
    ) -> None:
        self.core = core
        self.config = config
        #: Waits and checkpoints of the async library running this endpoint.
        self.lowlevel = lowlevel_for(sniffio.current_async_library()).bind()
        check_socket_buffer_limits(config.socket_buffer_size)
        self.on_connection = on_connection
        self._connections: set[QuicConnection] = set()
        self._scope: anyio.CancelScope | None = None
        self._adopted: list[QuicConnection] = []  # peer-opened, not yet handed to the server
        self._handshaking: set[QuicConnection] = set()  # peer-opened, handshake not done
        self._adopted_event = anyio.Event()
        self._task_group: anyio.abc.TaskGroup | None = None
        #: The endpoint of ``open_quic_connection`` serves one connection and closes with it.
        self.owns_connection = False
        self._stopping = False
        self._closed = False  # aclose() ran
        self._dispatcher_done = anyio.Event()
        self._reader_loop: asyncio.AbstractEventLoop | None = None
        self._reader_fd = -1
        # Inline I/O (see the section below): we want the UDP socket, and wait
        # on it (_socket_fd: the core's descriptor of it) while it is ours.
        self._socket_wanted = False
        self._socket_fd = -1
        self._socket_paused = True  # not waiting on it now
        self._receive_group: anyio.abc.TaskGroup | None = None  # trio: hosts the receiving task
        self._receive_scope: anyio.CancelScope | None = None
        self._socket_ours_again = anyio.Event()  # trio: set when a dispatch finds it ours
        self._early_dispatch: EarlyDispatch | None = None  # trio: the instrument
        # Corked: stream writes and datagrams owe the network thread a wake-up, paid once per
        # event-loop turn by the flusher.
        self._flusher = Flusher(core, self.lowlevel.current_call_soon(), self.lowlevel.current_call_later())
        #: Call after every corked command: wakes the network thread once this turn is done.
        self.wake_soon = self._flusher.wake_soon
        #: Call after a message's last command (a stream's FIN, with the release of
        #: a stream finished both ways; a datagram): wakes the network thread now if
        #: it ends the only message of the turn, as far as can be told (see Flusher).
        self.wake_now = self._flusher.wake_now
        core.set_corked(True)

    @property
    def port(self) -> int:
        return self.core.port

    def add_connection(self, conn: QuicConnection) -> None:
        self._connections.add(conn)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Dispatch events until :meth:`stop_dispatching`; immune to outer cancellation,
        so that connections can still close cleanly while their owner is cancelled."""
        if self._scope is None:
            self._scope = anyio.CancelScope(shield=True)
        try:
            with self._scope:
                if self._scope.cancel_called:
                    task_status.started()
                    return  # stopped before it ran (a cancelled start)
                # What it waits on is in place once it has started (a server's
                # descriptors are all open once serve_quic reports it listens).
                if sniffio.current_async_library() == "asyncio":
                    # Events are dispatched by the reader callback; this task only
                    # starts the handlers of new connections.
                    self._add_asyncio_reader()
                    task_status.started()
                    while True:
                        await self._adopted_event.wait()
                        self._adopted_event = anyio.Event()
                        self._announce_connections()
                else:
                    task_status.started()
                    hook = self.lowlevel.hook_flusher
                    unhook = hook(self._flusher) if hook is not None else None
                    hook_early = self.lowlevel.hook_after_io_wait
                    unhook_early = None
                    if hook_early is not None:
                        self._early_dispatch = EarlyDispatch(self.core, self._dispatch_signalled, self.config.inline_io)
                        unhook_early = hook_early(self._early_dispatch)
                    try:
                        async with anyio.create_task_group() as tg:
                            self._receive_group = tg
                            self._want_socket()
                            await self._dispatch_forever()
                    finally:
                        if unhook_early is not None:
                            unhook_early()
                        if unhook is not None:
                            unhook()
        finally:
            self._remove_asyncio_reader()
            self._dispatcher_done.set()

    async def _dispatch_forever(self) -> None:
        fd = self.core.fileno()
        wait_readable = self.lowlevel.wait_readable
        while True:
            await wait_readable(fd)
            self.dispatch()
            self._announce_connections()
            if self._socket_paused:
                self._resume_if_held()

    # -- inline I/O: the event loop's thread waits on the UDP socket too
    # (QuicConfig.inline_io; the C side, and who reads the socket when, is in
    # aiopquic/_core/inline.c).  We ask for the socket; the network thread hands
    # it over once the endpoint has lived a while and traffic is light.  A
    # receive that finds the network thread awake, or a burst, leaves it the
    # socket: we stop waiting on it until a dispatch (which the network thread
    # causes when it is done) finds it ours again.

    def _want_socket(self) -> None:
        if self.config.inline_io:
            self._socket_wanted = self.core.take_sockets(True)

    def _resume_if_held(self) -> None:
        """After a dispatch (or a pause): wait on the socket again if it is ours."""
        if not (self._socket_paused and self._socket_wanted and self.core.sockets_held()):
            return
        self._socket_paused = False
        if self._reader_loop is not None:  # asyncio
            self._socket_fd = self.core.inline_socket_fd()
            self._reader_loop.add_reader(self._socket_fd, self._receive_from_reader)
        elif self._receive_scope is None:  # trio, the first time
            assert self._receive_group is not None
            self._socket_fd = self.core.inline_socket_fd()
            self._receive_scope = anyio.CancelScope()
            self._receive_group.start_soon(self._receive_forever, self._socket_fd)
        else:
            self._socket_ours_again.set()

    async def _receive_forever(self, socket_fd: int) -> None:
        """trio: take the datagrams of the UDP socket whenever it is readable (and
        trio's instrument, EarlyDispatch, has not already), and deliver their events."""
        wait_readable = self.lowlevel.wait_readable
        receive = self.core.receive_inline
        early = self._early_dispatch
        assert self._receive_scope is not None
        try:
            with self._receive_scope:
                while True:
                    if self._socket_paused:
                        await self._socket_ours_again.wait()
                    await wait_readable(socket_fd)
                    if early is not None and early.drained:
                        # trio's instrument took what woke us, in this same turn (after
                        # the wait that woke us, before the tasks it woke run): a look
                        # would find the socket empty.  What came since, the next wait
                        # finds (the socket is level-triggered).
                        self._announce_connections()
                        continue
                    got = receive()
                    if got in (2, 4):
                        self.dispatch(False, True)
                    self._flusher.after_receive()  # what the datagrams made due
                    if got in (3, 4):
                        # Until the network thread, done, causes a dispatch.
                        self._socket_paused = True
                        self._socket_ours_again = anyio.Event()
                    elif got < 0:
                        return  # the network thread is gone
                    # Also what the instrument took and adopted just before.
                    self._announce_connections()
        finally:
            self._stop_receiving()

    def _receive_from_reader(self) -> None:
        """asyncio: the UDP socket is readable."""
        got = self.core.receive_inline()
        self._flusher.after_receive()  # what the datagrams made due
        if got in (3, 4):
            # Until the network thread, done, causes a dispatch.
            assert self._reader_loop is not None
            self._reader_loop.remove_reader(self._socket_fd)
            self._socket_paused = True
        if got in (2, 4):
            self._dispatch_from_reader(True)
        elif got < 0:
            self._stop_receiving()  # the network thread is gone

    def _stop_receiving(self) -> None:
        """Give the socket back to the network thread (before it may end: the
        close's packets need receiving too) and stop waiting on it.  The trio
        task, cancelled here, ends before the dispatcher does, and so before the
        core closes the socket."""
        if not self._socket_wanted:
            return
        self._socket_wanted = False
        if not self._socket_paused and self._reader_loop is not None:
            self._reader_loop.remove_reader(self._socket_fd)
        self._socket_paused = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        self.core.take_sockets(False)

    def _add_asyncio_reader(self) -> None:
        """On asyncio, dispatch straight from a reader callback: no task switch and no
        reader (de)registration per wake-up."""
        loop = asyncio.get_running_loop()
        # The callback runs in a copy of this context: let anyio (through sniffio)
        # see asyncio there, so that events can be created and set.
        token = sniffio.current_async_library_cvar.set("asyncio")
        self._reader_fd = self.core.fileno()
        try:
            loop.add_reader(self._reader_fd, self._dispatch_from_reader)
            self._reader_loop = loop
            self._want_socket()
        finally:
            sniffio.current_async_library_cvar.reset(token)

    def _remove_asyncio_reader(self) -> None:
        if self._reader_loop is not None:
            self._stop_receiving()
            self._reader_loop.remove_reader(self._reader_fd)
            self._reader_loop = None

    def _dispatch_from_reader(self, after_receive: bool = False) -> None:
        """asyncio: the wake fd is readable, or (``after_receive``) an inline
        receive brought events."""
        try:
            self.dispatch(False, after_receive)
        except Exception:  # pragma: no cover - a bug: keep the loop alive, say it loudly
            logger.exception("aiopquic event dispatch failed")
        if self._socket_paused:
            self._resume_if_held()
        if self._adopted:
            self._adopted_event.set()

    def _dispatch_signalled(self) -> None:
        """trio, after a wait for I/O that found the network thread's signal
        (``EarlyDispatch``): deliver the events, so that the tasks they wake run
        in the batch that follows, with this endpoint's dispatcher task (woken by
        the fd, which stays readable: that task delivers what comes later and
        announces new connections)."""
        try:
            self.dispatch(True)
        except Exception:  # pragma: no cover - a bug: keep trio's loop going, say it loudly
            logger.exception("aiopquic event dispatch failed")

    def _announce_connections(self) -> None:
        while self._adopted:
            conn = self._adopted.pop(0)
            if self.on_connection is not None:
                self.on_connection(conn)
            else:
                conn.close(0, "the server is shutting down")

    @property
    def dispatching(self) -> bool:
        """True while events are being dispatched (by a task or a reader callback)."""
        if self._scope is not None:
            return not self._scope.cancel_called
        return self._reader_loop is not None

    async def enter_connection(self) -> None:
        """``async with conn``: an endpoint that serves only this connection starts
        dispatching now (others already do)."""
        if self.owns_connection:
            await self.start_client_dispatch()

    async def start_client_dispatch(self) -> None:
        """Start dispatching the events of a client endpoint (no-op if it does).

        On asyncio a reader callback does it all (a client accepts no connections);
        elsewhere a dispatcher task waits for the wake fd, in a task group that
        :meth:`aclose` leaves: call both from the same task.
        """
        if self.dispatching or self._task_group is not None:
            return
        if sniffio.current_async_library() == "asyncio":
            self._add_asyncio_reader()
            return
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        # Dispatching from now on: events that come before the task runs wait in the core.
        self._scope = anyio.CancelScope(shield=True)
        task_group.start_soon(self.run, name="aiopquic dispatcher")

    def stop_dispatching(self) -> None:
        if self._scope is None:
            # No dispatcher task yet (a reader callback perhaps, or a task that has
            # not started running): one that starts now finds this and ends at once.
            self._remove_asyncio_reader()
            self._scope = anyio.CancelScope(shield=True)
        self._scope.cancel()

    async def drive_until(self, done: Callable[[], bool]) -> None:
        """Dispatch inline (no dispatcher task yet) until ``done()`` is true."""
        fd = self.core.fileno()
        self.dispatch()
        while not done():
            await anyio.wait_readable(fd)
            self.dispatch()

    #: Drain the core once and deliver every event (in Cython: streams' events are
    #: most of them; the others come back to :meth:`_on_connection_event` and the
    #: connection's ``_on_new_stream``).
    dispatch = _fast.endpoint_dispatch

    def _on_connection_event(self, handle: ConnHandle, flags: int) -> None:
        conn = handle.owner
        if conn is None:
            conn = self._adopt(handle)
        conn._on_event(flags)
        if conn in self._handshaking and (flags & EV_READY or conn.closed):
            self._handshaking.discard(conn)
            if flags & EV_READY:
                self._adopted.append(conn)
        if conn.closed and conn._closed.is_set():
            self._connections.discard(conn)

    def _adopt(self, handle: ConnHandle) -> QuicConnection:
        """A connection the peer opened: wrap it, and hand it to the server once
        its handshake is complete (0-RTT streams can come before that)."""
        conn = QuicConnection(handle, self, self.config)
        self._connections.add(conn)
        self._handshaking.add(conn)
        return conn

    def _on_thread_failed(self) -> None:
        self._stopping = True
        code = self.core.thread_error()
        logger.error("network thread stopped with error %s; closing its connections", code)
        error = ConnectionClosed(
            f"the network thread stopped (picoquic error {code}): the UDP socket failed"
        )
        for conn in list(self._connections):
            conn._on_thread_failed(error)

    def forget(self, conn: QuicConnection) -> None:
        """``async with conn`` ended on a connection of a server."""
        self._connections.discard(conn)

    async def aclose(self) -> None:
        """Close every connection, let the closes go out, end the thread.

        The network thread ends by itself once the CONNECTION_CLOSE frames are
        out (after the close linger of connections closing gracefully), while
        this task stops its dispatcher: one trip to the thread for both.
        """
        if self._closed:
            return
        for conn in list(self._connections):
            conn.close(0, "endpoint shutting down")  # no-op for those already closing
        self._stopping = True
        self._stop_receiving()
        self.core.exit_when_closed()
        was_dispatching = self._scope is not None
        self.stop_dispatching()
        if was_dispatching:
            with anyio.CancelScope(shield=True):
                await self._dispatcher_done.wait()
        if self._task_group is not None:
            task_group, self._task_group = self._task_group, None
            await task_group.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.config.close_timeout + 1.0):
            await self.drive_until(lambda: self.core.thread_error() is not None)
        await close_core(self.core)
        self._closed = self._flusher.closed = True
        self.dispatch()  # the close events picoquic raised while freeing
        for conn in list(self._connections):
            conn._on_closed()
        self._connections.clear()
        self._handshaking.clear()
