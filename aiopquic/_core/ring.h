/*
 * ring.h: the queues that carry bytes and datagrams between the Python thread
 * and the network thread.  A ring has one producer and one consumer and no
 * lock; a datagram queue is a plain list its owner guards with a mutex.
 */
#ifndef AIOPQUIC_RING_H
#define AIOPQUIC_RING_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Single-producer single-consumer byte queue in fixed-size chunks, allocated as
 * bytes arrive and freed as they are read: a stream holds memory for the bytes
 * it buffers, not for its whole window.  head/tail count bytes forever; chunk k
 * holds bytes [k * AQ_CHUNK_SIZE, (k + 1) * AQ_CHUNK_SIZE).
 *
 * 16 KiB and a little: messages are often a power of two plus a short header
 * (an HTTP/3 frame's, a length prefix), and with exactly 16 KiB such a 16 KiB
 * message took two chunks.  1000 streams of 16 KiB + 8 bytes: peak RSS of the
 * sending client 78 -> 67 MiB, of the receiving server 45 -> 39 MiB. */
#define AQ_CHUNK_SIZE (16384 + 256)

typedef struct aq_chunk {
    struct aq_chunk* _Atomic next;
    uint8_t data[AQ_CHUNK_SIZE];
} aq_chunk_t;

/* An endpoint's chunks not in use, kept for the next ring that needs one.  Both
 * threads take and give chunks (Python fills send rings, the network thread
 * receive rings), so a mutex guards the list; held for a few instructions, it
 * costs less than malloc and free of 16 KiB across threads, which also take a
 * lock (glibc's arena's) and, once the heap is trimmed, fault fresh pages in.
 * At most max_free chunks are kept; the rest are freed.
 *
 * An endpoint keeps AQ_POOL_CHUNKS (4 MiB): 1000 streams of 16 KiB each way took
 * half the page faults and 10-15 % less time than with none kept (client and
 * server); keeping 4096 faulted more, as glibc then had less freed memory of
 * its own to reuse for everything else. */
#define AQ_POOL_CHUNKS 256
typedef struct {
    pthread_mutex_t lock;
    aq_chunk_t* free_list; /* linked through next */
    size_t n_free;
    size_t max_free;
    _Atomic int64_t in_use; /* chunks held by rings now */
} aq_chunk_pool_t;

typedef struct {
    size_t cap;            /* most bytes buffered at once, or 0 when the direction does not exist */
    _Atomic uint64_t head; /* bytes written */
    _Atomic uint64_t tail; /* bytes read */
    _Atomic(aq_chunk_t*) first; /* the first chunk, published by the producer */
    aq_chunk_t* wchunk;    /* producer: the last chunk */
    uint64_t wend;         /* producer: end offset of wchunk */
    aq_chunk_t* rchunk;    /* consumer: the chunk holding byte `tail` */
    uint64_t rend;         /* consumer: end offset of rchunk */
    _Atomic(aq_chunk_t*) spare; /* one read chunk handed back for reuse */
    aq_chunk_pool_t* pool;      /* the endpoint's, where chunks come from and go back */
} aq_ring_t;

typedef struct aq_dgram {
    struct aq_dgram* next;
    size_t len;
    int tries;
    uint8_t data[];
} aq_dgram_t;

typedef struct {
    struct aq_dgram* first;
    struct aq_dgram* last;
    size_t count;
} aq_dgram_queue_t;

void aq_dgram_queue_clear(aq_dgram_queue_t* q);
aq_dgram_t* aq_dgram_queue_pop(aq_dgram_queue_t* q);
void aq_dgram_queue_push(aq_dgram_queue_t* q, aq_dgram_t* d);
size_t aq_ring_free(aq_ring_t* r);
void aq_chunk_pool_init(aq_chunk_pool_t* pool, size_t max_free);
void aq_chunk_pool_clear(aq_chunk_pool_t* pool);
void aq_ring_init(aq_ring_t* r, size_t cap, aq_chunk_pool_t* pool);
void aq_ring_read(aq_ring_t* r, uint8_t* dst, size_t n);
void aq_ring_release(aq_ring_t* r);
size_t aq_ring_used(aq_ring_t* r);
int aq_ring_write(aq_ring_t* r, const uint8_t* src, size_t n);

#endif
