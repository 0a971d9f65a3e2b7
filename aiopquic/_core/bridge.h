/*
 * bridge.h: the only code that calls picoquic.
 *
 * One endpoint = one picoquic context + one UDP socket + one network thread.
 * The network thread and the Python thread share three kinds of objects:
 *
 *   - byte rings (SPSC): stream bytes, Python -> network (tx) and back (rx);
 *   - "dirty lists": lock-free stacks of connection/stream nodes carrying
 *     pending flag bits, one list per direction.  A node sits on a list at
 *     most once, whatever the number of flags raised, so the lists never
 *     overflow and never drop an event;
 *   - a wake fd (eventfd) the Python side waits on, written at most once per
 *     drain cycle.
 *
 * Every picoquic call happens on the network thread.  Python never waits on
 * a lock held by the network thread, except the tiny datagram queue lock.
 */
#ifndef AIOPQUIC_BRIDGE_H
#define AIOPQUIC_BRIDGE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/socket.h>

typedef struct aq_endpoint aq_endpoint_t;
typedef struct aq_conn aq_conn_t;
typedef struct aq_stream aq_stream_t;

enum { AQ_KIND_CONN = 1, AQ_KIND_STREAM = 2 };

/* Flags raised for Python (network -> Python). */
enum {
    AQ_EV_NEW = 1u << 0,        /* stream: first seen (peer-opened) */
    AQ_EV_RX = 1u << 1,         /* stream: bytes or FIN readable */
    AQ_EV_RESET = 1u << 2,      /* stream: peer sent RESET_STREAM */
    AQ_EV_STOP = 1u << 3,       /* stream: peer sent STOP_SENDING */
    AQ_EV_TX = 1u << 4,         /* stream: room in the send ring */
    AQ_EV_READY = 1u << 8,      /* conn: handshake complete */
    AQ_EV_CLOSED = 1u << 9,     /* conn: closed (by either side, or failed) */
    AQ_EV_DGRAM = 1u << 10,     /* conn: datagram readable */
    AQ_EV_CLOSE_SENT = 1u << 11 /* conn: our CONNECTION_CLOSE went out */
};

/* Commands (Python -> network). */
enum {
    AQ_CMD_ACTIVATE = 1u << 0,  /* stream: bytes or FIN to send */
    AQ_CMD_CREDIT = 1u << 1,    /* stream: grant receive credit */
    AQ_CMD_STOP = 1u << 2,      /* stream: send STOP_SENDING */
    AQ_CMD_RESET = 1u << 3,     /* stream: send RESET_STREAM */
    AQ_CMD_CONNECT = 1u << 8,   /* conn: start the client handshake */
    AQ_CMD_CLOSE = 1u << 9,     /* conn: send CONNECTION_CLOSE */
    AQ_CMD_DGRAM = 1u << 10,    /* conn: datagrams queued */
    AQ_CMD_MAX_DATA = 1u << 11  /* conn: buffers were freed, raise MAX_DATA */
};

typedef struct aq_node {
    _Atomic int refcnt;
    int kind;
    aq_endpoint_t* ep;
    struct aq_node* py_next;
    _Atomic int py_queued;
    _Atomic uint32_t py_flags;
    struct aq_node* net_next;
    _Atomic int net_queued;
    _Atomic uint32_t net_flags;
    void* py_obj; /* borrowed; touched by the Python thread only */
} aq_node_t;

/* Single-producer single-consumer byte queue in fixed-size chunks, allocated as
 * bytes arrive and freed as they are read: a stream holds memory for the bytes
 * it buffers, not for its whole window.  head/tail count bytes forever; chunk k
 * holds bytes [k * AQ_CHUNK_SIZE, (k + 1) * AQ_CHUNK_SIZE). */
#define AQ_CHUNK_SIZE 16384

typedef struct aq_chunk {
    struct aq_chunk* _Atomic next;
    uint8_t data[AQ_CHUNK_SIZE];
} aq_chunk_t;

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
    _Atomic int64_t* chunks;    /* the endpoint's count of allocated chunks */
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

struct aq_stream {
    aq_node_t node;
    aq_conn_t* conn; /* strong reference */
    uint64_t stream_id;
    aq_ring_t rx;
    aq_ring_t tx;
    uint64_t rx_window; /* bytes of credit the peer may have outstanding */
    /* Python -> network */
    _Atomic int tx_active;  /* picoquic polls (or was asked to poll) this stream */
    _Atomic int tx_fin;     /* send FIN once the ring is empty */
    _Atomic int tx_waiting; /* Python waits for ring space */
    uint64_t reset_code;    /* written before AQ_CMD_RESET */
    uint64_t stop_code;     /* written before AQ_CMD_STOP */
    /* network -> Python */
    _Atomic int rx_armed;   /* Python waits for bytes */
    _Atomic int rx_fin;     /* the peer's FIN is in (all bytes are in the ring) */
    _Atomic int rx_reset;
    _Atomic int rx_discard; /* Python will read no more: drop what arrives */
    uint64_t rx_reset_code;
    _Atomic int tx_stopped;
    uint64_t tx_stop_code;
    /* network thread only */
    int registered;         /* picoquic holds a reference (app_stream_ctx) */
    int fin_sent;
    int reset_sent;
    int credit_pending;
    aq_stream_t* prev;
    aq_stream_t* next;
};

struct aq_conn {
    aq_node_t node;
    int is_client;
    /* client connect parameters (read by the network thread on CONNECT) */
    struct sockaddr_storage connect_addr;
    char* sni;
    char* alpn_single;
    /* snapshot written by the network thread before AQ_EV_READY */
    char alpn[256];
    struct sockaddr_storage local_addr;
    struct sockaddr_storage peer_addr;
    uint64_t remote_max_datagram;
    uint64_t remote_idle_timeout_ms; /* the peer's max_idle_timeout (0 = none) */
    /* snapshot written by the network thread before AQ_EV_CLOSED */
    uint64_t local_error;
    uint64_t remote_error;
    uint64_t local_app_error;
    uint64_t remote_app_error;
    char* remote_reason;
    int verify_error; /* why the server's chain was refused: X509_V_ERR_*, AQ_VERIFY_CHAIN_ORDER; 0 */
    int was_ready;
    int resumed; /* the handshake resumed a TLS session */
    /* close request, written by Python before AQ_CMD_CLOSE */
    uint64_t close_code;
    uint64_t close_linger_us; /* wait this long for sent data to be acknowledged */
    char* close_reason; /* picoquic keeps the pointer: freed with the conn */
    /* datagrams */
    pthread_mutex_t dg_lock;
    aq_dgram_queue_t dg_tx;
    aq_dgram_queue_t dg_rx;
    _Atomic uint64_t dg_tx_dropped;
    _Atomic uint64_t dg_rx_dropped;
    _Atomic int dg_rx_armed;
    /* connection flow control: MAX_DATA follows what the application consumed */
    _Atomic int64_t rx_buffered;    /* stream bytes received and not yet read or dropped */
    _Atomic uint64_t rx_freed;      /* bytes read or dropped, ever (MAX_DATA requests each quarter window) */
    /* network thread only */
    void* cnx; /* picoquic_cnx_t*, NULL once picoquic is done with it */
    int closed_reported;
    int close_requested;
    int close_sent_reported;
    int close_deferred;       /* CLOSE waits for the streams to drain */
    uint64_t close_deadline;  /* picoquic time (us) when the wait ends */
    aq_stream_t* streams; /* registered streams */
    aq_conn_t* prev;
    aq_conn_t* next;
    /* Python thread only */
    uint64_t next_bidi;
    uint64_t next_uni;
};

typedef struct {
    int is_server;
    const char* certfile;
    const char* keyfile;
    const char* cafile;
    void* trust; /* an aq_trust_t* (trust.h), used instead of cafile when set */
    void* sessions; /* client: an aq_sessions_t* (sessions.h) to resume from and feed */
    int verify;
    const char* const* alpns;
    size_t n_alpns;
    uint64_t idle_timeout_ms;
    uint64_t handshake_timeout_us;
    uint64_t max_data;
    uint64_t max_stream_data;
    uint64_t send_buffer;
    uint64_t max_streams_bidi;
    uint64_t max_streams_uni;
    uint64_t max_datagram_frame_size;
    uint64_t datagram_queue;
    const char* congestion_control;
    const char* keylog_file;
    const char* qlog_dir;
    int socket_buffer_size;
    uint32_t max_connections;
} aq_config_t;

/* Endpoint: created and configured on the Python thread, then started. */
aq_endpoint_t* aq_endpoint_new(const aq_config_t* cfg, char* err, size_t errlen);
int aq_endpoint_start(aq_endpoint_t* ep, const struct sockaddr* bind_addr, int timeout_ms,
    char* err, size_t errlen);
int aq_endpoint_fd(aq_endpoint_t* ep);
int aq_endpoint_port(aq_endpoint_t* ep);
int aq_endpoint_thread_exited(aq_endpoint_t* ep, int* return_code);
/* End the network thread once every requested CONNECTION_CLOSE has gone out (or the
 * close linger ran out); the exit is signalled on the wake fd like any event. */
void aq_endpoint_exit_when_closed(aq_endpoint_t* ep);
void aq_endpoint_stop(aq_endpoint_t* ep); /* joins the thread, frees picoquic; idempotent */
void aq_endpoint_free(aq_endpoint_t* ep);
int64_t aq_endpoint_buffer_chunks(aq_endpoint_t* ep); /* stream buffer chunks allocated now */

/* Drain: detach the whole event list, then iterate it. */
size_t aq_drain_begin(aq_endpoint_t* ep);
aq_node_t* aq_drain_next(aq_endpoint_t* ep, uint32_t* flags); /* returns a new reference */

void aq_node_ref(aq_node_t* n);
void aq_node_unref(aq_node_t* n);

/* Connections (Python thread). */
aq_conn_t* aq_conn_new_client(aq_endpoint_t* ep, const struct sockaddr* peer,
    const char* sni, const char* alpn);
void aq_conn_close(aq_conn_t* c, uint64_t code, const char* reason, uint64_t linger_us);
int aq_conn_send_datagram(aq_conn_t* c, const uint8_t* data, size_t len);
aq_dgram_t* aq_conn_pop_datagram(aq_conn_t* c, int arm);
void aq_dgram_free(aq_dgram_t* d);

/* Streams (Python thread). */
aq_stream_t* aq_stream_new_local(aq_conn_t* c, int is_uni);
size_t aq_stream_readable(aq_stream_t* s);
size_t aq_stream_read(aq_stream_t* s, uint8_t* dst, size_t max);
int aq_stream_rx_arm(aq_stream_t* s); /* 1 if bytes, FIN or reset are there after arming */
size_t aq_stream_writable(aq_stream_t* s);
ptrdiff_t aq_stream_write(aq_stream_t* s, const uint8_t* src, size_t len); /* -1: out of memory */
size_t aq_stream_tx_arm(aq_stream_t* s); /* arm AQ_EV_TX, return the room now */
size_t aq_stream_unsent(aq_stream_t* s);
void aq_stream_send_fin(aq_stream_t* s);
void aq_stream_reset(aq_stream_t* s, uint64_t code);
void aq_stream_stop_sending(aq_stream_t* s, uint64_t code);
void aq_stream_discard_rx(aq_stream_t* s); /* drop unread bytes, now and to come */

#endif
