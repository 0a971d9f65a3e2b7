/*
 * commands.c: the network thread working for Python: it starts client
 * connections, carries out the commands Python raised on connections and
 * streams (send, credit, stop, reset, release, close...), runs the closes and
 * STOP_SENDING frames that wait, and ties it all to picoquic's packet loop.
 */
#include "internal.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void aq_check_close_sent(aq_endpoint_t* ep);

static void aq_client_start(aq_conn_t* c)
{
    aq_endpoint_t* ep = c->node.ep;
    picoquic_cnx_t* cnx;
    if (ep->sessions == NULL) {
        /* No resumption: forget the tickets earlier connections of this context got. */
        aq_sessions_forget(ep->quic);
    }
    else if (c->sni != NULL && c->alpn_single != NULL) {
        aq_sessions_lend(ep->sessions, ep->quic, c->sni, c->alpn_single);
    }
    cnx = picoquic_create_cnx(ep->quic, picoquic_null_connection_id,
        picoquic_null_connection_id, (struct sockaddr*)&c->connect_addr, picoquic_current_time(),
        ep->version, c->sni, c->alpn_single, 1);
    if (cnx == NULL) {
        c->closed_reported = 1;
        c->local_error = AQ_ERROR_START_FAILED;
        aq_push_py(&c->node, AQ_EV_CLOSED);
        return;
    }
    picoquic_set_callback(cnx, aq_conn_cb, c);
    if (ep->desired_version != 0) {
        picoquic_set_desired_version(cnx, ep->desired_version); /* offered in version_information */
    }
    aq_node_ref(&c->node); /* picoquic's reference */
    c->cnx = cnx;
    aq_link_conn(ep, c);
    if (picoquic_start_client_cnx(cnx) != 0) {
        c->closed_reported = 1;
        c->local_error = AQ_ERROR_START_FAILED;
        aq_push_py(&c->node, AQ_EV_CLOSED);
        aq_conn_teardown(c);
        return;
    }
    aq_sessions_mark_used(cnx); /* the next connection of this context takes another */
    if (ep->early_data && picoquic_is_0rtt_available(cnx) && c->alpn_single != NULL) {
        /* Resuming with a ticket that allows 0-RTT: streams opened from now on
         * send their first bytes in 0-RTT packets (again in 1-RTT if refused). */
        aq_copy_addr(&c->peer_addr, (struct sockaddr*)&c->connect_addr);
        snprintf(c->alpn, sizeof(c->alpn), "%s", c->alpn_single);
        c->early = 1;
        aq_push_py(&c->node, AQ_EV_EARLY);
    }
}

/* Every byte and FIN we were given has been sent and acknowledged (control frames
 * still in flight do not hold the close back). */
static int aq_conn_drained(aq_conn_t* c, picoquic_cnx_t* cnx)
{
    for (aq_stream_t* s = c->streams; s != NULL; s = s->next) {
        if (!s->reset_sent && (aq_ring_used(&s->tx) > 0 || (atomic_load(&s->tx_fin) && !s->fin_sent))) {
            return 0;
        }
    }
    return !aq_stream_data_unacked(cnx);
}

static void aq_conn_command(aq_conn_t* c, uint32_t flags)
{
    aq_endpoint_t* ep = c->node.ep;
    if (flags & AQ_CMD_CONNECT) {
        aq_client_start(c);
    }
    picoquic_cnx_t* cnx = (picoquic_cnx_t*)c->cnx;
    if ((flags & AQ_CMD_MAX_DATA) && cnx != NULL) {
        aq_grant_max_data(c, cnx);
    }
    if ((flags & AQ_CMD_DGRAM) && cnx != NULL) {
        (void)picoquic_mark_datagram_ready(cnx, 1);
    }
    if ((flags & AQ_CMD_KEY_UPDATE) && cnx != NULL) {
        /* Refused (PICOQUIC_ERROR_KEY_ROTATION_NOT_READY) before the handshake is
         * confirmed or while the previous update is unacknowledged: nothing to undo. */
        (void)picoquic_start_key_rotation(cnx);
    }
    if ((flags & AQ_CMD_CLOSE) && !c->close_requested) {
        c->close_requested = 1;
        if (cnx != NULL && picoquic_get_cnx_state(cnx) < picoquic_state_disconnecting) {
            ep->close_waiters++;
            if (c->close_linger_us > 0 && picoquic_get_cnx_state(cnx) == picoquic_state_ready &&
                !aq_conn_drained(c, cnx)) {
                c->close_deferred = 1;
                c->close_deadline = picoquic_current_time() + c->close_linger_us;
                ep->deferred_closes++;
                picoquic_set_app_wake_time(cnx, c->close_deadline);
            }
            else {
                (void)picoquic_close_ex(cnx, c->close_code, c->close_reason);
            }
        }
        else {
            c->close_sent_reported = 1;
            aq_push_py(&c->node, AQ_EV_CLOSE_SENT);
        }
    }
}

/* Run the closes that waited for their streams to drain, once drained or late. */
void aq_run_deferred_closes(aq_endpoint_t* ep)
{
    uint64_t now = picoquic_current_time();
    for (aq_conn_t* c = ep->conns; c != NULL && ep->deferred_closes > 0; c = c->next) {
        picoquic_cnx_t* cnx = (picoquic_cnx_t*)c->cnx;
        if (c->close_deferred && cnx != NULL) {
            /* The peer (or picoquic) closed first: nothing more will be acknowledged,
             * and aq_check_close_sent() reports the close. */
            int closing = picoquic_get_cnx_state(cnx) > picoquic_state_ready;
            if (closing || now >= c->close_deadline || aq_conn_drained(c, cnx)) {
                c->close_deferred = 0;
                ep->deferred_closes--;
                if (!closing) {
                    /* Late: the peer must not take a truncated transfer for a clean end. */
                    c->close_truncated = !aq_conn_drained(c, cnx);
                    (void)picoquic_close_ex(cnx, c->close_truncated ? c->close_late_code : c->close_code,
                        c->close_reason);
                }
            }
        }
    }
}

static void aq_send_stop(aq_stream_t* s, picoquic_cnx_t* cnx)
{
    (void)picoquic_stop_sending(cnx, s->stream_id, s->stop_code);
    (void)picoquic_set_app_stream_ctx(cnx, s->stream_id, s);
}

/* Send the STOP_SENDING frames the peer's new stream limit now allows. */
static void aq_run_deferred_stops(aq_endpoint_t* ep)
{
    for (aq_conn_t* c = ep->conns; c != NULL && ep->deferred_stops > 0; c = c->next) {
        picoquic_cnx_t* cnx = (picoquic_cnx_t*)c->cnx;
        if (c->deferred_stops == 0 || cnx == NULL) {
            continue;
        }
        for (aq_stream_t* s = c->streams; s != NULL && c->deferred_stops > 0; s = s->next) {
            if (s->stop_deferred && !aq_stream_beyond_peer_limit(cnx, s->stream_id)) {
                aq_forget_deferred_stop(s);
                aq_send_stop(s, cnx);
            }
        }
    }
}

static void aq_stream_command(aq_stream_t* s, uint32_t flags)
{
    picoquic_cnx_t* cnx = (picoquic_cnx_t*)s->conn->cnx;
    if (cnx == NULL || picoquic_get_cnx_state(cnx) >= picoquic_state_disconnecting) {
        return;
    }
    if (flags & AQ_CMD_RELEASE) {
        s->app_released = 1;
        aq_return_stream_credit(s, cnx);
    }
    if ((flags & AQ_CMD_ACTIVATE) && !s->reset_sent && !s->fin_sent) {
        int ret = s->registered ? picoquic_mark_active_stream(cnx, s->stream_id, 1, s)
                                : aq_register_local(s, cnx, 1);
        if (ret != 0) {
            /* picoquic refused the stream: tell the sender instead of stalling it. */
            s->tx_stop_code = 0;
            atomic_store(&s->tx_stopped, 1);
            aq_push_py(&s->node, AQ_EV_STOP);
        }
    }
    if (flags & AQ_CMD_CREDIT) {
        aq_grant_credit(s, cnx);
    }
    if ((flags & (AQ_CMD_STOP | AQ_CMD_RESET)) && !s->registered) {
        if (aq_register_local(s, cnx, 0) != 0) {
            return;
        }
    }
    if ((flags & AQ_CMD_STOP) && !s->stop_deferred) {
        if (aq_stream_beyond_peer_limit(cnx, s->stream_id)) {
            /* The peer does not know this stream yet and may not hear of it now. */
            s->stop_deferred = 1;
            s->conn->deferred_stops++;
            s->conn->node.ep->deferred_stops++;
        }
        else {
            aq_send_stop(s, cnx);
        }
    }
    if ((flags & AQ_CMD_RESET) && !s->reset_sent) {
        s->reset_sent = 1;
        (void)picoquic_reset_stream(cnx, s->stream_id, s->reset_code);
        (void)picoquic_set_app_stream_ctx(cnx, s->stream_id, s);
        aq_tx_discard(s);
    }
}

/* Run the commands Python queued, oldest first. */
void aq_process_commands(aq_endpoint_t* ep)
{
    aq_node_t* n = aq_detach_fifo(&ep->net_head, 0);
    while (n != NULL) {
        aq_node_t* next = n->net_next;
        uint32_t flags;
        atomic_store(&n->net_queued, 0);
        flags = atomic_exchange(&n->net_flags, 0);
        if (n->kind == AQ_KIND_CONN) {
            aq_conn_command((aq_conn_t*)n, flags);
        }
        else {
            aq_stream_command((aq_stream_t*)n, flags);
        }
        aq_node_unref(n);
        n = next;
    }
}

static void aq_check_close_sent(aq_endpoint_t* ep)
{
    for (aq_conn_t* c = ep->conns; c != NULL && ep->close_waiters > 0; c = c->next) {
        /* Past disconnecting: our CONNECTION_CLOSE went out, or the peer's came in. */
        if (c->close_requested && !c->close_sent_reported && !c->close_deferred && c->cnx != NULL &&
            picoquic_get_cnx_state((picoquic_cnx_t*)c->cnx) > picoquic_state_disconnecting) {
            c->close_sent_reported = 1;
            ep->close_waiters--;
            aq_push_py(&c->node, AQ_EV_CLOSE_SENT);
        }
    }
}

/* After packets came in: what waited for them, then tell Python now, not after
 * the sends (an immediate ACK, say) that follow; plain stream bytes wait for the
 * end of the batch, or for the socket to run dry (AQ_SIGNAL_IDLE). */
void aq_after_receive(aq_endpoint_t* ep)
{
    if (ep->deferred_stops > 0) {
        aq_run_deferred_stops(ep); /* a MAX_STREAMS may have come */
    }
    aq_signal_python(ep, AQ_SIGNAL_NOW);
}

/* Before the network thread waits (not a mere look at the sockets): a wake-up
 * left for the socket to run dry is due now, unless packets wait there already
 * (then the wait returns at once and the loop takes them first). */
static void aq_signal_python_if_idle(aq_endpoint_t* ep, picoquic_packet_loop_wait_arg_t* wait)
{
    struct pollfd fds[PICOQUIC_PACKET_LOOP_SOCKETS_MAX];
    int sockets[PICOQUIC_PACKET_LOOP_SOCKETS_MAX];
    int n;
    if (ep->py_signal_needed != AQ_SIGNAL_IDLE || wait->delta_t <= 0) {
        return;
    }
    n = picoquic_packet_loop_socket_fds(wait->thread_ctx, sockets, PICOQUIC_PACKET_LOOP_SOCKETS_MAX);
    for (int i = 0; i < n; i++) {
        fds[i].fd = sockets[i];
        fds[i].events = POLLIN;
        fds[i].revents = 0;
    }
    if (n > 0 && poll(fds, (nfds_t)n, 0) > 0) {
        return;
    }
    aq_signal_python(ep, AQ_SIGNAL_IDLE);
}

/* After a batch of sends: what waited for packets to go out, then tell Python. */
void aq_after_send(aq_endpoint_t* ep)
{
    if (ep->n_to_delete > 0) {
        aq_run_deferred_deletes(ep);
    }
    if (ep->deferred_closes > 0) {
        aq_run_deferred_closes(ep);
    }
    if (ep->close_waiters > 0) {
        aq_check_close_sent(ep);
    }
    if (ep->py_signal_needed == AQ_SIGNAL_IDLE) {
        uint64_t now = picoquic_current_time();
        if (ep->idle_signal_since == 0) {
            ep->idle_signal_since = now;
        }
        else if (now - ep->idle_signal_since >= AQ_IDLE_SIGNAL_MAX_US) {
            aq_signal_python(ep, AQ_SIGNAL_IDLE); /* the socket stays busy: no longer */
            return;
        }
    }
    aq_signal_python(ep, AQ_SIGNAL_BATCH);
}

int aq_loop_cb(picoquic_quic_t* quic, picoquic_packet_loop_cb_enum mode, void* ctx, void* argv)
{
    aq_endpoint_t* ep = (aq_endpoint_t*)ctx;
    (void)quic;
    switch (mode) {
    case picoquic_packet_loop_port_update: {
        /* picoquic hands the port over in host byte order here. */
        struct sockaddr* sa = (struct sockaddr*)argv;
        int port = sa->sa_family == AF_INET6 ? ((struct sockaddr_in6*)sa)->sin6_port
                                             : ((struct sockaddr_in*)sa)->sin_port;
        pthread_mutex_lock(&ep->start_lock);
        atomic_store(&ep->port, port);
        ep->start_state = 1;
        pthread_cond_broadcast(&ep->start_cond);
        pthread_mutex_unlock(&ep->start_lock);
        break;
    }
    case picoquic_packet_loop_ready:
        ((picoquic_packet_loop_options_t*)argv)->do_time_check = 1;
        break;
    case picoquic_packet_loop_time_check:
        /* About to sleep until the next timer: from here Python must wake us for a
         * command (aq_wake_net).  One pushed before this look runs now instead. */
        atomic_store(&ep->net_idle, 1);
        if (atomic_load(&ep->net_head) != NULL) {
            atomic_store(&ep->net_idle, 0);
            aq_process_commands(ep);
            ((packet_loop_time_check_arg_t*)argv)->delta_t = 0; /* send what they queued */
        }
        break;
    case picoquic_packet_loop_wake_up:
        atomic_store(&ep->net_idle, 0);
        atomic_store(&ep->net_wake_pending, 0);
        aq_process_commands(ep);
        break;
    case picoquic_packet_loop_after_receive:
        atomic_store(&ep->net_idle, 0);
        ep->window_bytes += *(size_t*)argv;
        aq_after_receive(ep);
        break;
    case picoquic_packet_loop_before_wait:
        aq_signal_python_if_idle(ep, (picoquic_packet_loop_wait_arg_t*)argv);
        if (ep->inline_io) {
            /* From here to after_wait this thread touches neither picoquic nor the
             * bridge's network-thread state: the Python thread may (inline.c). */
            picoquic_packet_loop_wait_arg_t* wait = (picoquic_packet_loop_wait_arg_t*)argv;
            wait->sockets_elsewhere = aq_sockets_elsewhere(ep, wait);
            atomic_store(&ep->net_sleeping, 1);
            if (atomic_load(&ep->python_paused)) {
                /* Python found us awake and stopped waiting on a socket it holds
                 * after aq_sockets_elsewhere looked (see aq_inline_receive): look
                 * again at once rather than leave its datagrams until our timer. */
                wait->delta_t = 0;
            }
            /* Read by Python only under work_lock, which it gets after this. */
            ep->wait_deadline = picoquic_current_time() + (uint64_t)(wait->delta_t > 0 ? wait->delta_t : 0);
            pthread_mutex_unlock(&ep->work_lock);
        }
        break;
    case picoquic_packet_loop_after_wait:
        if (ep->inline_io) {
            /* What waits on a socket Python holds is taken before the next wait. */
            pthread_mutex_lock(&ep->work_lock);
            atomic_store(&ep->net_sleeping, 0);
        }
        break;
    case picoquic_packet_loop_after_send:
        atomic_store(&ep->net_idle, 0);
        ep->window_bytes += *(size_t*)argv;
        aq_after_send(ep);
        /* Commands queued before the exit request (a CLOSE, say) are handled first. */
        if (atomic_load(&ep->exit_when_closed) && ep->close_waiters == 0 &&
            atomic_load(&ep->net_head) == NULL) {
            return PICOQUIC_NO_ERROR_TERMINATE_PACKET_LOOP; /* the exit is reported to Python */
        }
        break;
    default:
        break;
    }
    return 0;
}
