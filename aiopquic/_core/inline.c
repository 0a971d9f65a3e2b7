/*
 * inline.c: the event loop's thread doing the network thread's work while that
 * thread sleeps in its poll (inline I/O, QuicConfig.inline_io, issue 11).
 *
 * Why.  A request/response through the network thread costs each side four
 * thread hand-offs: packet in (network thread wakes), events out (the event loop
 * wakes on the wake fd), the answer's commands in (network thread wakes again),
 * and the sends.  Each hand-off is a wake-up, a context switch and, on a small
 * machine, CPU time the two processes fight for.  So while the network thread
 * sleeps, the event loop's thread does the work itself:
 *
 *   - receive: it waits on the UDP socket (Endpoint.inline_socket_fd) as on any
 *     other fd, and when it is readable it reads and processes the datagrams,
 *     sends what is due (ACKs, what the packets freed) and dispatches the events
 *     at once (aq_inline_receive);
 *   - send: at the end of a turn that queued commands it runs them and sends
 *     their packets (aq_inline_flush).
 *
 * The network thread keeps its jobs: timers (retransmissions, delayed ACKs,
 * pacing, idle timeouts), sending what the pacer holds back, and whatever comes
 * while the event loop is busy: while Python holds the sockets, the network
 * thread's poll leaves them out but wakes at least every AQ_HANDBACK_US while a
 * connection is open, and each time it is up (a timer, a command, that
 * deadline) it first takes what waits on the sockets itself.  A busy event loop
 * therefore delays incoming packets by at most that much, never strands them.
 *
 * Thread safety.  ep->work_lock guards the picoquic context and everything the
 * bridge calls "network thread only" (internal.h).  The network thread holds it
 * from its start to its exit, but between the loop's before_wait and after_wait
 * callbacks (commands.c): around its ppoll() and the recvmsg() that may follow
 * (which touch the wake pipe, the sockets' fds, the poll list and the loop's own
 * receive buffer: never picoquic, the send buffer or the bridge).  The Python
 * thread only ever trylocks, so it never waits for the network thread, and works
 * only when net_sleeping says the lock was let go for a wait.  Holding it, it may
 * call picoquic (aq_on_network_thread is set, so the bridge acts on picoquic
 * directly, as on the network thread) and the loop's receive and send paths
 * through our picoquic patch 0024: the sockets, the send buffer, the GSO segment
 * size, which the loop reads only under the lock; datagrams are read into
 * ep->inline_buffer, also under the lock.  Both threads may call recvmsg() on a
 * socket (the network thread only when its poll still watched the sockets as the
 * Python thread took them): the kernel hands each datagram to one of them, and
 * both read without blocking.  Back from its poll, the network thread waits in
 * after_wait until the Python thread is done, then recomputes its timers, as on
 * every pass.  The Python thread holds the GIL meanwhile; the network thread
 * never takes it, so there is no lock-order cycle.
 *
 * Timers.  The network thread's poll timeout was computed before this work; if
 * picoquic now wants to run earlier (the new packets' retransmission timer, an
 * ACK delay, pacing), the network thread is woken to compute it again.
 */
#include "internal.h"

#include <fcntl.h>

/* Most datagrams (or runs of coalesced ones) one inline receive takes. */
#define AQ_INLINE_RECEIVE_MAX 64

/* The Python thread holds work_lock for the network thread; -1 if it is awake
 * (or gone). */
static int aq_inline_enter(aq_endpoint_t* ep, int wait)
{
    if (ep->stopped || ep->thread == NULL) {
        return -1;
    }
    if (wait) {
        pthread_mutex_lock(&ep->work_lock);
    }
    else if (!atomic_load(&ep->net_sleeping) || pthread_mutex_trylock(&ep->work_lock) != 0) {
        return -1;
    }
    if (!atomic_load(&ep->net_sleeping)) {
        /* It woke between the two looks and took the lock back since (or exited). */
        pthread_mutex_unlock(&ep->work_lock);
        return -1;
    }
    aq_on_network_thread = 1;
    return 0;
}

/* Send what is due, then let go of work_lock; wake the network thread if
 * picoquic's next timer is now earlier than the one it sleeps until. */
static void aq_inline_leave(aq_endpoint_t* ep, int wake)
{
    size_t bytes_sent = 0;
    int needs_loop = 0;
    if (picoquic_packet_loop_send_inline(ep->thread, &bytes_sent, &needs_loop) != 0) {
        needs_loop = 1; /* a send error: the loop's own pass reports and handles it */
    }
    aq_after_send(ep);
    wake = wake || needs_loop || ep->deferred_stops > 0 || atomic_load(&ep->exit_when_closed) ||
        picoquic_get_next_wake_time(ep->quic, picoquic_current_time()) < ep->wait_deadline;
    aq_on_network_thread = 0;
    pthread_mutex_unlock(&ep->work_lock);
    if (wake) {
        aq_wake_net(ep);
    }
}

int aq_inline_flush(aq_endpoint_t* ep)
{
    if (aq_inline_enter(ep, 0) != 0) {
        return 0;
    }
    aq_process_commands(ep);
    aq_inline_leave(ep, 0);
    return 1;
}

int aq_inline_receive(aq_endpoint_t* ep)
{
    size_t bytes_received = 0;
    int failed;
    if (aq_inline_enter(ep, 1) != 0) {
        return atomic_load(&ep->thread_exited) || ep->stopped ? -1 : 0; /* gone: nobody will */
    }
    atomic_store(&ep->wake_owed, 0); /* the commands run here */
    aq_process_commands(ep);
    failed = picoquic_packet_loop_receive_inline(ep->thread, ep->inline_buffer, sizeof(ep->inline_buffer),
        AQ_INLINE_RECEIVE_MAX, &bytes_received) != 0;
    if (bytes_received > 0) {
        aq_python_drains_next = 1; /* the caller dispatches at once: no wake fd write */
        aq_after_receive(ep);
        aq_python_drains_next = 0;
    }
    aq_inline_leave(ep, failed);
    return bytes_received > 0 ? 2 : 1;
}

void aq_take_waiting(aq_endpoint_t* ep, picoquic_network_thread_ctx_t* thread_ctx)
{
    size_t bytes_received = 0;
    if (picoquic_packet_loop_receive_inline(thread_ctx, ep->inline_buffer, sizeof(ep->inline_buffer),
            AQ_INLINE_RECEIVE_MAX, &bytes_received) == 0 && bytes_received > 0) {
        aq_after_receive(ep);
    }
}

int aq_inline_dup_socket(aq_endpoint_t* ep)
{
    int fds[2];
    int fd = -1;
    pthread_mutex_lock(&ep->work_lock); /* the socket list is the loop's */
    /* One socket (one address family), or the loop keeps receiving: Python would
     * otherwise leave the second to the network thread's periodic look. */
    if (picoquic_packet_loop_socket_fds(ep->thread, fds, 2) == 1) {
        /* A descriptor of the endpoint's own: the socket outlives the loop's close
         * of its own until Python has stopped waiting on it (aq_endpoint_close_fd). */
        fd = fcntl(fds[0], F_DUPFD_CLOEXEC, 0);
    }
    pthread_mutex_unlock(&ep->work_lock);
    return fd;
}

int aq_inline_socket_fd(aq_endpoint_t* ep)
{
    if (!ep->inline_io || ep->stopped || ep->thread == NULL || atomic_load(&ep->thread_exited)) {
        return -1;
    }
    if (ep->inline_fd < 0) {
        ep->inline_fd = aq_inline_dup_socket(ep); /* a start that did not wait for the socket */
    }
    return ep->inline_fd;
}

void aq_inline_take_sockets(aq_endpoint_t* ep, int take)
{
    if (ep->stopped || ep->thread == NULL) {
        return;
    }
    atomic_store(&ep->sockets_to_python, take);
    /* Wake it so that its next poll leaves the sockets out (or watches them again). */
    (void)picoquic_wake_up_network_thread(ep->thread);
}
