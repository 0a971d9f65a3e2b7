/*
 * inline.c: the event loop's thread doing the network thread's I/O while that
 * thread sleeps in its poll (inline I/O, QuicConfig.inline_io, issue 11).
 *
 * Why.  A request/response through the network thread costs each side four
 * thread hand-offs: packet in (network thread wakes), events out (the event loop
 * wakes on the wake fd), the answer's commands in (network thread wakes again),
 * and the sends.  Each is a wake-up, a context switch and, on a small machine,
 * CPU time the two processes fight for.  So while the network thread sleeps,
 * the event loop's thread does light I/O itself:
 *
 *   - receive: it waits on the UDP socket (aq_inline_socket_fd, our own dup of
 *     the loop's one socket) like on any other fd; when it is readable,
 *     aq_inline_receive reads and processes the datagrams and the caller
 *     dispatches the events at once (no wake fd write, aq_python_drains_next).
 *     What they make due now (picoquic ACKs a FIN at once) is left to the flush
 *     that ends the turn (wake_owed), so that it leaves in one packet with the
 *     answer the events call for; but while a connection's handshake is not
 *     done (ep->handshaking) the next flight goes at once, at most
 *     AQ_INLINE_SEND_MAX packets;
 *   - send: at the end of a turn that wrote at most AQ_INLINE_FLUSH_MAX bytes,
 *     aq_inline_flush runs the commands and sends their packets.
 *
 * Who reads the socket.  Python asks for it (aq_inline_take_sockets); the
 * network thread hands it over (sockets_to_python) once the endpoint has lived
 * AQ_SETTLE_US and an AQ_QUIET_US window passed with less than a burst
 * (AQ_INLINE_BURST_BYTES received and sent) and no handshake begun
 * (aq_sockets_elsewhere, before each of its waits).  It takes it back for
 * bursts and transfers: an inline receive that brings a burst, lets more out
 * than a message or two, or begins a handshake; or AQ_BUSY_IN_A_ROW readable
 * sockets in a row that found it awake.  Python then stops waiting on the socket
 * until a dispatch finds it its own again (aq_inline_sockets_held); the network
 * thread pokes the wake fd when it hands the socket over (python_paused).  While
 * Python holds it, the network thread's poll leaves the socket out, but every
 * wait it takes what waits there first (aq_take_waiting), and it wakes at least
 * every handback_us (AQ_HANDBACK_US, backing off to AQ_HANDBACK_MAX_US while it
 * finds nothing) while a connection is open: a busy event loop delays incoming
 * packets by that much at most, never strands them.  Timers, pacing and
 * retransmissions stay the network thread's.
 *
 * Thread safety.  ep->work_lock guards the picoquic context and everything the
 * bridge calls "network thread only" (internal.h).  The network thread holds it
 * from its start to its exit, but between the loop's before_wait and after_wait
 * callbacks (commands.c): around its ppoll() and the recvmsg() that may follow,
 * which touch the wake pipe, the sockets' fds, the poll list and the loop's own
 * receive buffer, never picoquic, the send buffer or the bridge.  The Python
 * thread only ever trylocks, so it never waits for the network thread, and
 * works only when net_sleeping says the lock was let go for a wait.  Holding it,
 * it may call picoquic (aq_on_network_thread is set, so the bridge acts on
 * picoquic directly, as on the network thread) and the loop's receive and send
 * paths through our picoquic patch 0024: the sockets, the send buffer, the GSO
 * segment size, which the loop reads only under the lock; datagrams are read
 * into ep->inline_buffer, also under the lock.  Both threads may call recvmsg()
 * on the socket (the network thread when its poll still watched it as Python
 * took it): the kernel hands each datagram to one of them, and both read
 * without blocking.  Back from its poll, the network thread waits in
 * after_wait until the Python thread is done, then recomputes its timers, as on
 * every pass.  The Python thread holds the GIL meanwhile; the network thread
 * never takes it, so there is no lock-order cycle.  The hand-over flags are
 * atomics; window_*, handback_us and busy_in_a_row each belong to one thread.
 *
 * Timers.  The network thread's poll timeout was computed before this work; if
 * picoquic now wants to run earlier (the new packets' retransmission timer, an
 * ACK delay, pacing, more to send), the network thread is woken to compute it
 * again.
 */
#include "internal.h"

#include <fcntl.h>

/* Most datagrams (or runs of coalesced ones) one inline receive takes. */
#define AQ_INLINE_RECEIVE_MAX 64

/* The Python thread holds work_lock for the network thread; -1 if it is awake
 * (or gone). */
static int aq_inline_enter(aq_endpoint_t* ep)
{
    if (ep->stopped || ep->thread == NULL || !atomic_load(&ep->net_sleeping) ||
        pthread_mutex_trylock(&ep->work_lock) != 0) {
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

/* Send what is due (if `send`), then let go of work_lock; wake the network
 * thread if picoquic's next timer is now earlier than the one it sleeps until.
 * Without `send`, what is due now is owed to the turn's flush (wake_owed).
 * Returns 1 if more is due than a message or two (a burst). */
static int aq_inline_leave(aq_endpoint_t* ep, int wake, int send)
{
    size_t bytes_sent = 0;
    int needs_loop = 0;
    int owed = 0;
    uint64_t now;
    uint64_t next;
    if (send) {
        if (picoquic_packet_loop_send_inline(ep->thread, AQ_INLINE_SEND_MAX, &bytes_sent, &needs_loop) != 0) {
            needs_loop = 1; /* a send error: the loop's own pass reports and handles it */
        }
        aq_after_send(ep);
    }
    now = picoquic_current_time();
    next = picoquic_get_next_wake_time(ep->quic, now);
    if (!send && next <= now) {
        /* The flush at the end of the turn sends it, in one packet with the
         * answer the events just received call for, if any. */
        owed = 1;
        atomic_store(&ep->wake_owed, 1);
        ep->send_owed_by_receive = 1;
    }
    wake = wake || needs_loop || ep->deferred_stops > 0 || atomic_load(&ep->exit_when_closed) ||
        (next + AQ_TIMER_SLACK_US < ep->wait_deadline && !owed);
    aq_on_network_thread = 0;
    pthread_mutex_unlock(&ep->work_lock);
    if (wake) {
        aq_wake_net(ep);
    }
    return send && next <= now;
}

/* The network thread takes the sockets until they are quiet again
 * (aq_sockets_elsewhere), beside the event loop. */
static void aq_sockets_to_network_thread(aq_endpoint_t* ep)
{
    atomic_store(&ep->sockets_to_python, 0);
    aq_wake_net(ep);
}

int aq_inline_flush(aq_endpoint_t* ep, int after_receive)
{
    if (aq_inline_enter(ep) != 0) {
        return 0;
    }
    aq_process_commands(ep);
    if (aq_inline_leave(ep, 0, 1) && after_receive) {
        /* What came lets more out than a message or two (a sender's ACKs): a
         * transfer. */
        aq_sockets_to_network_thread(ep);
    }
    return 1;
}

int aq_inline_receive(aq_endpoint_t* ep, int readable)
{
    size_t bytes_received = 0;
    int failed;
    int burst;
    int send_now;
    unsigned handshakes;
    if (!atomic_load(&ep->sockets_to_python)) {
        return 3; /* the network thread has them */
    }
    if (aq_inline_enter(ep) != 0) {
        if (atomic_load(&ep->thread_exited) || ep->stopped) {
            return -1; /* gone: nobody will take them */
        }
        if (!readable) {
            return 0; /* only a look */
        }
        if (++ep->busy_in_a_row >= AQ_BUSY_IN_A_ROW) {
            /* Always awake: a transfer.  It keeps the sockets until they are quiet
             * (woken, in case it is just going to sleep without them in its poll). */
            aq_sockets_to_network_thread(ep);
            ep->busy_in_a_row = 0;
            return 3;
        }
        /* Awake: it takes them before it sleeps, and then tells Python to wait on
         * the socket again (no spinning on a readable socket meanwhile).  It may
         * have looked at python_paused already and be about to sleep: it looks
         * again after it stores net_sleeping (before_wait, commands.c), and if it
         * stored that before our store here, we see it and wake it, as one of
         * two sequentially consistent store-then-load pairs must. */
        atomic_store(&ep->python_paused, 1);
        if (atomic_load(&ep->net_sleeping)) {
            aq_wake_net(ep);
        }
        return 3;
    }
    ep->busy_in_a_row = 0;
    atomic_store(&ep->wake_owed, 0); /* the commands run here */
    aq_process_commands(ep);
    handshakes = ep->window_handshakes;
    /* A handshake's next flight (a client's Finished, a server's HANDSHAKE_DONE
     * and ticket) goes at once: the peer waits for it. */
    send_now = ep->handshaking > 0;
    failed = picoquic_packet_loop_receive_inline(ep->thread, ep->inline_buffer, sizeof(ep->inline_buffer),
        AQ_INLINE_RECEIVE_MAX, AQ_INLINE_BURST_BYTES, &bytes_received) != 0;
    if (bytes_received > 0) {
        aq_python_drains_next = 1; /* the caller dispatches at once: no wake fd write */
        aq_after_receive(ep);
        aq_python_drains_next = 0;
    }
    /* A burst, or a handshake begun: its crypto goes to the network thread, beside
     * the event loop, as do those that follow it. */
    burst = bytes_received >= AQ_INLINE_BURST_BYTES || ep->window_handshakes != handshakes;
    /* Else what is due now (an ACK of a FIN, say) waits for the turn's flush. */
    if (aq_inline_leave(ep, failed || burst, burst || send_now)) {
        burst = 1; /* what came let more out than a message or two */
    }
    if (burst) {
        aq_sockets_to_network_thread(ep);
    }
    return burst ? (bytes_received > 0 ? 4 : 3) : bytes_received > 0 ? 2 : 1;
}

int aq_take_waiting(aq_endpoint_t* ep, picoquic_network_thread_ctx_t* thread_ctx)
{
    size_t bytes_received = 0;
    if (picoquic_packet_loop_receive_inline(thread_ctx, ep->inline_buffer, sizeof(ep->inline_buffer),
            AQ_INLINE_RECEIVE_MAX, SIZE_MAX, &bytes_received) != 0 || bytes_received == 0) {
        return 0;
    }
    ep->window_bytes += bytes_received;
    aq_after_receive(ep);
    return 1;
}

int aq_inline_dup_socket(aq_endpoint_t* ep)
{
    int fds[2];
    int fd = -1;
    /* The network thread holds work_lock from its start to its first wait, by
     * which time the loop has written its socket list (never to change it again). */
    pthread_mutex_lock(&ep->work_lock);
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

/* Network thread: have Python look at the socket again (a drain follows). */
int aq_sockets_elsewhere(aq_endpoint_t* ep, picoquic_packet_loop_wait_arg_t* wait)
{
    int to_python = atomic_load(&ep->sockets_to_python);
    uint64_t now = picoquic_current_time();
    if (now - ep->window_start >= AQ_QUIET_US) {
        if (!to_python && atomic_load(&ep->python_wants) && ep->window_bytes < AQ_INLINE_BURST_BYTES &&
            ep->window_handshakes == 0 && now - atomic_load(&ep->python_wants_since) >= AQ_SETTLE_US) {
            /* Less than a burst came and went in the last while: back to Python. */
            atomic_store(&ep->sockets_to_python, 1);
            to_python = 1;
            atomic_store(&ep->python_paused, 1);
        }
        ep->window_start = now;
        ep->window_bytes = 0;
        ep->window_handshakes = 0;
    }
    if (!to_python && atomic_load(&ep->python_wants) && wait->delta_t > AQ_QUIET_US) {
        wait->delta_t = AQ_QUIET_US; /* to hand them over when it may */
    }
    if (to_python) {
        if (aq_take_waiting(ep, wait->thread_ctx)) {
            wait->delta_t = 0; /* what came may call for an answer now */
            ep->handback_us = AQ_HANDBACK_US; /* Python lags: look often */
        }
        else if (ep->handback_us < AQ_HANDBACK_MAX_US) {
            ep->handback_us = ep->handback_us == 0 ? AQ_HANDBACK_US : 2 * ep->handback_us;
        }
        if (atomic_exchange(&ep->python_paused, 0)) {
            aq_wake_python(ep); /* its next drain finds the socket its own */
        }
        if (wait->delta_t > (int64_t)ep->handback_us && picoquic_get_first_cnx(ep->quic) != NULL) {
            wait->delta_t = (int64_t)ep->handback_us; /* the event loop may be busy: look */
        }
    }
    return to_python;
}

int aq_inline_sockets_held(aq_endpoint_t* ep)
{
    return atomic_load(&ep->sockets_to_python);
}

int aq_inline_take_sockets(aq_endpoint_t* ep, int take)
{
    if (ep->stopped || ep->thread == NULL) {
        return 0;
    }
    if (take) {
        if (aq_inline_socket_fd(ep) < 0) {
            return 0; /* inline I/O off, or not one socket */
        }
        /* The network thread hands them over once the endpoint has lived a while
         * (a short-lived one is not worth the hand-over) and traffic is light. */
        atomic_store(&ep->python_wants_since, picoquic_current_time());
        atomic_store(&ep->python_wants, 1);
    }
    else {
        atomic_store(&ep->python_wants, 0);
        if (atomic_exchange(&ep->sockets_to_python, 0)) {
            /* Wake it to watch them again: its poll leaves them out. */
            (void)picoquic_wake_up_network_thread(ep->thread);
        }
    }
    return take;
}
