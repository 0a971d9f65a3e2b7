/*
 * events.c: nodes (connections and streams as both threads see them), their
 * reference counts, the dirty lists that carry flags each way, the wake fd and
 * the drain.  The functions say which thread may call them.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Thread_local int aq_on_network_thread;
_Thread_local int aq_python_drains_next;

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
        size_t unsent = s->tx.cap > 0 ? aq_ring_used(&s->tx) : 0;
        if (unread > 0) {
            aq_conn_freed(s->conn, unread); /* never read: free its share */
        }
        if (unsent > 0) {
            atomic_fetch_sub(&s->conn->tx_buffered, (int64_t)unsent);
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
        pthread_mutex_destroy(&c->stats_lock);
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

aq_stream_t* aq_stream_alloc(aq_conn_t* c, uint64_t stream_id, int has_rx, int has_tx)
{
    aq_endpoint_t* ep = c->node.ep;
    aq_stream_t* s = (aq_stream_t*)calloc(1, sizeof(aq_stream_t));
    if (s == NULL) {
        return NULL;
    }
    aq_node_init(&s->node, ep, AQ_KIND_STREAM);
    s->stream_id = stream_id;
    atomic_init(&s->rx_window, ep->rx_window);
    /* The ring may hold the largest window autotuning can grant: chunks come as
     * bytes arrive, and picoquic holds the peer to the window it was given. */
    aq_ring_init(&s->rx, has_rx ? ep->rx_window_max : 0, &ep->chunk_pool);
    aq_ring_init(&s->tx, has_tx ? ep->tx_cap : 0, &ep->chunk_pool);
    atomic_init(&s->tx_active, 0);
    atomic_init(&s->tx_fin, 0);
    atomic_init(&s->tx_waiting, 0);
    atomic_init(&s->release_sent, 0);
    atomic_init(&s->rx_armed, 0);
    atomic_init(&s->rx_fin, 0);
    atomic_init(&s->rx_reset, 0);
    atomic_init(&s->rx_discard, 0);
    atomic_init(&s->tx_stopped, 0);
    aq_node_ref(&c->node);
    s->conn = c;
    return s;
}

aq_conn_t* aq_conn_alloc(aq_endpoint_t* ep, int is_client)
{
    aq_conn_t* c = (aq_conn_t*)calloc(1, sizeof(aq_conn_t));
    if (c == NULL) {
        return NULL;
    }
    aq_node_init(&c->node, ep, AQ_KIND_CONN);
    c->is_client = is_client;
    pthread_mutex_init(&c->dg_lock, NULL);
    pthread_mutex_init(&c->stats_lock, NULL);
    atomic_init(&c->dg_tx_dropped, 0);
    atomic_init(&c->dg_rx_dropped, 0);
    atomic_init(&c->dg_rx_armed, 0);
    atomic_init(&c->rx_buffered, 0);
    atomic_init(&c->tx_buffered, 0);
    atomic_init(&c->tx_room_waiting, 0);
    atomic_init(&c->rx_freed, 0);
    c->next_bidi = is_client ? 0 : 1;
    c->next_uni = is_client ? 2 : 3;
    return c;
}

void aq_copy_addr(struct sockaddr_storage* dst, const struct sockaddr* src)
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

/* Network thread (or the stopping thread once it joined): raise flags for Python. */
void aq_push_py_when(aq_node_t* n, uint32_t flags, int when)
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

void aq_push_py(aq_node_t* n, uint32_t flags)
{
    aq_push_py_when(n, flags, AQ_SIGNAL_NOW);
}

/* Wake Python if what was raised calls for it by now (AQ_SIGNAL_IDLE: anything). */
void aq_signal_python(aq_endpoint_t* ep, int when)
{
    if (ep->py_signal_needed < when) {
        return;
    }
    ep->py_signal_needed = 0;
    ep->idle_signal_since = 0;
    if (aq_python_drains_next) {
        return; /* an inline receive: the event loop's thread drains right after it */
    }
    aq_wake_python(ep);
}

void aq_wake_python(aq_endpoint_t* ep)
{
    if (atomic_exchange(&ep->py_wake_pending, 1) == 0) {
        uint64_t one = 1;
        ssize_t r = write(ep->wake_fd, &one, sizeof(one));
        (void)r; /* an eventfd write only fails on counter overflow */
    }
}

/* Python thread: raise command flags for the network thread; 0 if stopped. */
static int aq_queue_net(aq_node_t* n, uint32_t flags)
{
    aq_endpoint_t* ep = n->ep;
    if (ep->stopped) {
        return 0;
    }
    atomic_fetch_or(&n->net_flags, flags);
    if (atomic_exchange(&n->net_queued, 1) == 0) {
        aq_node_t* old = atomic_load(&ep->net_head);
        aq_node_ref(n);
        do {
            n->net_next = old;
        } while (!atomic_compare_exchange_weak(&ep->net_head, &old, n));
    }
    return 1;
}

/* Python thread: wake the network thread unless it is awake (it looks at
 * net_head before it sleeps again) or a wake-up is already on its way.  No
 * command is stranded: the network thread stores net_idle = 1 and then loads
 * net_head, the caller pushed to net_head and then loads net_idle, all
 * sequentially consistent, so one of the two sees the other's store. */
void aq_wake_net(aq_endpoint_t* ep)
{
    if (!atomic_load(&ep->net_idle)) {
        return;
    }
    if (atomic_exchange(&ep->net_wake_pending, 1) == 0 && ep->thread != NULL) {
        (void)picoquic_wake_up_network_thread(ep->thread);
    }
}

/* Python thread: raise command flags for the network thread and wake it. */
void aq_push_net(aq_node_t* n, uint32_t flags)
{
    if (aq_queue_net(n, flags)) {
        aq_wake_net(n->ep);
    }
}

/* Python thread: the same, but while the endpoint is corked the wake-up is only
 * owed: Python pays it once for all the writes of its event-loop turn, so a burst
 * of responses costs one wake-up (a syscall and a context switch) instead of one
 * each, and picoquic can pack their frames into fewer packets.  Stream writes,
 * FINs, resets, STOP_SENDING, stream releases and datagrams go this way; opening
 * and closing connections, credit and key updates wake the thread at once. */
void aq_push_net_corked(aq_node_t* n, uint32_t flags)
{
    if (aq_queue_net(n, flags)) {
        if (n->ep->corked) {
            atomic_store(&n->ep->wake_owed, 1);
        }
        else {
            aq_wake_net(n->ep);
        }
    }
}

/* Any thread: buffered stream bytes of this connection were read or dropped. */
void aq_conn_freed(aq_conn_t* c, uint64_t n)
{
    atomic_fetch_sub(&c->rx_buffered, (int64_t)n);
    aq_conn_consumed(c, n);
}

/* Any thread: n more bytes of this connection's streams are done with (read,
 * dropped, or never buffered at all).  Each quarter window, raise MAX_DATA: at
 * once on the network thread, else through a command. */
void aq_conn_consumed(aq_conn_t* c, uint64_t n)
{
    uint64_t step = c->node.ep->conn_window / 4 + 1;
    uint64_t before = atomic_fetch_add(&c->rx_freed, n);
    if (before / step != (before + n) / step) {
        if (!aq_on_network_thread) {
            aq_push_net(&c->node, AQ_CMD_MAX_DATA);
        }
        else if (c->cnx != NULL) {
            aq_grant_max_data(c, (picoquic_cnx_t*)c->cnx);
        }
    }
}

/* Detach a whole list and return it oldest first. */
aq_node_t* aq_detach_fifo(_Atomic(aq_node_t*)* head, int for_py)
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

void aq_release_list(_Atomic(aq_node_t*)* head, int for_py)
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

static void aq_read_wake_fd(aq_endpoint_t* ep)
{
    uint64_t counter;
    if (ep->wake_fd >= 0) {
        ssize_t r = read(ep->wake_fd, &counter, sizeof(counter));
        (void)r; /* EAGAIN when nothing was signalled */
    }
}

size_t aq_drain_begin(aq_endpoint_t* ep)
{
    aq_read_wake_fd(ep);
    atomic_store(&ep->py_wake_pending, 0);
    return aq_drain_collect(ep);
}

size_t aq_drain_if_signalled(aq_endpoint_t* ep)
{
    /* As aq_drain_begin: the read first, then the flag.  Clearing the flag first
     * (as this did until stop 33) let a signal raised between the two (the
     * network thread's exchange and write) have its write consumed by our read
     * while its flag stayed set: no signal wrote the fd again, the fd's reader
     * never woke, and the endpoint's events waited for ever (a server stalled
     * once in ~100,000 connections of the handshake benchmark).  In this order a
     * signal raised after the read keeps the fd readable (its write comes after
     * our read) or finds the flag set and writes nothing, and the collect below
     * takes its events; a write still to come leaves the fd readable for the
     * fd's own reader. */
    if (atomic_load(&ep->py_wake_pending)) {
        aq_read_wake_fd(ep);
        atomic_store(&ep->py_wake_pending, 0);
    }
    return aq_drain_collect(ep);
}

int aq_endpoint_signalled(aq_endpoint_t* ep)
{
    return atomic_load(&ep->py_wake_pending);
}

size_t aq_drain_collect(aq_endpoint_t* ep)
{
    size_t n = 0;
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
