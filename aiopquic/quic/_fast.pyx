# cython: language_level=3, boundscheck=False, wraparound=False
"""What a request/response runs a dozen times, in Cython.

``stream.py``, ``connection.py`` and ``endpoint.py`` keep the public classes and
their documentation; the work of each call is here: the parking spots a task
waits in, the two halves of a stream (reading its receive ring, writing its
send ring), the dispatcher's loop over the core's events, the stream
bookkeeping when a stream finishes, and the flusher that wakes the network
thread once per event-loop turn.  The logic is line for line what the Python
was; compiled, it costs no interpreter frames, and it reads the core's stream
state without a Python call (the ``StreamHandle`` methods in ``_core.pxd``).

Measured (benchmarks/instructions.py), not assumed: the synchronous steps pay
off in Cython; a coroutine does not.  A Python coroutine awaiting a Cython one
costs more than one Python coroutine calling synchronous Cython steps, so each
public async method (``receive()``, ``send()``) stays one Python coroutine, and
only the slow path (a send waiting for room) awaits a coroutine of ours.

Like the rest of ``quic/``, nothing here calls picoquic: only ``_core`` does.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t

from cpython.pythread cimport PyThread_get_thread_ident

from aiopquic._core._core cimport ConnHandle, Endpoint, StreamHandle

import asyncio
import collections
import functools
import weakref

import anyio

from .._core import EV_NEW, EV_RESET, EV_RX, EV_STOP, EV_TX

from .errors import StreamReset, check_error_code

_get_running_loop = asyncio.get_running_loop
_ClosedResourceError = anyio.ClosedResourceError
_BusyResourceError = anyio.BusyResourceError
_EndOfStream = anyio.EndOfStream


# -- parking spots ---------------------------------------------------------------


cdef class SpotBase:
    """Where one task waits (``await spot.wait()``) until ``spot.wake()``."""

    cdef bint c_occupied(self):
        return False

    @property
    def occupied(self):
        """True while a task waits here."""
        return self.c_occupied()

    cpdef wake(self):
        """Wake the waiting task, if any."""


cdef class AsyncioSpot(SpotBase):
    """A spot on asyncio: the waiter awaits a future made by ``create_future``
    (one loop's :func:`future_maker`, made once for all its spots; by default
    the running loop's ``create_future``, looked up at each wait: on Python
    3.11 that costs a getpid)."""

    cdef object _future
    cdef object _create_future

    def __cinit__(self, create_future=None):
        self._create_future = create_future

    cdef bint c_occupied(self):
        return self._future is not None

    async def wait(self):
        """Wait until woken (or cancelled)."""
        create = self._create_future
        future = self._future = create() if create is not None else _get_running_loop().create_future()
        try:
            await future
        finally:
            self._future = None

    cpdef wake(self):
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)


def future_maker(loop):
    """``loop.create_future``; for asyncio's own loops, which make a plain
    ``asyncio.Future``, that class called with the loop directly: the same
    future without a Python frame per wait."""
    if getattr(type(loop), "create_future", None) is asyncio.BaseEventLoop.create_future:
        return functools.partial(asyncio.Future, loop=loop)
    return loop.create_future


# trio's scheduling functions, imported by the first TrioSpot (trio is optional).
cdef object _current_task = None
cdef object _wait_task_rescheduled = None
cdef object _reschedule = None
cdef object _abort_succeeded = None


cdef class TrioSpot(SpotBase):
    """A spot on trio: the waiter parks with ``wait_task_rescheduled``."""

    cdef object _task

    def __cinit__(self):
        global _current_task, _wait_task_rescheduled, _reschedule, _abort_succeeded
        if _current_task is None:
            from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

            _wait_task_rescheduled, _reschedule = wait_task_rescheduled, reschedule
            _abort_succeeded, _current_task = Abort.SUCCEEDED, current_task

    cdef bint c_occupied(self):
        return self._task is not None

    async def wait(self):
        """Wait until woken (or cancelled)."""
        self._task = _current_task()
        await _wait_task_rescheduled(self._abort)

    def _abort(self, raise_cancel):
        self._task = None
        return _abort_succeeded

    cpdef wake(self):
        task = self._task
        if task is not None:
            self._task = None
            _reschedule(task)


# -- waking the network thread ------------------------------------------------------------

#: Seconds at most that what an inline receive made due waits for an answer to
#: go with, on asyncio (picoquic's shortest ACK delay).
RECEIVE_FLUSH_DELAY = 0.001


cdef class Flusher:
    """Corked commands (stream bytes, a FIN, a reset, a datagram...) owe the network
    thread a wake-up: :meth:`wake_soon` pays it once the event loop's current turn
    is done, for every command of that turn.

    On asyncio through ``call_soon``.  On trio, while the endpoint dispatches, trio
    calls :meth:`before_io_wait` (as a trio instrument) each time a batch of
    runnable tasks is done, before it waits for I/O: the flush costs no task
    switch, and trio's own ``run_sync_soon``, made for other threads, would cost
    a write to its wake-up socket, a read and a task step every time.

    The end of a message (a stream's FIN, a datagram, a wait to receive on a
    stream sent on since its last wait) need not wait for the turn's end when
    it is the only one: :meth:`wake_now` then wakes the network thread at once,
    and a lone request is answered a loop pass sooner.  Where turns end several
    messages (many requests in flight), a wake-up per message would cost a
    packet and two thread switches each (HTTP/3 GETs with 100 in flight: a
    third fewer per second); there the turn's end wakes it, once for them all.
    Whether they do is judged from the last turn that ended any: if it ended
    one, this turn's first goes at once.

    What an inline receive makes due (:meth:`after_receive`: the ACK of a
    request's FIN, say) waits for the flush of the answer the request calls
    for, to leave in one packet with it; if no answer comes, it goes once the
    loop has nothing left to run (trio's ``before_io_wait`` with a timeout) or,
    on asyncio, which has no such hook, after ``RECEIVE_FLUSH_DELAY`` at most
    (picoquic's own shortest ACK delay).
    """

    cdef Endpoint _core
    cdef object _call_soon
    cdef object _ready_append  # asyncio's own loops: where call_soon puts a handle
    cdef object _flush_handle  # ... and the one handle that calls flush(), reused
    cdef object _call_later
    cdef object _receive_timer  # asyncio: the pending flush of what a receive left
    cdef unsigned long _loop_thread
    cdef bint _scheduled
    cdef int _ends  # messages ended in this turn (wake_now calls that owed a wake-up)
    cdef int _ends_before  # ... and in the last turn that ended any
    #: No more wake-ups: the endpoint is closed.
    cdef public bint closed
    #: True while trio calls :meth:`before_io_wait`: no call_soon needed.
    cdef public bint hooked

    def __cinit__(self, Endpoint core not None, call_soon, call_later=None):
        self._core = core
        self._call_soon = call_soon
        self._call_later = call_later
        self._loop_thread = PyThread_get_thread_ident()
        loop = getattr(call_soon, "__self__", None)
        if (
            getattr(call_soon, "__func__", None) is asyncio.BaseEventLoop.call_soon
            and not loop.get_debug()
            and type(getattr(loop, "_ready", None)) is collections.deque
        ):
            # asyncio's own loop, whose call_soon is Python (four frames and a new
            # Handle each time): at most one flush is pending at a time
            # (_scheduled), so one Handle serves them all, put in the loop's queue
            # of ready callbacks as call_soon would (the loop's thread only: see
            # wake_soon).  In debug mode call_soon's checks are kept.
            self._flush_handle = asyncio.Handle(self.flush, (), loop)
            self._ready_append = loop._ready.append

    def wake_soon(self):
        """Wake the network thread once the event loop's current turn is done, if
        the command just handed over owes it a wake-up."""
        if self._scheduled or self.closed or not self._core.c_wake_owed():
            return
        if PyThread_get_thread_ident() != self._loop_thread:
            # A stream's __del__, run by the garbage collector in another thread.
            self._core.c_flush()
            return
        self._schedule()

    cdef void _schedule(self):
        """Have the turn's end flush (trio's hook calls it anyway)."""
        self._scheduled = True
        if self.hooked:
            return
        if self._ready_append is not None:
            self._ready_append(self._flush_handle)
        else:
            self._call_soon(self.flush)

    def wake_now(self):
        """After the end of a message was handed over (a stream's FIN, a datagram,
        bytes its sender now waits for an answer to):
        wake the network thread now if it is this turn's first and the last turn
        ended at most one, else once the turn is done (as :meth:`wake_soon`)."""
        if self.closed or not self._core.c_wake_owed():
            return  # it rides a wake-up already on its way
        self._ends += 1
        if self._ends > 1 or self._ends_before > 1:
            self.wake_soon()
            return
        if not self._scheduled:  # the turn's end still comes, to count its ends
            self._schedule()
        self._core.c_flush()

    def after_receive(self):
        """After an inline receive: send what it made due with the next flush, or
        once the loop is idle (see the class)."""
        if self.closed or self.hooked or not self._core.c_wake_owed():
            return  # (trio's before_io_wait looks itself)
        if self._call_later is None:
            self._schedule()
        elif self._receive_timer is None:
            self._receive_timer = self._call_later(RECEIVE_FLUSH_DELAY, self._flush_after_receive)

    def _flush_after_receive(self):
        self._receive_timer = None
        self.flush()

    def flush(self):
        """Wake the network thread now if corked commands wait for it."""
        self._scheduled = False
        if self._ends:
            self._ends_before = self._ends
            self._ends = 0
        self._core.c_flush()

    def before_io_wait(self, timeout):
        """trio's instrument hook: its runnable tasks are done for now; flush (what
        an inline receive made due only when nothing is left to run)."""
        if self._scheduled or (timeout > 0 and self._core.c_wake_owed()):
            self.flush()


cdef class EarlyDispatch:
    """A trio instrument: each time trio has waited for I/O, before it runs the
    tasks that woke, ``dispatch()`` delivers what the network thread has
    signalled, so that the tasks it wakes or starts join that batch (see
    ``QuicEndpoint._dispatch_signalled``).  Called at every turn of trio's run
    loop, so it looks at the core's signal without a Python frame.

    With ``receive_inline`` (inline I/O), it first takes what waits on the UDP
    socket (what that makes due, the endpoint's hooked ``Flusher`` sends)."""

    cdef Endpoint _core
    cdef object _dispatch
    cdef bint _receive_inline
    #: This turn's hook emptied the UDP socket, which is still ours: the task
    #: waiting on it, woken by the same readiness, need not look again.
    cdef public bint drained

    def __cinit__(self, Endpoint core not None, dispatch, bint receive_inline=False):
        self._core = core
        self._dispatch = dispatch
        self._receive_inline = receive_inline

    def after_io_wait(self, timeout):
        """trio's instrument hook: with inline I/O, after a wait that slept, take
        what waits on the UDP socket; deliver the events, if any."""
        cdef int got = 0
        if self._receive_inline and timeout > 0:
            got = self._core.c_receive_inline(False)
        self.drained = got == 1 or got == 2
        if got == 2 or got == 4 or self._core.c_signalled():
            self._dispatch()  # (the receiving task, woken too, sees a 3 or 4 itself)


# -- asyncio's checkpoint ----------------------------------------------------------------


cdef class _YieldOnce:
    """Awaitable that gives the event loop one turn: ``asyncio.sleep(0)`` without its
    two coroutine frames (and anyio's third).  The task yields a bare None, which
    asyncio answers by running it again at the next turn; a cancellation (anyio's
    too: it cancels the task) arrives at that yield, as it would in sleep(0)."""

    cdef bint _yielded

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        if self._yielded:
            raise StopIteration
        self._yielded = True
        return None


def asyncio_checkpoint():
    """anyio's asyncio ``checkpoint()`` (``await sleep(0)``), as one awaitable object."""
    return _YieldOnce.__new__(_YieldOnce)


cdef class _NoYield:
    """Awaitable that does nothing: awaiting it neither yields nor checks anything."""

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        raise StopIteration


#: ``await NO_CHECKPOINT`` does nothing (one object, shared: it keeps no state).
NO_CHECKPOINT = _NoYield()


cdef class AsyncioCheckpointIfCancelled:
    """anyio's ``checkpoint_if_cancelled()`` on asyncio for one event loop, in one
    call without a coroutine: it yields (where the cancellation is delivered)
    only if the current task's cancel scope, or one it is nested in up to a
    shielded one, is cancelled.

    anyio's own looks the task up through ``asyncio.current_task()`` (a getpid on
    Python 3.11), its state in a weak dictionary through a Python method, and
    the scopes through properties, in a coroutine: a few microseconds, several
    times per request.  This reads the same state directly: anyio's
    ``_task_states`` and its cancel scopes' private attributes, checked by
    :func:`asyncio_checkpoint_if_cancelled_for` before it is used.
    """

    cdef object _loop
    cdef object _current_task
    cdef dict _states  # WeakKeyDictionary.data: weakref(task) -> TaskState
    cdef object _ref

    def __cinit__(self, loop, current_task, dict states):
        self._loop = loop
        self._current_task = current_task
        self._states = states
        self._ref = weakref.ref

    def __call__(self):
        task = self._current_task(self._loop)
        if task is None:
            return NO_CHECKPOINT
        state = self._states.get(self._ref(task))
        if state is None:
            return NO_CHECKPOINT
        scope = state.cancel_scope
        while scope is not None:
            if scope._cancel_called:
                return _YieldOnce()
            if scope._shield:
                break
            scope = scope._parent_scope
        return NO_CHECKPOINT


cdef int _scopes_readable = -1  # anyio's cancel scopes have the flags read: 1, 0; -1 not looked yet


def asyncio_checkpoint_if_cancelled_for(loop):
    """An :class:`AsyncioCheckpointIfCancelled` for ``loop``, or None if this anyio
    keeps its task states or cancel scopes otherwise than it expects (the
    scopes are looked at once per process)."""
    global _scopes_readable
    try:
        from anyio._backends._asyncio import CancelScope as _Scope
        from anyio._backends._asyncio import _task_states

        states = _task_states.data
        if _scopes_readable < 0:
            scope = _Scope()
            _scopes_readable = all(hasattr(scope, name) for name in ("_cancel_called", "_shield", "_parent_scope"))
    except (ImportError, AttributeError):
        return None
    if not isinstance(states, dict) or not _scopes_readable:
        return None
    return AsyncioCheckpointIfCancelled(loop, _current_task_lookup(), states)


def _current_task_lookup():
    """``asyncio.current_task`` as a call of one argument, the loop.  Python 3.11's
    is a Python function around a dictionary lookup (3.12 made it C): there the
    dictionary's own ``get`` saves a Python frame per call."""
    current = asyncio.current_task
    tasks = getattr(asyncio.tasks, "_current_tasks", None)
    if getattr(current, "__code__", None) is not None and isinstance(tasks, dict):
        return tasks.get
    return current


# -- stream halves ----------------------------------------------------------------


cdef inline int _raise_if_conn_closed(conn) except -1:
    """``conn._raise_if_closed()``, called only when it will raise."""
    if conn._closing_locally or conn._closed_exc is not None:
        conn._raise_if_closed()
    return 0


cdef class Half:
    """One direction of a stream: its handle, and the one task that may wait on it."""

    cdef readonly StreamHandle _h
    cdef readonly object _conn
    cdef readonly SpotBase _spot  # made on the first wait
    cdef object _ll

    #: Named in the error when two tasks use this half at once.
    _activity = ""

    def __cinit__(self, StreamHandle handle not None, conn):
        self._h = handle
        self._conn = conn
        self._ll = conn._ll

    cdef bint c_busy(self):
        return self._spot is not None and self._spot.c_occupied()

    async def _wait(self):
        """Wait for the next event on this stream (or its connection)."""
        spot = self.spot_to_wait()
        self._conn._check_running()
        await spot.wait()

    def spot_to_wait(self):
        """The spot where the one task using this half waits (BusyResourceError if
        another task waits in it already)."""
        cdef SpotBase spot = self._spot
        if spot is None:
            spot = self._spot = self._ll.spot()
        elif spot.c_occupied():
            raise _BusyResourceError(self._activity)
        return spot

    def wake(self):
        self.c_wake()

    cdef inline void c_wake(self):
        if self._spot is not None:
            self._spot.wake()


#: What ``ReceiveHalf.answers_at_once`` finds.
RECEIVE_WAITS = 0
RECEIVE_TAKES = 1
RECEIVE_ENDS = 2


cdef class ReceiveHalf(Half):
    """The receiving side of a stream: reads its ring, raises what ended it."""

    cdef public bint closed  # we stopped reading (aclose or stop_sending)
    cdef public bint done  # FIN consumed or reset seen: nothing more will come

    _activity = "receiving from"

    def answers_at_once(self, max_bytes):
        """Check ``max_bytes``; what a receive can do now: ``RECEIVE_WAITS`` (nothing
        is in), ``RECEIVE_TAKES`` (bytes are) or ``RECEIVE_ENDS`` (only what ended
        the stream is left to raise: its FIN, a reset, our own close)."""
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        cdef StreamHandle h = self._h
        if self.closed or h.s.rx_reset:
            return RECEIVE_ENDS
        cdef bint fin = h.s.rx_fin  # before the ring: once FIN is seen, every byte is in
        if h.c_readable():
            return RECEIVE_TAKES
        return RECEIVE_ENDS if fin else RECEIVE_WAITS

    cpdef bytes take(self, Py_ssize_t max_bytes):
        """Up to ``max_bytes`` of what is buffered, b"" if nothing is; raises what
        ended the stream (EndOfStream, StreamReset, ClosedResourceError)."""
        cdef StreamHandle h = self._h
        cdef bint fin
        cdef bytes data
        while True:
            if self.closed:
                raise _ClosedResourceError("this stream's receiving side was closed by us")
            if h.s.rx_reset:
                reset_code = h.s.rx_reset_code
                self.done = True
                h.c_discard_rx()  # what is buffered will never be read: free its share of max_data
                raise StreamReset(
                    f"the peer reset stream {h.stream_id} with error code {reset_code}",
                    error_code=reset_code,
                    stream_id=h.stream_id,
                )
            # Read FIN before the ring: once FIN is seen, every byte is already in.
            fin = h.s.rx_fin
            data = h.c_read(max_bytes)
            if data:
                return data
            if not fin and h.s.rx_fin:
                continue  # the FIN landed after our first look: read again, it is all in
            if fin:
                self.done = True
                raise _EndOfStream
            _raise_if_conn_closed(self._conn)
            return b""

    def stop(self, error_code):
        check_error_code(error_code)
        if not self.closed:
            self.closed = True
            # Once the FIN is in, the peer has sent everything: STOP_SENDING
            # would change nothing (RFC 9000 3.5), so only the bytes are dropped.
            if not self.done and not self._h.s.rx_fin:
                self._h.stop_sending(error_code)
                self._conn._wake_soon()
            self._h.c_discard_rx()
            self.wake()


cdef class SendHalf(Half):
    """The sending side of a stream: writes into its ring, waits while it is full.

    Python keeps no bytes of its own: what a send commits goes into the ring at
    once, past the ring's size if the send is cancelled half way, so that the
    network thread (and a graceful close waiting for it) sees every byte and the
    FIN.  A send waiting for room has written nothing or is the only one that
    went past the size, so memory stays bounded by one send beyond the ring.
    """

    cdef public bint closed  # send_eof, reset or aclose: no more send()
    cdef public bint done  # FIN handed over, or reset either way
    cdef public bint reset_by_us
    cdef Py_ssize_t _written  # by send_start, for send_rest

    _activity = "sending to"

    cdef int c_check_open(self) except -1:
        if self.closed:
            if self.reset_by_us:
                raise _ClosedResourceError("this stream was reset by us: no more bytes go out")
            raise _ClosedResourceError("this stream's sending side is closed (send_eof, reset or aclose)")
        self.c_raise_if_stopped()
        _raise_if_conn_closed(self._conn)
        return 0

    cdef int c_raise_if_stopped(self) except -1:
        cdef StreamHandle h = self._h
        if h.s.tx_stopped:
            code = h.s.tx_stop_code
            self.done = True
            raise StreamReset(
                f"the peer asked us to stop sending on stream {h.stream_id} "
                f"(STOP_SENDING, error code {code})",
                error_code=code,
                stream_id=h.stream_id,
            )
        return 0

    def _raise_if_stopped(self):
        self.c_raise_if_stopped()

    def send_start(self, data, bint eof=False):
        """``send()`` after its first checkpoint: check that this half is open and
        free, write what fits of ``data`` (then the FIN, with ``eof``); return True
        if that was all of it, else :meth:`send_rest` goes on."""
        self.c_check_open()
        if self.c_busy():
            raise _BusyResourceError(self._activity)  # before a byte is taken
        cdef Py_buffer view
        cdef Py_ssize_t size, written
        _get_bytes(data, &view)
        try:
            size = view.len
            written = self._h.c_write(<const uint8_t*>view.buf, size, False, eof)
        finally:
            PyBuffer_Release(&view)
        conn = self._conn
        conn._wake_soon()
        if written < size:
            self._written = written
            return False
        conn._bytes_sent += size
        if eof:
            self.closed = self.done = True
        return True

    async def send_rest(self, data, bint eof=False):
        """Write the rest of ``data`` after :meth:`send_start`, waiting for room; if
        cancelled, the rest goes too, past the ring's size (the call committed)."""
        cdef StreamHandle h = self._h
        conn = self._conn
        cdef Py_buffer view
        cdef const uint8_t* start
        cdef Py_ssize_t size, written = self._written
        # The caller's buffer is borrowed, not copied, while this call runs: the
        # ring takes the only copy.
        _get_bytes(data, &view)
        try:
            start = <const uint8_t*>view.buf
            size = view.len
            while written < size:
                try:
                    if h.c_tx_arm() < h.tx_threshold:
                        await self._wait()
                except BaseException:
                    if written and not self.closed:  # committed: the rest goes too, past the ring's size
                        written += h.c_write(start + written, size - written, True, eof)
                        conn._wake_soon()
                        conn._bytes_sent += written
                        if eof:
                            self.closed = self.done = True
                    raise
                self.c_check_open()
                written += h.c_write(start + written, size - written, False, eof)
                conn._wake_soon()
        finally:
            PyBuffer_Release(&view)
        conn._bytes_sent += size
        if eof:
            self.closed = self.done = True

    def send_nowait(self, data, bint eof=False):
        """Write all of ``data`` (then the FIN, with ``eof``) now, past the ring's size if need be."""
        self.c_check_open()
        if self.c_busy():
            raise _BusyResourceError(self._activity)  # its bytes must go first
        cdef Py_buffer view
        _get_bytes(data, &view)
        try:
            self._h.c_write(<const uint8_t*>view.buf, view.len, True, eof)
            self._conn._wake_soon()
            self._conn._bytes_sent += view.len
        finally:
            PyBuffer_Release(&view)
        if eof:
            self.closed = self.done = True

    def send_eof(self):
        if self.closed:
            return
        if self.c_busy():  # the FIN must follow its bytes
            raise _BusyResourceError(self._activity)
        self.closed = self.done = True
        self._h.c_send_fin()
        self._conn._wake_soon()

    def finish(self):
        """aclose(): FIN after the bytes sent, or a reset if a send in another task is
        cut short (a FIN would make its partial message look complete)."""
        if self.c_busy():
            self.reset(0)
        else:
            self.send_eof()

    def reset(self, error_code):
        check_error_code(error_code)
        if not self.done:
            self._h.reset(error_code)
            self._conn._wake_soon()
            self.reset_by_us = True
        self.closed = self.done = True
        self.wake()


# -- delivering the core's events ------------------------------------------------------------


def endpoint_dispatch(endpoint, bint early=False, bint after_receive=False):
    """``QuicEndpoint.dispatch``: drain the core once and deliver every event.

    A stream event wakes the task waiting on the stream's half concerned, here;
    the rest (a new stream, a connection's events, an abort) goes to Python.
    ``early``: leave the core's signal pending; ``after_receive``: take it only
    if there is one (see ``Endpoint.drain``).
    """
    core = endpoint.core
    for handle, flags in core.drain(early, after_receive):
        if type(handle) is StreamHandle:
            conn = (<StreamHandle>handle).conn.owner
            if conn is None:
                conn = endpoint._adopt((<StreamHandle>handle).conn)
            _on_stream_event(conn, <StreamHandle>handle, flags)
        else:
            endpoint._on_connection_event(handle, flags)
    if not endpoint._stopping and core.thread_error() is not None:
        endpoint._on_thread_failed()


cdef int _on_stream_event(conn, StreamHandle handle, unsigned int flags) except -1:
    # Looked up by ID, not through the handle: a handle pointing back at its
    # stream would make a cycle, and a stream's buffers would then wait for
    # the garbage collector.  A stream we forgot gets no more events.
    ref = conn._streams.get(handle.stream_id)
    stream = ref() if ref is not None else None
    if stream is None:
        if not flags & EV_NEW:
            return 0
        stream = conn._on_new_stream(handle)
    rx = stream._rx
    tx = stream._tx
    if rx is not None and flags & (EV_RX | EV_RESET):
        (<Half>rx).c_wake()
    if tx is not None and flags & (EV_TX | EV_STOP):
        (<Half>tx).c_wake()
    if flags & (EV_RESET | EV_STOP) and stream._aborted is not None:
        stream._on_abort_event()
    return 0


# -- stream bookkeeping (methods of the stream and connection classes) ---------------------


cdef bint _finished(stream) except -1:
    rx = stream._rx
    tx = stream._tx
    return (rx is None or (<ReceiveHalf>rx).done or (<ReceiveHalf>rx).closed) and (
        tx is None or (<SendHalf>tx).done
    )


def stream_finished(stream):
    """``_StreamBase._finished``: nothing more will be read or sent on ``stream``."""
    return _finished(stream)


def stream_release(stream):
    """``_StreamBase._release``: the application is done with ``stream``; a peer's
    stream may give its stream credit back (the core waits until the protocol is
    done with it too)."""
    cdef StreamHandle h = stream._handle
    cdef bint opened_by_client = not (h.stream_id & 1)
    if opened_by_client != h.conn.c.is_client:  # the peer's stream
        h.release()
        stream._conn._wake_soon()


def connection_forget_if_finished(conn, stream):
    """``QuicConnection._forget_if_finished``: a stream finished both ways leaves
    the connection's registry and is released."""
    if _finished(stream):
        conn._streams.pop((<StreamHandle>stream._handle).stream_id, None)
        stream_release(stream)


cdef int _get_bytes(data, Py_buffer* view) except -1:
    """Borrow ``data``'s bytes, as a flat run of bytes whatever its format (a copy
    only if they are not contiguous); release ``view`` after use."""
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except BufferError:  # not contiguous: a strided memoryview, say
        PyObject_GetBuffer(memoryview(data).tobytes(), view, PyBUF_SIMPLE)
    return 0
