/*
 * inline.c: the Python thread doing the network thread's work for a flush while
 * that thread sleeps in its poll (inline send, issue 11).
 *
 * A flush owes the network thread a wake-up: stream bytes, a FIN, a reset or a
 * datagram were queued during the event loop's turn.  Waking it costs a write to
 * its wake pipe, a thread switch (often to the other CPU) and its poll's return,
 * before it runs the commands and sends; a request/response pays that twice.  So
 * when the network thread sleeps, the Python thread runs the commands and sends
 * the packets itself, and wakes the network thread only if picoquic's next timer
 * is now earlier than the one that thread sleeps until.
 *
 * Thread safety.  ep->work_lock guards the picoquic context and everything the
 * bridge calls "network thread only" (internal.h).  The network thread holds it
 * from its start to its exit, but between the loop's before_wait and after_wait
 * callbacks (commands.c): around ppoll() and the recvmsg() that follows it, code
 * that touches only the wake pipe, the sockets' fds, the poll list and the
 * receive buffer, never picoquic, the send buffer or the bridge.  The Python
 * thread only ever trylocks, so it never waits for the network thread, and only
 * when net_sleeping says the lock was let go for a wait.  Holding it, it may call
 * picoquic (aq_on_network_thread is set, so the bridge acts on picoquic directly,
 * as on the network thread) and the loop's send path through
 * picoquic_packet_loop_send_inline (our picoquic patch 0024): the send buffer,
 * the sockets' fds and source addresses, the GSO segment size, which the loop
 * reads only under the lock.  Back from its poll, the network thread waits in
 * after_wait until the Python thread is done, then recomputes its timers, as on
 * every pass.  The Python thread holds the GIL meanwhile: the network thread
 * never takes it, so there is no lock-order cycle.
 *
 * Timers.  The network thread's poll timeout was computed before this work; if
 * picoquic now wants to run earlier (the new packets' retransmission timer, an
 * ACK delay, pacing), the network thread is woken to compute it again.
 */
#include "internal.h"

/* Do the flush's work inline if the network thread sleeps; 1 if done, 0 if the
 * caller must wake the network thread instead. */
int aq_inline_flush(aq_endpoint_t* ep)
{
    size_t bytes_sent = 0;
    int needs_loop = 0;
    int wake;
    if (!atomic_load(&ep->net_sleeping) || ep->thread == NULL) {
        return 0;
    }
    if (pthread_mutex_trylock(&ep->work_lock) != 0) {
        return 0;
    }
    if (!atomic_load(&ep->net_sleeping)) {
        /* It woke between the two looks and took the lock back since. */
        pthread_mutex_unlock(&ep->work_lock);
        return 0;
    }
    aq_on_network_thread = 1;
    aq_process_commands(ep);
    if (picoquic_packet_loop_send_inline(ep->thread, &bytes_sent, &needs_loop) != 0) {
        needs_loop = 1; /* a send error: the loop's own pass reports and handles it */
    }
    aq_after_send(ep);
    wake = needs_loop || ep->deferred_stops > 0 || atomic_load(&ep->exit_when_closed) ||
        picoquic_get_next_wake_time(ep->quic, picoquic_current_time()) < ep->wait_deadline;
    aq_on_network_thread = 0;
    pthread_mutex_unlock(&ep->work_lock);
    if (wake) {
        aq_wake_net(ep);
    }
    return 1;
}
