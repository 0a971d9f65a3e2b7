/*
 * bridge.c: picoquic callbacks, rings, dirty lists, wake fd, commands.
 *
 * Policy lives in Python.  This file only moves bytes and flags between the
 * network thread (which owns every picoquic object) and the Python thread.
 * See bridge.h for the shared-object model.
 */
#include "bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "picoquic.h"
#include "picoquic_utils.h"
#include "picoquic_packet_loop.h"
#include "picoquic_ext.h"
#include "sessions.h"
#include "trust.h"
#include "autoqlog.h"

/* Our own local error for a client connection picoquic refused to start. */
#define AQ_ERROR_START_FAILED 0x10000000ull

struct aq_endpoint {
    picoquic_quic_t* quic;
    picoquic_network_thread_ctx_t* thread;
    picoquic_packet_loop_param_t param;
    picoquic_thread_fn thread_fn;
    void* thread_arg;
    int wake_fd;
    /* dirty lists */
    _Atomic(aq_node_t*) py_head;
    _Atomic(aq_node_t*) net_head;
    _Atomic int py_wake_pending;
    _Atomic int net_wake_pending;
    /* Python thread: the list being drained */
    aq_node_t* drain_cur;
    /* thread start/exit */
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    int start_state; /* 0 starting, 1 running, -1 exited */
    _Atomic int thread_exited;
    _Atomic int exit_when_closed; /* Python asked the loop to end once the closes are out */
    int thread_rc;
    _Atomic int port;
    _Atomic int64_t chunks; /* stream buffer chunks allocated */
    int stopped;
    int freeing;
    /* network thread only */
    int py_signal_needed;
    aq_conn_t* conns;
    int close_waiters;
    int deferred_closes;
    picoquic_cnx_t** to_delete;
    size_t n_to_delete;
    size_t cap_to_delete;
    /* client session resumption */
    aq_sessions_t* sessions;
    /* configuration */
    int is_server;
    size_t rx_window;
    uint64_t conn_window; /* bytes a connection may buffer (QuicConfig.max_data) */
    size_t tx_cap;
    size_t dgram_queue;
    uint64_t local_max_datagram;
    char** alpns;
    size_t n_alpns;
};

static void aq_run_deferred_closes(aq_endpoint_t* ep);
static void aq_conn_freed(aq_conn_t* c, uint64_t n);
static void aq_conn_consumed(aq_conn_t* c, uint64_t n);

/* ------------------------------------------------------------------ */
/* Rings                                                               */

static void aq_ring_init(aq_ring_t* r, size_t cap, _Atomic int64_t* chunks)
{
    memset(r, 0, sizeof(*r));
    r->cap = cap;
    r->chunks = chunks;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->first, NULL);
    atomic_init(&r->spare, NULL);
}

static void aq_chunk_free(aq_ring_t* r, aq_chunk_t* c)
{
    free(c);
    atomic_fetch_sub_explicit(r->chunks, 1, memory_order_relaxed);
}

/* Free every chunk; only once neither side uses the ring any more. */
static void aq_ring_release(aq_ring_t* r)
{
    /* Chunks before rchunk were freed by the consumer. */
    aq_chunk_t* c = r->rchunk != NULL ? r->rchunk : atomic_load(&r->first);
    while (c != NULL) {
        aq_chunk_t* next = atomic_load_explicit(&c->next, memory_order_relaxed);
        aq_chunk_free(r, c);
        c = next;
    }
    if ((c = atomic_load(&r->spare)) != NULL) {
        aq_chunk_free(r, c);
    }
    r->rchunk = r->wchunk = NULL;
    atomic_store(&r->first, NULL);
    atomic_store(&r->spare, NULL);
}

static size_t aq_ring_used(aq_ring_t* r)
{
    return (size_t)(atomic_load(&r->head) - atomic_load(&r->tail));
}

static size_t aq_ring_free(aq_ring_t* r)
{
    return r->cap - aq_ring_used(r);
}

static aq_chunk_t* aq_chunk_take(aq_ring_t* r)
{
    aq_chunk_t* c = atomic_exchange(&r->spare, NULL);
    if (c == NULL && (c = (aq_chunk_t*)malloc(sizeof(aq_chunk_t))) != NULL) {
        atomic_fetch_add_explicit(r->chunks, 1, memory_order_relaxed);
    }
    return c;
}

/* Producer side: the caller checked the room.  Returns -1, having written
 * nothing, when a chunk cannot be allocated. */
static int aq_ring_write(aq_ring_t* r, const uint8_t* src, size_t n)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t room = r->wchunk != NULL ? r->wend : head - head % AQ_CHUNK_SIZE;
    aq_chunk_t* fresh = NULL;
    /* Get every chunk first, so that running out of memory writes nothing. */
    for (uint64_t end = head + n; room < end; room += AQ_CHUNK_SIZE) {
        aq_chunk_t* c = aq_chunk_take(r);
        if (c == NULL) {
            while (fresh != NULL) {
                aq_chunk_t* next = atomic_load_explicit(&fresh->next, memory_order_relaxed);
                aq_chunk_free(r, fresh);
                fresh = next;
            }
            return -1;
        }
        atomic_store_explicit(&c->next, fresh, memory_order_relaxed);
        fresh = c;
    }
    while (n > 0) {
        if (r->wchunk == NULL || head == r->wend) {
            aq_chunk_t* c = fresh;
            fresh = atomic_load_explicit(&c->next, memory_order_relaxed);
            atomic_store_explicit(&c->next, NULL, memory_order_relaxed);
            if (r->wchunk == NULL) {
                r->wend = head - head % AQ_CHUNK_SIZE + AQ_CHUNK_SIZE;
                atomic_store(&r->first, c);
            }
            else {
                atomic_store(&r->wchunk->next, c);
                r->wend += AQ_CHUNK_SIZE;
            }
            r->wchunk = c;
        }
        size_t k = (size_t)(r->wend - head);
        if (k > n) {
            k = n;
        }
        memcpy(r->wchunk->data + head % AQ_CHUNK_SIZE, src, k);
        head += k;
        src += k;
        n -= k;
    }
    atomic_store(&r->head, head); /* publishes the bytes and the links */
    return 0;
}

/* Consumer side: the caller checked the length; dst NULL skips the bytes.  Chunks
 * read to the end go back to the producer (one is kept as a spare) or are freed. */
static void aq_ring_read(aq_ring_t* r, uint8_t* dst, size_t n)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    if (r->rchunk == NULL) {
        r->rchunk = atomic_load(&r->first);
        r->rend = tail - tail % AQ_CHUNK_SIZE + AQ_CHUNK_SIZE;
    }
    while (n > 0) {
        if (tail == r->rend) {
            /* Bytes lie beyond this chunk, so the producer linked the next one. */
            aq_chunk_t* done = r->rchunk;
            aq_chunk_t* none = NULL;
            r->rchunk = atomic_load(&done->next);
            r->rend += AQ_CHUNK_SIZE;
            if (!atomic_compare_exchange_strong(&r->spare, &none, done)) {
                aq_chunk_free(r, done);
            }
        }
        size_t k = (size_t)(r->rend - tail);
        if (k > n) {
            k = n;
        }
        if (dst != NULL) {
            memcpy(dst, r->rchunk->data + tail % AQ_CHUNK_SIZE, k);
            dst += k;
        }
        tail += k;
        n -= k;
    }
    atomic_store(&r->tail, tail);
}

/* ------------------------------------------------------------------ */
/* Nodes and dirty lists                                               */

static void aq_dgram_queue_clear(aq_dgram_queue_t* q)
{
    while (q->first != NULL) {
        aq_dgram_t* d = q->first;
        q->first = d->next;
        free(d);
    }
    q->last = NULL;
    q->count = 0;
}

static void aq_dgram_queue_push(aq_dgram_queue_t* q, aq_dgram_t* d)
{
    d->next = NULL;
    if (q->last == NULL) {
        q->first = d;
    }
    else {
        q->last->next = d;
    }
    q->last = d;
    q->count++;
}

static aq_dgram_t* aq_dgram_queue_pop(aq_dgram_queue_t* q)
{
    aq_dgram_t* d = q->first;
    if (d != NULL) {
        q->first = d->next;
        if (q->first == NULL) {
            q->last = NULL;
        }
        q->count--;
    }
    return d;
}

void aq_node_ref(aq_node_t* n)
{
    atomic_fetch_add(&n->refcnt, 1);
}

void aq_node_unref(aq_node_t* n)
{
    if (atomic_fetch_sub(&n->refcnt, 1) != 1) {
        return;
    }
    if (n->kind == AQ_KIND_STREAM) {
        aq_stream_t* s = (aq_stream_t*)n;
        size_t unread = s->rx.cap > 0 ? aq_ring_used(&s->rx) : 0;
        if (unread > 0) {
            aq_conn_freed(s->conn, unread); /* never read: free its share */
        }
        aq_ring_release(&s->rx);
        aq_ring_release(&s->tx);
        aq_node_unref(&s->conn->node);
        free(s);
    }
    else {
        aq_conn_t* c = (aq_conn_t*)n;
        aq_dgram_queue_clear(&c->dg_tx);
        aq_dgram_queue_clear(&c->dg_rx);
        pthread_mutex_destroy(&c->dg_lock);
        free(c->sni);
        free(c->alpn_single);
        free(c->close_reason);
        free(c->remote_reason);
        free(c);
    }
}

static void aq_node_init(aq_node_t* n, aq_endpoint_t* ep, int kind)
{
    atomic_init(&n->refcnt, 1);
    n->kind = kind;
    n->ep = ep;
    n->py_next = NULL;
    atomic_init(&n->py_queued, 0);
    atomic_init(&n->py_flags, 0);
    n->net_next = NULL;
    atomic_init(&n->net_queued, 0);
    atomic_init(&n->net_flags, 0);
    n->py_obj = NULL;
}

/* When to wake Python for what was raised: after this packet, or after the whole
 * batch of packets at hand (stream bytes without FIN: let them pile up). */
enum { AQ_SIGNAL_BATCH = 1, AQ_SIGNAL_NOW = 2 };

/* Network thread (or the stopping thread once it joined): raise flags for Python. */
static void aq_push_py_when(aq_node_t* n, uint32_t flags, int when)
{
    aq_endpoint_t* ep = n->ep;
    atomic_fetch_or(&n->py_flags, flags);
    if (atomic_exchange(&n->py_queued, 1) == 0) {
        aq_node_t* old = atomic_load(&ep->py_head);
        aq_node_ref(n);
        do {
            n->py_next = old;
        } while (!atomic_compare_exchange_weak(&ep->py_head, &old, n));
        if (ep->py_signal_needed < when) {
            ep->py_signal_needed = when;
        }
    }
}

static void aq_push_py(aq_node_t* n, uint32_t flags)
{
    aq_push_py_when(n, flags, AQ_SIGNAL_NOW);
}

/* Wake Python if what was raised calls for it by now (AQ_SIGNAL_BATCH: anything). */
static void aq_signal_python(aq_endpoint_t* ep, int when)
{
    if (ep->py_signal_needed < when) {
        return;
    }
    ep->py_signal_needed = 0;
    if (atomic_exchange(&ep->py_wake_pending, 1) == 0) {
        uint64_t one = 1;
        ssize_t r = write(ep->wake_fd, &one, sizeof(one));
        (void)r; /* an eventfd write only fails on counter overflow */
    }
}

/* Python thread: raise command flags for the network thread and wake it. */
static void aq_push_net(aq_node_t* n, uint32_t flags)
{
    aq_endpoint_t* ep = n->ep;
    if (ep->stopped) {
        return;
    }
    atomic_fetch_or(&n->net_flags, flags);
    if (atomic_exchange(&n->net_queued, 1) == 0) {
        aq_node_t* old = atomic_load(&ep->net_head);
        aq_node_ref(n);
        do {
            n->net_next = old;
        } while (!atomic_compare_exchange_weak(&ep->net_head, &old, n));
    }
    if (atomic_exchange(&ep->net_wake_pending, 1) == 0 && ep->thread != NULL) {
        (void)picoquic_wake_up_network_thread(ep->thread);
    }
}

/* Any thread: buffered stream bytes of this connection were read or dropped. */
static void aq_conn_freed(aq_conn_t* c, uint64_t n)
{
    atomic_fetch_sub(&c->rx_buffered, (int64_t)n);
    aq_conn_consumed(c, n);
}

/* Any thread: n more bytes of this connection's streams are done with (read,
 * dropped, or never buffered at all).  Each quarter window, ask for MAX_DATA. */
static void aq_conn_consumed(aq_conn_t* c, uint64_t n)
{
    uint64_t step = c->node.ep->conn_window / 4 + 1;
    uint64_t before = atomic_fetch_add(&c->rx_freed, n);
    if (before / step != (before + n) / step) {
        aq_push_net(&c->node, AQ_CMD_MAX_DATA);
    }
}

/* Detach a whole list and return it oldest first. */
static aq_node_t* aq_detach_fifo(_Atomic(aq_node_t*)* head, int for_py)
{
    aq_node_t* n = atomic_exchange(head, NULL);
    aq_node_t* fifo = NULL;
    while (n != NULL) {
        aq_node_t** link = for_py ? &n->py_next : &n->net_next;
        aq_node_t* next = *link;
        *link = fifo;
        fifo = n;
        n = next;
    }
    return fifo;
}

/* ------------------------------------------------------------------ */
/* Streams and connections: network-thread helpers                     */

static aq_stream_t* aq_stream_alloc(aq_conn_t* c, uint64_t stream_id, int has_rx, int has_tx)
{
    aq_endpoint_t* ep = c->node.ep;
    aq_stream_t* s = (aq_stream_t*)calloc(1, sizeof(aq_stream_t));
    if (s == NULL) {
        return NULL;
    }
    aq_node_init(&s->node, ep, AQ_KIND_STREAM);
    s->stream_id = stream_id;
    s->rx_window = ep->rx_window;
    aq_ring_init(&s->rx, has_rx ? ep->rx_window : 0, &ep->chunks);
    aq_ring_init(&s->tx, has_tx ? ep->tx_cap : 0, &ep->chunks);
    atomic_init(&s->tx_active, 0);
    atomic_init(&s->tx_fin, 0);
    atomic_init(&s->tx_waiting, 0);
    atomic_init(&s->rx_armed, 0);
    atomic_init(&s->rx_fin, 0);
    atomic_init(&s->rx_reset, 0);
    atomic_init(&s->rx_discard, 0);
    atomic_init(&s->tx_stopped, 0);
    aq_node_ref(&c->node);
    s->conn = c;
    return s;
}

static int aq_is_local_stream(aq_conn_t* c, uint64_t stream_id)
{
    return (int)(stream_id & 1) == (c->is_client ? 0 : 1);
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

static void aq_unlink_stream(aq_stream_t* s)
{
    aq_conn_t* c = s->conn;
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
static int aq_register_local(aq_stream_t* s, picoquic_cnx_t* cnx, int activate)
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
    /* The allocation's reference becomes picoquic's. */
    (void)picoquic_set_app_stream_ctx(cnx, stream_id, s);
    (void)picoquic_set_app_flow_control(cnx, stream_id, 1);
    aq_link_stream(c, s);
    aq_push_py(&s->node, AQ_EV_NEW);
    return s;
}

static void aq_link_conn(aq_endpoint_t* ep, aq_conn_t* c)
{
    c->prev = NULL;
    c->next = ep->conns;
    if (ep->conns != NULL) {
        ep->conns->prev = c;
    }
    ep->conns = c;
}

static void aq_unlink_conn(aq_endpoint_t* ep, aq_conn_t* c)
{
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

static aq_conn_t* aq_conn_alloc(aq_endpoint_t* ep, int is_client)
{
    aq_conn_t* c = (aq_conn_t*)calloc(1, sizeof(aq_conn_t));
    if (c == NULL) {
        return NULL;
    }
    aq_node_init(&c->node, ep, AQ_KIND_CONN);
    c->is_client = is_client;
    pthread_mutex_init(&c->dg_lock, NULL);
    atomic_init(&c->dg_tx_dropped, 0);
    atomic_init(&c->dg_rx_dropped, 0);
    atomic_init(&c->dg_rx_armed, 0);
    atomic_init(&c->rx_buffered, 0);
    atomic_init(&c->rx_freed, 0);
    c->next_bidi = is_client ? 0 : 1;
    c->next_uni = is_client ? 2 : 3;
    return c;
}

static void aq_copy_addr(struct sockaddr_storage* dst, const struct sockaddr* src)
{
    memset(dst, 0, sizeof(*dst));
    if (src == NULL) {
        return;
    }
    if (src->sa_family == AF_INET6) {
        memcpy(dst, src, sizeof(struct sockaddr_in6));
    }
    else if (src->sa_family == AF_INET) {
        memcpy(dst, src, sizeof(struct sockaddr_in));
    }
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

static void aq_run_deferred_deletes(aq_endpoint_t* ep)
{
    for (size_t i = 0; i < ep->n_to_delete; i++) {
        picoquic_delete_cnx(ep->to_delete[i]);
    }
    ep->n_to_delete = 0;
}

/* picoquic is done with this connection: drop every reference it held. */
static void aq_conn_teardown(aq_conn_t* c)
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

static void aq_grant_credit(aq_stream_t* s, picoquic_cnx_t* cnx)
{
    uint64_t written = atomic_load(&s->rx.head);
    uint64_t read = atomic_load(&s->rx.tail);
    uint64_t limit = read + s->rx_window;
    if (!s->registered || atomic_load(&s->rx_fin) || atomic_load(&s->rx_reset) || limit <= written) {
        return;
    }
    s->credit_pending = picoquic_open_flow_control(cnx, s->stream_id, limit - written) != 0;
}

/* Connection flow control (picoquic leaves MAX_DATA to us): the peer may have at
 * most conn_window bytes buffered here across all streams.  picoquic counts what
 * arrived (final sizes of reset streams included); the buffers know what is left. */
static void aq_grant_max_data(aq_conn_t* c, picoquic_cnx_t* cnx)
{
    aq_endpoint_t* ep = c->node.ep;
    int64_t buffered = atomic_load(&c->rx_buffered);
    uint64_t room = buffered <= 0 ? ep->conn_window
        : (uint64_t)buffered >= ep->conn_window ? 0 : ep->conn_window - (uint64_t)buffered;
    /* Callers come a quarter window apart (or on a reset): no threshold here, or
     * a declined grant could leave a blocked peer waiting for one that never comes. */
    (void)picoquic_extend_max_data(cnx, picoquic_get_data_received(cnx) + room); /* no-op unless higher */
}

static void aq_snapshot_ready(aq_conn_t* c, picoquic_cnx_t* cnx)
{
    aq_endpoint_t* ep = c->node.ep;
    struct sockaddr* addr = NULL;
    picoquic_tp_t const* tp = picoquic_get_transport_parameters(cnx, 0);
    uint64_t remote = tp != NULL ? tp->max_datagram_frame_size : 0;

    picoquic_get_local_addr(cnx, &addr);
    aq_copy_addr(&c->local_addr, addr);
    addr = NULL;
    picoquic_get_peer_addr(cnx, &addr);
    aq_copy_addr(&c->peer_addr, addr);
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
    c->was_ready = 1;
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

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
        if (atomic_load(&s->tx_waiting) && aq_ring_free(&s->tx) >= s->tx.cap / 4 &&
            atomic_exchange(&s->tx_waiting, 0)) {
            aq_push_py(&s->node, AQ_EV_TX);
        }
    }
    if (is_fin) {
        s->fin_sent = 1;
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

/* ------------------------------------------------------------------ */
/* picoquic callbacks                                                  */

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
        aq_push_py_when(&s->node, AQ_EV_RX, fin ? AQ_SIGNAL_NOW : AQ_SIGNAL_BATCH);
    }
    else if (fin && c->node.ep->py_signal_needed != 0) {
        c->node.ep->py_signal_needed = AQ_SIGNAL_NOW; /* the pending wake-up ends a message */
    }
    return 0;
}

static int aq_conn_cb(picoquic_cnx_t* cnx, uint64_t stream_id, uint8_t* bytes, size_t length,
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
        }
        return 0;
    case picoquic_callback_prepare_to_send:
        return aq_prepare_stream(s, bytes, length);
    case picoquic_callback_stream_released:
        if (s != NULL && s->registered) {
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
    /* The allocation's reference becomes picoquic's. */
    c->cnx = cnx;
    picoquic_set_callback(cnx, aq_conn_cb, c);
    aq_link_conn(ep, c);
    return c;
}

/* Server default callback: first event of a connection the ALPN selector did not see. */
static int aq_default_cb(picoquic_cnx_t* cnx, uint64_t stream_id, uint8_t* bytes, size_t length,
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

static size_t aq_alpn_select(picoquic_quic_t* quic, picoquic_iovec_t* list, size_t count)
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

/* ------------------------------------------------------------------ */
/* Commands (network thread)                                           */

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
        0, c->sni, c->alpn_single, 1);
    if (cnx == NULL) {
        c->closed_reported = 1;
        c->local_error = AQ_ERROR_START_FAILED;
        aq_push_py(&c->node, AQ_EV_CLOSED);
        return;
    }
    picoquic_set_callback(cnx, aq_conn_cb, c);
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
static void aq_run_deferred_closes(aq_endpoint_t* ep)
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
                    (void)picoquic_close_ex(cnx, c->close_code, c->close_reason);
                }
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
    if (flags & AQ_CMD_STOP) {
        (void)picoquic_stop_sending(cnx, s->stream_id, s->stop_code);
        (void)picoquic_set_app_stream_ctx(cnx, s->stream_id, s);
    }
    if ((flags & AQ_CMD_RESET) && !s->reset_sent) {
        s->reset_sent = 1;
        (void)picoquic_reset_stream(cnx, s->stream_id, s->reset_code);
        (void)picoquic_set_app_stream_ctx(cnx, s->stream_id, s);
    }
}

static void aq_process_commands(aq_endpoint_t* ep)
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

static int aq_loop_cb(picoquic_quic_t* quic, picoquic_packet_loop_cb_enum mode, void* ctx, void* argv)
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
    case picoquic_packet_loop_wake_up:
        atomic_store(&ep->net_wake_pending, 0);
        aq_process_commands(ep);
        break;
    case picoquic_packet_loop_after_receive:
        /* Tell Python now, not after the sends (an immediate ACK, say) that follow;
         * plain stream bytes wait for the end of the batch. */
        aq_signal_python(ep, AQ_SIGNAL_NOW);
        break;
    case picoquic_packet_loop_after_send:
        if (ep->n_to_delete > 0) {
            aq_run_deferred_deletes(ep);
        }
        if (ep->deferred_closes > 0) {
            aq_run_deferred_closes(ep);
        }
        if (ep->close_waiters > 0) {
            aq_check_close_sent(ep);
        }
        aq_signal_python(ep, AQ_SIGNAL_BATCH);
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

/* ------------------------------------------------------------------ */
/* The network thread                                                  */

static void aq_thread_exited(void* arg)
{
    aq_endpoint_t* ep = (aq_endpoint_t*)arg;
    picoquic_network_thread_ctx_t* t = (picoquic_network_thread_ctx_t*)ep->thread_arg;
    pthread_mutex_lock(&ep->start_lock);
    ep->thread_rc = t->return_code;
    if (ep->start_state == 0) {
        ep->start_state = -1;
    }
    atomic_store(&ep->thread_exited, 1);
    pthread_cond_broadcast(&ep->start_cond);
    pthread_mutex_unlock(&ep->start_lock);
    atomic_store(&ep->py_wake_pending, 1);
    uint64_t one = 1;
    ssize_t r = write(ep->wake_fd, &one, sizeof(one));
    (void)r;
}

static void* aq_thread_main(void* arg)
{
    aq_endpoint_t* ep = (aq_endpoint_t*)arg;
    /* picoquic's loop ends with pthread_exit(), so report the exit from a cleanup handler. */
    pthread_cleanup_push(aq_thread_exited, ep);
    ep->thread_fn(ep->thread_arg);
    pthread_cleanup_pop(1);
    return NULL;
}

static int aq_thread_create(void** thread_id, picoquic_thread_fn thread_fn, void* arg)
{
    picoquic_network_thread_ctx_t* t = (picoquic_network_thread_ctx_t*)arg;
    aq_endpoint_t* ep = (aq_endpoint_t*)t->loop_callback_ctx;
    sigset_t all, old;
    pthread_t th;
    int ret;
    ep->thread_fn = thread_fn;
    ep->thread_arg = arg;
    /* Signals belong to the Python thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    ret = pthread_create(&th, NULL, aq_thread_main, ep);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ret == 0) {
        *thread_id = (void*)th;
    }
    return ret;
}

static void aq_thread_join(void** thread_id)
{
    pthread_join((pthread_t)*thread_id, NULL);
}

static void aq_thread_setname(char const* name)
{
    pthread_setname_np(pthread_self(), name);
}

/* ------------------------------------------------------------------ */
/* Endpoint (Python thread)                                            */

static pthread_once_t aq_cc_once = PTHREAD_ONCE_INIT;

static void aq_register_cc(void)
{
    picoquic_register_all_congestion_control_algorithms();
}

/* Network thread, during the handshake: remember why the server's chain was refused. */
static void aq_verify_failed(picoquic_cnx_t* cnx, int reason)
{
    aq_conn_t* c = cnx != NULL ? (aq_conn_t*)picoquic_get_callback_context(cnx) : NULL;
    if (c != NULL) {
        c->verify_error = reason;
    }
}

aq_endpoint_t* aq_endpoint_new(const aq_config_t* cfg, char* err, size_t errlen)
{
    aq_endpoint_t* ep = (aq_endpoint_t*)calloc(1, sizeof(aq_endpoint_t));
    picoquic_tp_t tp;
    if (ep == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ep->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&ep->start_lock, NULL);
    pthread_cond_init(&ep->start_cond, NULL);
    ep->stopped = 1; /* until started */
    if (ep->wake_fd < 0) {
        snprintf(err, errlen, "eventfd failed: %s", strerror(errno));
        aq_endpoint_free(ep);
        return NULL;
    }
    ep->is_server = cfg->is_server;
    ep->rx_window = (size_t)cfg->max_stream_data;
    ep->conn_window = cfg->max_data;
    ep->tx_cap = (size_t)cfg->send_buffer;
    ep->dgram_queue = cfg->datagram_queue > 0 ? (size_t)cfg->datagram_queue : 1;
    ep->local_max_datagram = cfg->max_datagram_frame_size;
    ep->n_alpns = cfg->n_alpns;
    ep->alpns = (char**)calloc(cfg->n_alpns ? cfg->n_alpns : 1, sizeof(char*));
    for (size_t i = 0; ep->alpns != NULL && i < cfg->n_alpns; i++) {
        ep->alpns[i] = strdup(cfg->alpns[i]);
    }

    pthread_once(&aq_cc_once, aq_register_cc);
    picoquic_congestion_algorithm_t const* cc = picoquic_get_congestion_algorithm(cfg->congestion_control);
    if (cc == NULL) {
        snprintf(err, errlen, "unknown congestion control algorithm '%s'", cfg->congestion_control);
        aq_endpoint_free(ep);
        return NULL;
    }

    /* picoquic keeps the tickets servers send only when given a ticket file; it
     * reads it at creation (a missing file is fine) and never writes it.  The
     * tickets move to and from the session cache in memory instead. */
    static const char no_ticket_file[] = "";
    ep->sessions = cfg->is_server ? NULL : (aq_sessions_t*)cfg->sessions;
    ep->quic = picoquic_create(cfg->max_connections, cfg->is_server ? cfg->certfile : NULL,
        cfg->is_server ? cfg->keyfile : NULL, cfg->trust != NULL ? NULL : cfg->cafile, NULL,
        cfg->is_server ? aq_default_cb : NULL, ep, NULL, NULL, NULL, picoquic_current_time(),
        NULL, ep->sessions != NULL ? no_ticket_file : NULL, NULL, 0);
    if (ep->quic == NULL) {
        snprintf(err, errlen, "picoquic could not create the context (check the certificate and key files)");
        aq_endpoint_free(ep);
        return NULL;
    }
    if (!cfg->is_server) {
        picoquic_enforce_client_only(ep->quic, 1);
    }
    else {
        picoquic_set_alpn_select_fn_v2(ep->quic, aq_alpn_select);
    }
    picoquic_set_app_max_data(ep->quic, 1); /* see aq_grant_max_data() */
    if (cfg->verify && cfg->trust != NULL && aq_trust_use(ep->quic, (aq_trust_t*)cfg->trust, aq_verify_failed) != 0) {
        snprintf(err, errlen, "out of memory");
        aq_endpoint_free(ep);
        return NULL;
    }
    if (cfg->verify) {
        picoquic_set_client_cert_verification_policy(ep->quic, 1);
    }
    else {
        picoquic_set_null_verifier(ep->quic);
    }

    memcpy(&tp, picoquic_get_default_tp(ep->quic), sizeof(tp));
    tp.initial_max_data = cfg->max_data;
    tp.initial_max_stream_data_bidi_local = cfg->max_stream_data;
    tp.initial_max_stream_data_bidi_remote = cfg->max_stream_data;
    tp.initial_max_stream_data_uni = cfg->max_stream_data;
    tp.initial_max_stream_id_bidir = cfg->max_streams_bidi;
    tp.initial_max_stream_id_unidir = cfg->max_streams_uni;
    tp.max_datagram_frame_size = (uint32_t)cfg->max_datagram_frame_size;
    picoquic_set_default_tp(ep->quic, &tp);
    picoquic_set_default_idle_timeout(ep->quic, cfg->idle_timeout_ms);
    picoquic_set_default_handshake_timeout(ep->quic, cfg->handshake_timeout_us);
    picoquic_set_default_congestion_algorithm(ep->quic, cc);
    if (cfg->keylog_file != NULL && cfg->keylog_file[0] != 0) {
        picoquic_set_key_log_file(ep->quic, cfg->keylog_file);
    }
    if (cfg->qlog_dir != NULL && cfg->qlog_dir[0] != 0) {
        picoquic_set_qlog(ep->quic, cfg->qlog_dir);
    }
    ep->param.socket_buffer_size = cfg->socket_buffer_size;
    return ep;
}

int aq_endpoint_start(aq_endpoint_t* ep, const struct sockaddr* bind_addr, int timeout_ms,
    char* err, size_t errlen)
{
    int ret = 0;
    struct timespec deadline;
    ep->param.local_af = bind_addr->sa_family; /* AF_UNSPEC (0): both families */
    if (bind_addr->sa_family == AF_UNSPEC) {
        /* Any address of both families: one IPv6 and one IPv4 socket, the port
         * (0: any) carried in a sockaddr_in. */
        ep->param.local_port = ntohs(((struct sockaddr_in const*)bind_addr)->sin_port);
    }
    else if (bind_addr->sa_family == AF_INET6) {
        struct sockaddr_in6 const* a6 = (struct sockaddr_in6 const*)bind_addr;
        ep->param.local_port = ntohs(a6->sin6_port);
        if (!IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr)) {
            memcpy(&ep->param.local_addr[0], a6, sizeof(*a6));
        }
    }
    else {
        struct sockaddr_in const* a4 = (struct sockaddr_in const*)bind_addr;
        ep->param.local_port = ntohs(a4->sin_port);
        if (a4->sin_addr.s_addr != htonl(INADDR_ANY)) {
            memcpy(&ep->param.local_addr[0], a4, sizeof(*a4));
        }
    }
    ep->stopped = 0;
    ep->thread = picoquic_start_custom_network_thread(ep->quic, &ep->param, aq_thread_create,
        aq_thread_join, aq_thread_setname, "aiopquic-net", aq_loop_cb, ep, &ret);
    if (ep->thread == NULL) {
        ep->stopped = 1;
        snprintf(err, errlen, "could not start the network thread (error %d)", ret);
        return -1;
    }
    if (timeout_ms == 0) {
        return 0; /* don't wait: a failure to open the socket shows as a thread exit */
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ep->start_lock);
    while (ep->start_state == 0 && ret == 0) {
        ret = pthread_cond_timedwait(&ep->start_cond, &ep->start_lock, &deadline);
    }
    int state = ep->start_state;
    pthread_mutex_unlock(&ep->start_lock);
    if (state != 1) {
        if (state == -1) {
            snprintf(err, errlen, "could not open the UDP socket (picoquic error %d): "
                "is the address in use or not local?", ep->thread_rc);
        }
        else {
            snprintf(err, errlen, "the network thread did not start within %d ms", timeout_ms);
        }
        aq_endpoint_stop(ep);
        return -1;
    }
    return atomic_load(&ep->port);
}

int64_t aq_endpoint_buffer_chunks(aq_endpoint_t* ep)
{
    return atomic_load(&ep->chunks);
}

int aq_endpoint_fd(aq_endpoint_t* ep)
{
    return ep->wake_fd;
}

int aq_endpoint_port(aq_endpoint_t* ep)
{
    return atomic_load(&ep->port);
}

int aq_endpoint_thread_exited(aq_endpoint_t* ep, int* return_code)
{
    if (atomic_load(&ep->thread_exited)) {
        *return_code = ep->thread_rc;
        return 1;
    }
    return 0;
}

static void aq_release_list(_Atomic(aq_node_t*)* head, int for_py)
{
    aq_node_t* n = aq_detach_fifo(head, for_py);
    while (n != NULL) {
        aq_node_t* next = for_py ? n->py_next : n->net_next;
        if (for_py) {
            atomic_store(&n->py_queued, 0);
            atomic_store(&n->py_flags, 0);
        }
        else {
            atomic_store(&n->net_queued, 0);
            atomic_store(&n->net_flags, 0);
        }
        aq_node_unref(n);
        n = next;
    }
}

void aq_endpoint_exit_when_closed(aq_endpoint_t* ep)
{
    if (!ep->stopped && ep->thread != NULL) {
        atomic_store(&ep->exit_when_closed, 1);
        if (atomic_exchange(&ep->net_wake_pending, 1) == 0) {
            (void)picoquic_wake_up_network_thread(ep->thread);
        }
    }
}

void aq_endpoint_stop(aq_endpoint_t* ep)
{
    picoquic_network_thread_ctx_t* t = ep->thread;
    ep->stopped = 1;
    if (t != NULL) {
        ep->thread = NULL;
        picoquic_delete_network_thread(t); /* wakes and joins */
    }
    /* From here on this thread is the only one. */
    aq_release_list(&ep->net_head, 0);
    if (ep->quic != NULL && ep->sessions != NULL) {
        aq_sessions_keep(ep->sessions, ep->quic);
    }
    if (ep->quic != NULL) {
        aq_run_deferred_deletes(ep);
        ep->freeing = 1;
        picoquic_free(ep->quic); /* close callbacks tear the connections down */
        ep->quic = NULL;
    }
    while (ep->conns != NULL) {
        aq_conn_t* c = ep->conns;
        while (c->streams != NULL) {
            aq_unlink_stream(c->streams);
        }
        c->cnx = NULL;
        aq_unlink_conn(ep, c);
        aq_node_unref(&c->node);
    }
}

void aq_endpoint_free(aq_endpoint_t* ep)
{
    if (ep == NULL) {
        return;
    }
    aq_endpoint_stop(ep);
    while (ep->drain_cur != NULL) {
        uint32_t flags;
        aq_node_unref(aq_drain_next(ep, &flags));
    }
    aq_release_list(&ep->py_head, 1);
    if (ep->wake_fd >= 0) {
        close(ep->wake_fd);
    }
    for (size_t i = 0; ep->alpns != NULL && i < ep->n_alpns; i++) {
        free(ep->alpns[i]);
    }
    free(ep->alpns);
    free(ep->to_delete);
    pthread_mutex_destroy(&ep->start_lock);
    pthread_cond_destroy(&ep->start_cond);
    free(ep);
}

size_t aq_drain_begin(aq_endpoint_t* ep)
{
    uint64_t counter;
    size_t n = 0;
    ssize_t r = read(ep->wake_fd, &counter, sizeof(counter));
    (void)r; /* EAGAIN when nothing was signalled */
    atomic_store(&ep->py_wake_pending, 0);
    aq_node_t* fifo = aq_detach_fifo(&ep->py_head, 1);
    /* Append behind what an earlier drain left unread. */
    if (ep->drain_cur == NULL) {
        ep->drain_cur = fifo;
    }
    else {
        aq_node_t* tail = ep->drain_cur;
        while (tail->py_next != NULL) {
            tail = tail->py_next;
        }
        tail->py_next = fifo;
    }
    for (aq_node_t* m = ep->drain_cur; m != NULL; m = m->py_next) {
        n++;
    }
    return n;
}

aq_node_t* aq_drain_next(aq_endpoint_t* ep, uint32_t* flags)
{
    aq_node_t* n = ep->drain_cur;
    if (n == NULL) {
        return NULL;
    }
    ep->drain_cur = n->py_next;
    atomic_store(&n->py_queued, 0);
    *flags = atomic_exchange(&n->py_flags, 0);
    return n;
}

/* ------------------------------------------------------------------ */
/* Connections and streams (Python thread)                             */

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
    aq_push_net(&c->node, AQ_CMD_CONNECT);
    return c;
}

void aq_conn_close(aq_conn_t* c, uint64_t code, const char* reason, uint64_t linger_us)
{
    if (c->close_reason == NULL) {
        c->close_code = code;
        c->close_linger_us = linger_us;
        c->close_reason = strdup(reason != NULL ? reason : "");
        aq_push_net(&c->node, AQ_CMD_CLOSE);
    }
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
    aq_push_net(&c->node, AQ_CMD_DGRAM);
    return dropped;
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
        aq_ring_read(&s->rx, dst, n);
        aq_conn_freed(s->conn, n);
        /* Grant credit in quarter-window steps: few MAX_STREAM_DATA frames, no stall. */
        if ((before + n) / (s->rx_window / 4 + 1) != before / (s->rx_window / 4 + 1) &&
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

size_t aq_stream_writable(aq_stream_t* s)
{
    return s->tx.cap ? aq_ring_free(&s->tx) : 0;
}

static void aq_stream_activate(aq_stream_t* s)
{
    if (atomic_exchange(&s->tx_active, 1) == 0) {
        aq_push_net(&s->node, AQ_CMD_ACTIVATE);
    }
}

ptrdiff_t aq_stream_write(aq_stream_t* s, const uint8_t* src, size_t len)
{
    size_t n = aq_stream_writable(s);
    if (n > len) {
        n = len;
    }
    if (n > 0) {
        if (aq_ring_write(&s->tx, src, n) != 0) {
            return -1;
        }
        aq_stream_activate(s);
    }
    return (ptrdiff_t)n;
}

size_t aq_stream_tx_arm(aq_stream_t* s)
{
    atomic_store(&s->tx_waiting, 1);
    return aq_stream_writable(s);
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
    aq_push_net(&s->node, AQ_CMD_RESET);
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

void aq_stream_stop_sending(aq_stream_t* s, uint64_t code)
{
    s->stop_code = code;
    aq_push_net(&s->node, AQ_CMD_STOP);
}
