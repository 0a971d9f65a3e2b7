/*
 * api.c: what the Python thread calls on connections and streams: it writes
 * and reads rings and raises commands, and never calls picoquic.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

aq_conn_t* aq_conn_new_client(aq_endpoint_t* ep, const struct sockaddr* peer,
    const char* sni, const char* alpn)
{
    aq_conn_t* c = aq_conn_alloc(ep, 1);
    if (c == NULL) {
        return NULL;
    }
    aq_copy_addr(&c->connect_addr, peer);
    c->sni = sni != NULL ? strdup(sni) : NULL;
    c->alpn_single = alpn != NULL ? strdup(alpn) : NULL;
    if ((sni != NULL && c->sni == NULL) || (alpn != NULL && c->alpn_single == NULL)) {
        aq_node_unref(&c->node); /* frees what was copied */
        return NULL;
    }
    aq_push_net(&c->node, AQ_CMD_CONNECT);
    return c;
}

int aq_conn_close(aq_conn_t* c, uint64_t code, const char* reason, uint64_t linger_us, uint64_t late_code)
{
    if (c->close_reason == NULL) {
        if ((c->close_reason = strdup(reason != NULL ? reason : "")) == NULL) {
            return -1;
        }
        c->close_code = code;
        c->close_linger_us = linger_us;
        c->close_late_code = late_code;
        aq_push_net(&c->node, AQ_CMD_CLOSE);
    }
    return 0;
}

int aq_conn_send_datagram(aq_conn_t* c, const uint8_t* data, size_t len)
{
    aq_endpoint_t* ep = c->node.ep;
    int dropped = 0;
    aq_dgram_t* d = (aq_dgram_t*)malloc(sizeof(aq_dgram_t) + len);
    if (d == NULL) {
        return -1;
    }
    d->len = len;
    d->tries = 0;
    memcpy(d->data, data, len);
    pthread_mutex_lock(&c->dg_lock);
    if (c->dg_tx.count >= ep->dgram_queue) {
        free(aq_dgram_queue_pop(&c->dg_tx));
        atomic_fetch_add(&c->dg_tx_dropped, 1);
        dropped = 1;
    }
    aq_dgram_queue_push(&c->dg_tx, d);
    pthread_mutex_unlock(&c->dg_lock);
    aq_push_net_corked(&c->node, AQ_CMD_DGRAM);
    return dropped;
}

void aq_conn_update_keys(aq_conn_t* c)
{
    aq_push_net(&c->node, AQ_CMD_KEY_UPDATE);
}

void aq_conn_get_stats(aq_conn_t* c, aq_path_stats_t* stats, struct sockaddr_storage* peer)
{
    pthread_mutex_lock(&c->stats_lock);
    *stats = c->stats;
    *peer = c->current_peer_addr;
    pthread_mutex_unlock(&c->stats_lock);
}

aq_dgram_t* aq_conn_pop_datagram(aq_conn_t* c, int arm)
{
    aq_dgram_t* d;
    pthread_mutex_lock(&c->dg_lock);
    d = aq_dgram_queue_pop(&c->dg_rx);
    if (d == NULL && arm) {
        atomic_store(&c->dg_rx_armed, 1);
    }
    pthread_mutex_unlock(&c->dg_lock);
    return d;
}

void aq_dgram_free(aq_dgram_t* d)
{
    free(d);
}

aq_stream_t* aq_stream_new_local(aq_conn_t* c, int is_uni)
{
    uint64_t* next = is_uni ? &c->next_uni : &c->next_bidi;
    aq_stream_t* s = aq_stream_alloc(c, *next, !is_uni, 1);
    if (s != NULL) {
        *next += 4;
    }
    return s;
}

size_t aq_stream_readable(aq_stream_t* s)
{
    return s->rx.cap ? aq_ring_used(&s->rx) : 0;
}

size_t aq_stream_read(aq_stream_t* s, uint8_t* dst, size_t max)
{
    size_t n = aq_stream_readable(s);
    if (n > max) {
        n = max;
    }
    if (n > 0) {
        uint64_t before = atomic_load(&s->rx.tail);
        uint64_t step = atomic_load(&s->rx_window) / 4 + 1;
        aq_ring_read(&s->rx, dst, n);
        aq_conn_freed(s->conn, n);
        /* Grant credit in quarter-window steps: few MAX_STREAM_DATA frames, no stall. */
        if ((before + n) / step != before / step &&
            !atomic_load(&s->rx_fin)) {
            aq_push_net(&s->node, AQ_CMD_CREDIT);
        }
    }
    return n;
}

int aq_stream_rx_arm(aq_stream_t* s)
{
    atomic_store(&s->rx_armed, 1);
    return aq_stream_readable(s) > 0 || atomic_load(&s->rx_fin) || atomic_load(&s->rx_reset);
}

static uint64_t aq_conn_tx_room(aq_conn_t* c)
{
    uint64_t cap = c->node.ep->conn_tx_cap;
    int64_t buffered = atomic_load(&c->tx_buffered);
    return buffered <= 0 ? cap : (uint64_t)buffered >= cap ? 0 : cap - (uint64_t)buffered;
}

size_t aq_stream_writable(aq_stream_t* s)
{
    size_t room = s->tx.cap ? aq_ring_free(&s->tx) : 0;
    uint64_t conn_room = aq_conn_tx_room(s->conn);
    return conn_room < room ? (size_t)conn_room : room;
}

static void aq_stream_activate(aq_stream_t* s)
{
    if (atomic_exchange(&s->tx_active, 1) == 0) {
        aq_push_net_corked(&s->node, AQ_CMD_ACTIVATE);
    }
}

ptrdiff_t aq_stream_write(aq_stream_t* s, const uint8_t* src, size_t len, int all, int fin)
{
    size_t n = all && s->tx.cap ? len : aq_stream_writable(s);
    if (n > len) {
        n = len;
    }
    if (n > 0) {
        if (aq_ring_write(&s->tx, src, n) != 0) {
            return -1;
        }
        atomic_fetch_add(&s->conn->tx_buffered, (int64_t)n);
        s->node.ep->written_since_flush += n;
    }
    if (fin && n == len) {
        /* Before the activation: bytes and FIN reach the network thread in one
         * hand-off (one wake-up), and usually leave in one packet. */
        atomic_store(&s->tx_fin, 1);
    }
    if (n > 0 || (fin && n == len)) {
        aq_stream_activate(s);
    }
    return (ptrdiff_t)n;
}

/* Python is about to wait for room: arm AQ_EV_TX, and the connection's
 * AQ_EV_TX_ROOM only when the connection's cap, not this ring, is what limits.
 * Armed for nothing, TX_ROOM fired at the next packet sent (the cap is rarely
 * near), waking Python once per send batch.  Only Python lowers the connection's
 * room (by writing), so a wait woken by AQ_EV_TX that finds the cap short comes
 * back here and arms it then. */
size_t aq_stream_tx_arm(aq_stream_t* s)
{
    size_t ring_room = s->tx.cap ? aq_ring_free(&s->tx) : 0;
    atomic_store(&s->tx_waiting, 1);
    if (aq_conn_tx_room(s->conn) <= ring_room) {
        atomic_store(&s->conn->tx_room_waiting, 1);
    }
    return aq_stream_writable(s);
}

size_t aq_stream_tx_wake_room(const aq_stream_t* s)
{
    return s->tx.cap / 2;
}

size_t aq_stream_unsent(aq_stream_t* s)
{
    return s->tx.cap ? aq_ring_used(&s->tx) : 0;
}

void aq_stream_send_fin(aq_stream_t* s)
{
    atomic_store(&s->tx_fin, 1);
    aq_stream_activate(s);
}

void aq_stream_reset(aq_stream_t* s, uint64_t code)
{
    s->reset_code = code;
    aq_push_net_corked(&s->node, AQ_CMD_RESET);
}

void aq_stream_discard_rx(aq_stream_t* s)
{
    size_t n;
    if (s->rx.cap == 0) {
        return;
    }
    atomic_store(&s->rx_discard, 1);
    if ((n = aq_ring_used(&s->rx)) > 0) {
        aq_ring_read(&s->rx, NULL, n);
        aq_conn_freed(s->conn, n);
    }
}

void aq_stream_release(aq_stream_t* s)
{
    if (atomic_exchange(&s->release_sent, 1) == 0) {
        aq_push_net_corked(&s->node, AQ_CMD_RELEASE);
    }
}

void aq_stream_stop_sending(aq_stream_t* s, uint64_t code)
{
    s->stop_code = code;
    aq_push_net_corked(&s->node, AQ_CMD_STOP);
}
