/*
 * ring.c: byte rings in chunks of a little over 16 KiB and datagram queues (see ring.h).
 */
#include "ring.h"

#include <stdlib.h>
#include <string.h>

void aq_chunk_pool_init(aq_chunk_pool_t* pool, size_t max_free)
{
    pthread_mutex_init(&pool->lock, NULL);
    pool->free_list = NULL;
    pool->n_free = 0;
    pool->max_free = max_free;
    atomic_init(&pool->in_use, 0);
}

/* Free the kept chunks; once no ring uses the pool any more. */
void aq_chunk_pool_clear(aq_chunk_pool_t* pool)
{
    while (pool->free_list != NULL) {
        aq_chunk_t* c = pool->free_list;
        pool->free_list = atomic_load_explicit(&c->next, memory_order_relaxed);
        free(c);
    }
    pool->n_free = 0;
    pthread_mutex_destroy(&pool->lock);
}

void aq_ring_init(aq_ring_t* r, size_t cap, aq_chunk_pool_t* pool)
{
    memset(r, 0, sizeof(*r));
    r->cap = cap;
    r->pool = pool;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->first, NULL);
    atomic_init(&r->spare, NULL);
}

static void aq_chunk_free(aq_ring_t* r, aq_chunk_t* c)
{
    aq_chunk_pool_t* pool = r->pool;
    atomic_fetch_sub_explicit(&pool->in_use, 1, memory_order_relaxed);
    pthread_mutex_lock(&pool->lock);
    if (pool->n_free < pool->max_free) {
        atomic_store_explicit(&c->next, pool->free_list, memory_order_relaxed);
        pool->free_list = c;
        pool->n_free++;
        c = NULL;
    }
    pthread_mutex_unlock(&pool->lock);
    free(c);
}

/* Free every chunk; only once neither side uses the ring any more. */
void aq_ring_release(aq_ring_t* r)
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

size_t aq_ring_used(aq_ring_t* r)
{
    return (size_t)(atomic_load(&r->head) - atomic_load(&r->tail));
}

/* Room left below the cap (a forced write may take a ring past it). */
size_t aq_ring_free(aq_ring_t* r)
{
    size_t used = aq_ring_used(r);
    return used >= r->cap ? 0 : r->cap - used;
}

static aq_chunk_t* aq_chunk_take(aq_ring_t* r)
{
    aq_chunk_t* c = atomic_exchange(&r->spare, NULL);
    if (c != NULL) {
        return c;
    }
    aq_chunk_pool_t* pool = r->pool;
    pthread_mutex_lock(&pool->lock);
    if ((c = pool->free_list) != NULL) {
        pool->free_list = atomic_load_explicit(&c->next, memory_order_relaxed);
        pool->n_free--;
    }
    pthread_mutex_unlock(&pool->lock);
    if (c == NULL && (c = (aq_chunk_t*)malloc(sizeof(aq_chunk_t))) == NULL) {
        return NULL;
    }
    atomic_fetch_add_explicit(&pool->in_use, 1, memory_order_relaxed);
    return c;
}

/* Producer side: the caller checked the room.  Returns -1, having written
 * nothing, when a chunk cannot be allocated. */
int aq_ring_write(aq_ring_t* r, const uint8_t* src, size_t n)
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
void aq_ring_read(aq_ring_t* r, uint8_t* dst, size_t n)
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

void aq_dgram_queue_clear(aq_dgram_queue_t* q)
{
    while (q->first != NULL) {
        aq_dgram_t* d = q->first;
        q->first = d->next;
        free(d);
    }
    q->last = NULL;
    q->count = 0;
}

void aq_dgram_queue_push(aq_dgram_queue_t* q, aq_dgram_t* d)
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

aq_dgram_t* aq_dgram_queue_pop(aq_dgram_queue_t* q)
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
