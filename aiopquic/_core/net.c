/*
 * net.c: the network thread's picoquic callbacks: they copy bytes and events
 * into the rings and dirty lists, pull stream bytes and datagrams to send, and
 * keep the bridge's connection and stream lists.  Only this thread calls
 * picoquic (and the stopping thread, once it has joined it); commands.c holds
 * what the thread does for Python and its packet-loop callback.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Most stream bytes that wait for the socket to run dry before Python is woken.
 * 512 KiB rather than 256: half the wake-ups of a transfer whose window has
 * grown past 2 MiB.  A trio reader's wake-up costs two task steps (its own and
 * the dispatcher's) and trio's loop pass; 256 MiB downloads gained 3-6 % on
 * trio and were level on asyncio (benchmarks/README, issue 11, stop 34); 1 MiB
 * made asyncio's swing both ways. */
#define AQ_RX_PILE_MAX (512 * 1024)

static void aq_snapshot_path(aq_conn_t* c, picoquic_cnx_t* cnx);

int aq_is_local_stream(aq_conn_t* c, uint64_t stream_id)
{
    return (int)(stream_id & 1) == (c->is_client ? 0 : 1);
}

/* A peer's stream counts toward MAX_STREAMS again once picoquic and Python are
 * both done with it: a peer cannot pile up streams the application never took. */
void aq_return_stream_credit(aq_stream_t* s, picoquic_cnx_t* cnx)
{
    if (s->app_released && s->pq_released && !s->credit_returned && !aq_is_local_stream(s->conn, s->stream_id)) {
        s->credit_returned = 1;
        picoquic_add_remote_stream_credit(cnx, (s->stream_id & 2) == 0);
    }
}

void aq_forget_deferred_stop(aq_stream_t* s)
{
    if (s->stop_deferred) {
        s->stop_deferred = 0;
        s->conn->deferred_stops--;
        s->conn->node.ep->deferred_stops--;
    }
}

static void aq_link_stream(aq_conn_t* c, aq_stream_t* s)
{
    s->prev = NULL;
    s->next = c->streams;
    if (c->streams != NULL) {
        c->streams->prev = s;
    }
    c->streams = s;
    s->registered = 1;
}

void aq_unlink_stream(aq_stream_t* s)
{
    aq_conn_t* c = s->conn;
    aq_forget_deferred_stop(s);
    if (s->prev != NULL) {
        s->prev->next = s->next;
    }
    else {
        c->streams = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    }
    s->prev = s->next = NULL;
    s->registered = 0;
    aq_node_unref(&s->node); /* picoquic's reference */
}

/* Give picoquic a reference to a stream we created; activate it or just attach it. */
int aq_register_local(aq_stream_t* s, picoquic_cnx_t* cnx, int activate)
{
    int ret = activate ? picoquic_mark_active_stream(cnx, s->stream_id, 1, s)
                       : picoquic_set_app_stream_ctx(cnx, s->stream_id, s);
    if (ret == 0) {
        if (s->rx.cap > 0) {
            (void)picoquic_set_app_flow_control(cnx, s->stream_id, 1);
        }
        aq_node_ref(&s->node);
        aq_link_stream(s->conn, s);
    }
    return ret;
}

static aq_stream_t* aq_peer_stream(aq_conn_t* c, picoquic_cnx_t* cnx, uint64_t stream_id)
{
    int is_uni = (stream_id & 2) != 0;
    aq_stream_t* s = aq_stream_alloc(c, stream_id, 1, !is_uni);
    if (s == NULL) {
        return NULL;
    }
    /* Bytes of it came in 0-RTT packets (delivered now, or waiting for a gap to fill). */
    s->early_data = aq_stream_is_0rtt(cnx, stream_id);
    /* The allocation's reference becomes picoquic's. */
    (void)picoquic_set_app_stream_ctx(cnx, stream_id, s);
    (void)picoquic_set_app_flow_control(cnx, stream_id, 1);
    aq_link_stream(c, s);
    aq_push_py(&s->node, AQ_EV_NEW);
    return s;
}

/* A connection's handshake is done, or it is gone before it was. */
static void aq_handshake_over(aq_endpoint_t* ep, aq_conn_t* c)
{
    if (c->in_handshake) {
        c->in_handshake = 0;
        ep->handshaking--;
    }
}

void aq_link_conn(aq_endpoint_t* ep, aq_conn_t* c)
{
    if (!c->was_ready) {
        c->in_handshake = 1; /* what its packets make due goes at once (inline.c) */
        ep->handshaking++;
    }
    c->prev = NULL;
    c->next = ep->conns;
    if (ep->conns != NULL) {
        ep->conns->prev = c;
    }
    ep->conns = c;
}

void aq_unlink_conn(aq_endpoint_t* ep, aq_conn_t* c)
{
    aq_handshake_over(ep, c);
    if (c->prev != NULL) {
        c->prev->next = c->next;
    }
    else {
        ep->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void aq_report_closed(aq_conn_t* c, picoquic_cnx_t* cnx)
{
    uint64_t local = 0, remote = 0, local_app = 0, remote_app = 0;
    char const* reason;
    if (c->closed_reported) {
        return;
    }
    c->closed_reported = 1;
    picoquic_get_close_reasons(cnx, &local, &remote, &local_app, &remote_app);
    if (c->was_ready) {
        aq_snapshot_path(c, cnx); /* the final figures */
    }
    c->local_error = local;
    c->remote_error = remote;
    c->local_app_error = local_app;
    c->remote_app_error = remote_app;
    reason = picoquic_get_remote_error_reason(cnx);
    if (reason != NULL && c->remote_reason == NULL) {
        c->remote_reason = strdup(reason);
    }
    aq_push_py(&c->node, AQ_EV_CLOSED);
}

static int aq_noop_cb(picoquic_cnx_t* cnx, uint64_t stream_id, uint8_t* bytes, size_t length,
    picoquic_call_back_event_t event, void* ctx, void* stream_ctx)
{
    (void)cnx; (void)stream_id; (void)bytes; (void)length; (void)event; (void)ctx; (void)stream_ctx;
    return 0;
}

static void aq_defer_delete(aq_endpoint_t* ep, picoquic_cnx_t* cnx)
{
    if (ep->n_to_delete == ep->cap_to_delete) {
        size_t cap = ep->cap_to_delete ? 2 * ep->cap_to_delete : 8;
        picoquic_cnx_t** grown = (picoquic_cnx_t**)realloc(ep->to_delete, cap * sizeof(*grown));
        if (grown == NULL) {
            return; /* picoquic_free reclaims it at the end */
        }
        ep->to_delete = grown;
        ep->cap_to_delete = cap;
    }
    ep->to_delete[ep->n_to_delete++] = cnx;
}

void aq_run_deferred_deletes(aq_endpoint_t* ep)
{
    for (size_t i = 0; i < ep->n_to_delete; i++) {
        picoquic_delete_cnx(ep->to_delete[i]);
    }
    ep->n_to_delete = 0;
}

/* picoquic is done with this connection: drop every reference it held. */
void aq_conn_teardown(aq_conn_t* c)
{
    aq_endpoint_t* ep = c->node.ep;
    picoquic_cnx_t* cnx = (picoquic_cnx_t*)c->cnx;
    if (cnx == NULL) {
        return;
    }
    aq_report_closed(c, cnx);
    while (c->streams != NULL) {
        aq_unlink_stream(c->streams);
    }
    picoquic_set_callback(cnx, aq_noop_cb, NULL);
    c->cnx = NULL;
    if (c->is_client && !ep->freeing) {
        aq_defer_delete(ep, cnx);
    }
    if (c->close_deferred) {
        c->close_deferred = 0;
        ep->deferred_closes--;
    }
    if (c->close_requested && !c->close_sent_reported) {
        c->close_sent_reported = 1;
        ep->close_waiters--;
        aq_push_py(&c->node, AQ_EV_CLOSE_SENT);
    }
    aq_unlink_conn(ep, c);
    aq_node_unref(&c->node); /* picoquic's reference */
}

/* Receive window autotuning (issue 12), at each credit grant.  The window
 * doubles, at most once per smoothed RTT and up to rx_window_max
 * (QuicConfig.max_stream_window, else max_data), when over an interval of at
 * least one RTT it was what held the transfer back:
 *  - Python read at least half a window per RTT: a window-limited sender
 *    delivers up to one window per RTT, so the window is under twice the
 *    path's bandwidth-delay product; or
 *  - during the interval Python waited for bytes, and at some grant of it
 *    the peer had sent up to (within an eighth of a window of) the limit we
 *    granted: the sender waited for credit, and not because of a slow reader.
 *    This is the case under loss, where each lost packet holds back what
 *    follows it for a round trip or more, so the read rate stays under the
 *    first rule's threshold although the sender sits at the window's edge
 *    (bbr1 at 5 % loss and 40 ms RTT: windows of 2-4 MiB and 67-95 Mbit/s by
 *    the first rule alone, 150-183 with a fixed 16 MiB).
 * A slower reader keeps the window as it is.  Memory stays bounded by the
 * connection's MAX_DATA (aq_grant_max_data), whatever the windows. */
static void aq_autotune_window(aq_stream_t* s, picoquic_cnx_t* cnx, uint64_t read)
{
    aq_endpoint_t* ep = s->conn->node.ep;
    uint64_t window = atomic_load(&s->rx_window);
    uint64_t now, rtt, edge, limit;
    if (window >= ep->rx_window_max) {
        return;
    }
    if (aq_stream_rx_edge(cnx, s->stream_id, &edge, &limit) == 0 && edge + window / 8 >= limit) {
        s->tune_blocked = 1;
    }
    now = picoquic_current_time();
    rtt = picoquic_get_rtt(cnx);
    if (s->tune_time != 0 && now - s->tune_time < rtt) {
        return;
    }
    if (s->tune_time != 0 &&
        ((s->tune_blocked && s->tune_waited) || (read - s->tune_read) * rtt >= (window / 2) * (now - s->tune_time))) {
        window = 2 * window < ep->rx_window_max ? 2 * window : ep->rx_window_max;
        atomic_store(&s->rx_window, window);
        pthread_mutex_lock(&s->conn->stats_lock);
        if (s->conn->stats.stream_window < window) {
            s->conn->stats.stream_window = window;
        }
        pthread_mutex_unlock(&s->conn->stats_lock);
    }
    s->tune_time = now;
    s->tune_read = read;
    s->tune_blocked = 0;
    s->tune_waited = 0;
}

void aq_grant_credit(aq_stream_t* s, picoquic_cnx_t* cnx)
{
    uint64_t written = atomic_load(&s->rx.head);
    uint64_t read = atomic_load(&s->rx.tail);
    uint64_t limit;
    if (!s->registered || atomic_load(&s->rx_fin) || atomic_load(&s->rx_reset)) {
        return;
    }
    aq_autotune_window(s, cnx, read);
    limit = read + atomic_load(&s->rx_window);
    if (limit <= written) {
        return;
    }
    s->credit_pending = picoquic_open_flow_control(cnx, s->stream_id, limit - written) != 0;
}

/* Connection flow control (picoquic leaves MAX_DATA to us): the peer may have at
 * most conn_window bytes buffered here across all streams.  picoquic counts what
 * arrived (final sizes of reset streams included); the buffers know what is left. */
void aq_grant_max_data(aq_conn_t* c, picoquic_cnx_t* cnx)
{
    aq_endpoint_t* ep = c->node.ep;
    int64_t buffered = atomic_load(&c->rx_buffered);
    uint64_t room = buffered <= 0 ? ep->conn_window
        : (uint64_t)buffered >= ep->conn_window ? 0 : ep->conn_window - (uint64_t)buffered;
    /* Callers come a quarter window apart (or on a reset): no threshold here, or
     * a declined grant could leave a blocked peer waiting for one that never comes. */
    (void)picoquic_extend_max_data(cnx, picoquic_get_data_received(cnx) + room); /* no-op unless higher */
}

/* Copy picoquic's view of the path for Python (see aq_path_stats_t). */
static void aq_snapshot_path(aq_conn_t* c, picoquic_cnx_t* cnx)
{
    picoquic_path_quality_t q;
    struct sockaddr* addr = NULL;
    struct sockaddr_storage peer;
    char const* cipher = c->stats.cipher[0] == 0 ? aq_cnx_cipher(cnx) : NULL; /* fixed once known */
    picoquic_get_default_path_quality(cnx, &q);
    picoquic_get_peer_addr(cnx, &addr);
    aq_copy_addr(&peer, addr);
    pthread_mutex_lock(&c->stats_lock);
    if (c->stats.stream_window < c->node.ep->rx_window) {
        c->stats.stream_window = c->node.ep->rx_window;
    }
    c->stats.rtt_us = q.rtt;
    c->stats.rtt_min_us = q.rtt_min;
    c->stats.cwnd = q.cwin;
    c->stats.bytes_in_flight = q.bytes_in_transit;
    c->stats.pacing_rate = q.pacing_rate;
    c->stats.packets_sent = q.sent;
    c->stats.packets_lost = q.lost;
    c->stats.packets_retransmitted = aq_cnx_retransmissions(cnx);
    c->stats.version = aq_cnx_version(cnx);
    if (cipher != NULL) {
        snprintf(c->stats.cipher, sizeof(c->stats.cipher), "%s", cipher);
    }
    if (addr != NULL) {
        if (c->current_peer_addr.ss_family != 0 && memcmp(&peer, &c->current_peer_addr, sizeof(peer)) != 0) {
            c->stats.address_changes++;
        }
        c->current_peer_addr = peer;
    }
    pthread_mutex_unlock(&c->stats_lock);
}

static void aq_snapshot_ready(aq_conn_t* c, picoquic_cnx_t* cnx)
{
    aq_endpoint_t* ep = c->node.ep;
    struct sockaddr* addr = NULL;
    picoquic_tp_t const* tp = picoquic_get_transport_parameters(cnx, 0);
    uint64_t remote = tp != NULL ? tp->max_datagram_frame_size : 0;

    picoquic_get_local_addr(cnx, &addr);
    aq_copy_addr(&c->local_addr, addr);
    if (!c->early) { /* else Python may be reading it: it is the address we connected to */
        addr = NULL;
        picoquic_get_peer_addr(cnx, &addr);
        aq_copy_addr(&c->peer_addr, addr);
    }
    if (c->alpn[0] == 0) {
        char const* alpn = c->alpn_single;
        if (alpn == NULL) {
            alpn = picoquic_tls_get_negotiated_alpn(cnx);
        }
        if (alpn != NULL) {
            snprintf(c->alpn, sizeof(c->alpn), "%s", alpn);
        }
    }
    c->remote_max_datagram = remote < ep->local_max_datagram ? remote : ep->local_max_datagram;
    c->remote_idle_timeout_ms = tp != NULL ? tp->max_idle_timeout : 0;
    c->resumed = picoquic_tls_is_psk_handshake(cnx);
    aq_snapshot_path(c, cnx);
    c->was_ready = 1;
}

/* Network thread: n bytes left this connection's send rings (sent or dropped). */
static void aq_conn_tx_done(aq_conn_t* c, size_t n)
{
    uint64_t cap = c->node.ep->conn_tx_cap;
    int64_t left = atomic_fetch_sub(&c->tx_buffered, (int64_t)n) - (int64_t)n;
    if (atomic_load(&c->tx_room_waiting) && (left <= 0 || (uint64_t)left <= cap - cap / 4) &&
        atomic_exchange(&c->tx_room_waiting, 0)) {
        aq_push_py(&c->node, AQ_EV_TX_ROOM);
    }
}

/* Network thread: bytes that will never be sent (reset): out of the ring now. */
void aq_tx_discard(aq_stream_t* s)
{
    size_t n = s->tx.cap > 0 ? aq_ring_used(&s->tx) : 0;
    if (n > 0) {
        aq_ring_read(&s->tx, NULL, n);
        aq_conn_tx_done(s->conn, n);
    }
}

static int aq_prepare_stream(aq_stream_t* s, void* ctx, size_t room)
{
    size_t avail = 0, n = 0;
    int is_fin = 0, still = 0, rechecked = 0;
    uint8_t* dst;

    if (s == NULL || s->reset_sent || s->fin_sent || s->tx.cap == 0) {
        (void)picoquic_provide_stream_data_buffer(ctx, 0, 0, 0);
        return 0;
    }
    for (;;) {
        int fin = atomic_load(&s->tx_fin);
        avail = aq_ring_used(&s->tx);
        n = avail < room ? avail : room;
        if (n < avail) {
            still = 1;
            break;
        }
        if (fin) {
            is_fin = 1;
            break;
        }
        if (rechecked) {
            still = 1; /* Python wrote while we looked: keep polling */
            break;
        }
        /* The ring empties with this packet: go idle unless Python just wrote. */
        atomic_store(&s->tx_active, 0);
        if (aq_ring_used(&s->tx) == avail && !atomic_load(&s->tx_fin)) {
            break;
        }
        atomic_store(&s->tx_active, 1);
        rechecked = 1;
    }
    dst = picoquic_provide_stream_data_buffer(ctx, n, is_fin, still);
    if (dst == NULL && (n > 0 || is_fin)) {
        return -1;
    }
    if (n > 0) {
        aq_ring_read(&s->tx, dst, n);
        aq_conn_tx_done(s->conn, n);
        if (atomic_load(&s->tx_waiting) && aq_ring_free(&s->tx) >= aq_stream_tx_wake_room(s) &&
            atomic_exchange(&s->tx_waiting, 0)) {
            aq_push_py(&s->node, AQ_EV_TX);
        }
    }
    if (is_fin) {
        s->fin_sent = 1;
        /* Python writes nothing after the FIN: free the ring's last chunk now, not
         * when the stream object goes (an application may keep thousands). */
        aq_ring_release(&s->tx);
    }
    return 0;
}

static void aq_prepare_datagram(aq_conn_t* c, void* ctx, size_t room)
{
    aq_dgram_t* d;
    int more;
    pthread_mutex_lock(&c->dg_lock);
    d = c->dg_tx.first;
    if (d != NULL && d->len > room) {
        /* Too big for this packet: ask again, and give up after a few packets. */
        if (++d->tries < 8) {
            pthread_mutex_unlock(&c->dg_lock);
            (void)picoquic_provide_datagram_buffer_ex(ctx, 0, picoquic_datagram_active_any_path);
            return;
        }
        free(aq_dgram_queue_pop(&c->dg_tx));
        atomic_fetch_add(&c->dg_tx_dropped, 1);
        d = NULL;
    }
    if (d != NULL) {
        (void)aq_dgram_queue_pop(&c->dg_tx);
    }
    more = c->dg_tx.first != NULL;
    pthread_mutex_unlock(&c->dg_lock);
    if (d == NULL) {
        (void)picoquic_provide_datagram_buffer_ex(ctx, 0,
            more ? picoquic_datagram_active_any_path : picoquic_datagram_not_active);
        return;
    }
    uint8_t* dst = picoquic_provide_datagram_buffer_ex(ctx, d->len,
        more ? picoquic_datagram_active_any_path : picoquic_datagram_not_active);
    if (dst != NULL) {
        memcpy(dst, d->data, d->len);
    }
    free(d);
}

static void aq_receive_datagram(aq_conn_t* c, const uint8_t* bytes, size_t length)
{
    aq_endpoint_t* ep = c->node.ep;
    aq_dgram_t* d = (aq_dgram_t*)malloc(sizeof(aq_dgram_t) + length);
    if (d == NULL) {
        atomic_fetch_add(&c->dg_rx_dropped, 1);
        return;
    }
    d->len = length;
    d->tries = 0;
    memcpy(d->data, bytes, length);
    pthread_mutex_lock(&c->dg_lock);
    if (c->dg_rx.count >= ep->dgram_queue) {
        free(aq_dgram_queue_pop(&c->dg_rx));
        atomic_fetch_add(&c->dg_rx_dropped, 1);
    }
    aq_dgram_queue_push(&c->dg_rx, d);
    pthread_mutex_unlock(&c->dg_lock);
    if (atomic_exchange(&c->dg_rx_armed, 0)) {
        aq_push_py(&c->node, AQ_EV_DGRAM);
    }
}

/* Bytes for a reader that waits: wake it after this batch once they make a pile
 * (a quarter of the stream's window, at most AQ_RX_PILE_MAX), else when the
 * socket runs dry.  A transfer's reader then takes its bytes in fewer, larger
 * reads: each wake-up costs the event loop a turn or two. */
static int aq_rx_signal(aq_stream_t* s)
{
    uint64_t pile = atomic_load(&s->rx_window) / 4;
    if (pile > AQ_RX_PILE_MAX) {
        pile = AQ_RX_PILE_MAX;
    }
    return aq_ring_used(&s->rx) >= pile ? AQ_SIGNAL_BATCH : AQ_SIGNAL_IDLE;
}

static int aq_stream_bytes(aq_conn_t* c, picoquic_cnx_t* cnx, aq_stream_t* s, uint64_t stream_id,
    const uint8_t* bytes, size_t length, int fin)
{
    if (picoquic_get_cnx_state(cnx) >= picoquic_state_disconnecting) {
        return 0; /* frames decoded after the close: Python has moved on */
    }
    if (s == NULL) {
        if (aq_is_local_stream(c, stream_id)) {
            return 0; /* a stream of ours we no longer track */
        }
        if ((s = aq_peer_stream(c, cnx, stream_id)) == NULL) {
            return -1;
        }
    }
    if (s->rx.cap == 0) {
        return 0;
    }
    if (length > 0) {
        if (aq_ring_free(&s->rx) < length) {
            return -1; /* the peer ignored our flow control */
        }
        if (atomic_load(&s->rx_discard)) {
            aq_conn_consumed(c, length); /* nobody will read it */
        }
        else if (aq_ring_write(&s->rx, bytes, length) != 0) {
            return -1; /* out of memory */
        }
        else {
            atomic_fetch_add(&c->rx_buffered, (int64_t)length);
        }
    }
    if (fin) {
        atomic_store(&s->rx_fin, 1);
    }
    if (atomic_exchange(&s->rx_armed, 0)) {
        s->tune_waited = 1;
        aq_push_py_when(&s->node, AQ_EV_RX, fin ? AQ_SIGNAL_NOW : aq_rx_signal(s));
    }
    else if (fin && c->node.ep->py_signal_needed != 0) {
        c->node.ep->py_signal_needed = AQ_SIGNAL_NOW; /* the pending wake-up ends a message */
    }
    else if (c->node.ep->py_signal_needed == AQ_SIGNAL_IDLE && (atomic_load(&s->node.py_flags) & AQ_EV_RX) &&
             aq_rx_signal(s) == AQ_SIGNAL_BATCH) {
        c->node.ep->py_signal_needed = AQ_SIGNAL_BATCH; /* this stream's pending wake-up has its pile */
    }
    return 0;
}

int aq_conn_cb(picoquic_cnx_t* cnx, uint64_t stream_id, uint8_t* bytes, size_t length,
    picoquic_call_back_event_t event, void* ctx, void* stream_ctx)
{
    aq_conn_t* c = (aq_conn_t*)ctx;
    aq_stream_t* s = (aq_stream_t*)stream_ctx;
    aq_endpoint_t* ep = c->node.ep;

    switch (event) {
    case picoquic_callback_stream_data:
        return aq_stream_bytes(c, cnx, s, stream_id, bytes, length, 0);
    case picoquic_callback_stream_fin:
        return aq_stream_bytes(c, cnx, s, stream_id, bytes, length, 1);
    case picoquic_callback_stream_reset:
        if (s == NULL) {
            if (aq_is_local_stream(c, stream_id) || (s = aq_peer_stream(c, cnx, stream_id)) == NULL) {
                return 0;
            }
        }
        s->rx_reset_code = picoquic_get_remote_stream_error(cnx, stream_id);
        atomic_store(&s->rx_reset, 1);
        atomic_store(&s->rx_armed, 0);
        aq_push_py(&s->node, AQ_EV_RESET);
        aq_grant_max_data(c, cnx); /* its final size may count bytes that never came */
        return 0;
    case picoquic_callback_stop_sending:
        if (s == NULL) {
            if (aq_is_local_stream(c, stream_id) || (s = aq_peer_stream(c, cnx, stream_id)) == NULL) {
                return 0;
            }
        }
        s->tx_stop_code = picoquic_get_remote_stop_sending_error(cnx, stream_id);
        atomic_store(&s->tx_stopped, 1);
        aq_push_py(&s->node, AQ_EV_STOP);
        if (!s->reset_sent) {
            /* RFC 9000 3.5: answer STOP_SENDING with RESET_STREAM. */
            s->reset_sent = 1;
            (void)picoquic_reset_stream(cnx, stream_id, s->tx_stop_code);
            (void)picoquic_set_app_stream_ctx(cnx, stream_id, s);
            aq_tx_discard(s);
        }
        return 0;
    case picoquic_callback_prepare_to_send:
        return aq_prepare_stream(s, bytes, length);
    case picoquic_callback_stream_released:
        if (s != NULL && s->registered) {
            s->pq_released = 1;
            aq_return_stream_credit(s, cnx);
            aq_unlink_stream(s);
        }
        return 0;
    case picoquic_callback_almost_ready:
    case picoquic_callback_ready:
        /* A client can use the connection at almost_ready (1-RTT keys, server
         * verified); a server waits for ready (the client's Finished). */
        if (event == picoquic_callback_almost_ready && !c->is_client) {
            return 0;
        }
        if (!c->was_ready) {
            aq_handshake_over(c->node.ep, c);
            aq_snapshot_ready(c, cnx);
            aq_push_py(&c->node, AQ_EV_READY);
        }
        aq_grant_max_data(c, cnx);
        for (aq_stream_t* t = c->streams; t != NULL; t = t->next) {
            if (t->credit_pending) {
                aq_grant_credit(t, cnx);
            }
        }
        return 0;
    case picoquic_callback_application_close:
    case picoquic_callback_stateless_reset:
        aq_report_closed(c, cnx);
        return 0;
    case picoquic_callback_close:
        aq_conn_teardown(c);
        return 0;
    case picoquic_callback_app_wakeup:
        if (ep->deferred_closes > 0) {
            aq_run_deferred_closes(ep);
        }
        return 0;
    case picoquic_callback_datagram:
        aq_receive_datagram(c, bytes, length);
        return 0;
    case picoquic_callback_path_quality_changed:
        aq_snapshot_path(c, cnx);
        return 0;
    case picoquic_callback_prepare_datagram:
        aq_prepare_datagram(c, bytes, length);
        return 0;
    case picoquic_callback_request_alpn_list:
        for (size_t i = 0; i < ep->n_alpns; i++) {
            (void)picoquic_add_proposed_alpn(bytes, ep->alpns[i]);
        }
        return 0;
    case picoquic_callback_set_alpn:
        snprintf(c->alpn, sizeof(c->alpn), "%s", (char const*)bytes);
        return 0;
    default:
        return 0;
    }
}

static aq_conn_t* aq_attach_server_cnx(aq_endpoint_t* ep, picoquic_cnx_t* cnx)
{
    aq_conn_t* c = aq_conn_alloc(ep, 0);
    if (c == NULL) {
        return NULL;
    }
    ep->window_handshakes++; /* its handshake's crypto is work for the network thread (inline.c) */
    /* The allocation's reference becomes picoquic's. */
    c->cnx = cnx;
    picoquic_set_callback(cnx, aq_conn_cb, c);
    aq_link_conn(ep, c);
    return c;
}

/* Server default callback: first event of a connection the ALPN selector did not see. */
int aq_default_cb(picoquic_cnx_t* cnx, uint64_t stream_id, uint8_t* bytes, size_t length,
    picoquic_call_back_event_t event, void* ctx, void* stream_ctx)
{
    aq_endpoint_t* ep = (aq_endpoint_t*)ctx;
    aq_conn_t* c;
    if (event == picoquic_callback_close || event == picoquic_callback_application_close ||
        event == picoquic_callback_stateless_reset) {
        return 0;
    }
    if ((c = aq_attach_server_cnx(ep, cnx)) == NULL) {
        return -1;
    }
    return aq_conn_cb(cnx, stream_id, bytes, length, event, c, stream_ctx);
}

size_t aq_alpn_select(picoquic_quic_t* quic, picoquic_iovec_t* list, size_t count)
{
    aq_endpoint_t* ep = (aq_endpoint_t*)picoquic_get_default_callback_context(quic);
    for (size_t i = 0; i < count; i++) {
        for (size_t j = 0; j < ep->n_alpns; j++) {
            size_t len = strlen(ep->alpns[j]);
            if (list[i].len == len && memcmp(list[i].base, ep->alpns[j], len) == 0) {
                picoquic_cnx_t* cnx = picoquic_get_cnx_in_progress(quic);
                if (cnx != NULL) {
                    aq_conn_t* c = NULL;
                    if (picoquic_get_callback_context(cnx) == (void*)ep) {
                        c = aq_attach_server_cnx(ep, cnx);
                    }
                    else {
                        c = (aq_conn_t*)picoquic_get_callback_context(cnx);
                    }
                    if (c != NULL) {
                        snprintf(c->alpn, sizeof(c->alpn), "%s", ep->alpns[j]);
                    }
                }
                return i;
            }
        }
    }
    return count; /* no common protocol: the handshake fails with no_application_protocol */
}
