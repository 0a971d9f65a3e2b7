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
 *
 * This header is what Cython sees; internal.h lists the files behind it.
 */
#ifndef AIOPQUIC_BRIDGE_H
#define AIOPQUIC_BRIDGE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/socket.h>

#include "ring.h"

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
    AQ_EV_CLOSE_SENT = 1u << 11, /* conn: our CONNECTION_CLOSE went out */
    AQ_EV_TX_ROOM = 1u << 12,   /* conn: room again below the connection's send cap */
    AQ_EV_EARLY = 1u << 13      /* conn (client): 0-RTT keys, streams may be used before READY */
};

/* Commands (Python -> network). */
enum {
    AQ_CMD_ACTIVATE = 1u << 0,  /* stream: bytes or FIN to send */
    AQ_CMD_CREDIT = 1u << 1,    /* stream: grant receive credit */
    AQ_CMD_STOP = 1u << 2,      /* stream: send STOP_SENDING */
    AQ_CMD_RESET = 1u << 3,     /* stream: send RESET_STREAM */
    AQ_CMD_RELEASE = 1u << 4,   /* stream: Python is done with it (a peer's: its credit may go back) */
    AQ_CMD_CONNECT = 1u << 8,   /* conn: start the client handshake */
    AQ_CMD_CLOSE = 1u << 9,     /* conn: send CONNECTION_CLOSE */
    AQ_CMD_DGRAM = 1u << 10,    /* conn: datagrams queued */
    AQ_CMD_MAX_DATA = 1u << 11, /* conn: buffers were freed, raise MAX_DATA */
    AQ_CMD_KEY_UPDATE = 1u << 12 /* conn: start a key update (RFC 9001 6) */
};

/* What picoquic knows of a connection's path, copied by the network thread at
 * the handshake, whenever RTT or pacing rate move noticeably, and at the close. */
typedef struct {
    uint64_t rtt_us;          /* smoothed */
    uint64_t rtt_min_us;
    uint64_t cwnd;            /* bytes */
    uint64_t bytes_in_flight;
    uint64_t pacing_rate;     /* bytes per second */
    uint64_t packets_sent;
    uint64_t packets_lost;
    uint64_t packets_retransmitted;
    uint64_t address_changes; /* times the peer's address changed after the handshake */
    uint64_t stream_window;   /* largest receive window granted to a stream (autotuning grows it) */
    uint32_t version;         /* QUIC version */
    char cipher[64];          /* TLS cipher suite */
} aq_path_stats_t;

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


struct aq_stream {
    aq_node_t node;
    aq_conn_t* conn; /* strong reference */
    uint64_t stream_id;
    aq_ring_t rx;
    aq_ring_t tx;
    _Atomic uint64_t rx_window; /* bytes of credit the peer may have outstanding (grows: aq_autotune_window) */
    /* Python -> network */
    _Atomic int tx_active;  /* picoquic polls (or was asked to poll) this stream */
    _Atomic int tx_fin;     /* send FIN once the ring is empty */
    _Atomic int tx_waiting; /* Python waits for ring space */
    _Atomic int release_sent; /* AQ_CMD_RELEASE was raised */
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
    int early_data;         /* peer-opened in 0-RTT (set before AQ_EV_NEW) */
    /* network thread only */
    int registered;         /* picoquic holds a reference (app_stream_ctx) */
    int fin_sent;
    int reset_sent;
    int credit_pending;
    int stop_deferred;      /* STOP_SENDING waits until the peer's stream limit covers the stream */
    int app_released;       /* Python is done with the stream (AQ_CMD_RELEASE) */
    int pq_released;        /* picoquic is done with it */
    int credit_returned;    /* a peer's stream: MAX_STREAMS counts it again */
    uint64_t tune_time;     /* window autotuning: when this interval began (0: not yet) */
    uint64_t tune_read;     /* ... and how many bytes Python had read then */
    int tune_blocked;       /* ... whether the peer has waited for credit since */
    int tune_waited;        /* ... and whether Python has waited for bytes since */
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
    int in_handshake; /* network thread: counted in the endpoint's handshaking */
    int resumed; /* the handshake resumed a TLS session */
    int early;   /* client: alpn and peer_addr written before AQ_EV_EARLY */
    /* close request, written by Python before AQ_CMD_CLOSE */
    uint64_t close_code;
    uint64_t close_linger_us; /* wait this long for sent data to be acknowledged */
    uint64_t close_late_code; /* sent instead of close_code if the linger runs out */
    _Atomic int close_truncated; /* it did: data was still unacknowledged (before AQ_EV_CLOSE_SENT) */
    char* close_reason; /* picoquic keeps the pointer: freed with the conn */
    /* path statistics and the peer's current address, under stats_lock */
    pthread_mutex_t stats_lock;
    aq_path_stats_t stats;
    struct sockaddr_storage current_peer_addr;
    /* datagrams */
    pthread_mutex_t dg_lock;
    aq_dgram_queue_t dg_tx;
    aq_dgram_queue_t dg_rx;
    _Atomic uint64_t dg_tx_dropped;
    _Atomic uint64_t dg_rx_dropped;
    _Atomic int dg_rx_armed;
    /* the send cap: bytes in this connection's send rings, all streams together */
    _Atomic int64_t tx_buffered;
    _Atomic int tx_room_waiting;    /* Python waits for room below the cap */
    /* connection flow control: MAX_DATA follows what the application consumed */
    _Atomic int64_t rx_buffered;    /* stream bytes received and not yet read or dropped */
    _Atomic uint64_t rx_freed;      /* bytes read or dropped, ever (MAX_DATA requests each quarter window) */
    /* network thread only */
    void* cnx; /* picoquic_cnx_t*, NULL once picoquic is done with it */
    int closed_reported;
    int close_requested;
    int close_sent_reported;
    int close_deferred;       /* CLOSE waits for the streams to drain */
    int deferred_stops;       /* streams whose STOP_SENDING waits for the peer's stream limit */
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
    uint64_t max_stream_window; /* autotuning's cap on a stream's window (0: max_data) */
    uint64_t send_buffer;
    uint64_t connection_send_buffer;
    uint64_t max_streams_bidi;
    uint64_t max_streams_uni;
    uint64_t max_datagram_frame_size;
    uint64_t datagram_queue;
    const char* congestion_control;
    const char* keylog_file;
    const char* qlog_dir;
    int socket_buffer_size;
    uint32_t max_connections;
    int early_data; /* server: accept 0-RTT data; client: send it */
    int retry;      /* server: send a Retry to every new connection (address validation) */
    const uint16_t* cipher_suites; /* TLS cipher suite IDs in preference order; NULL: picoquic's */
    size_t n_cipher_suites;
    uint32_t version;         /* client: the version of the first Initial; 0: picoquic's (v1) */
    uint32_t desired_version; /* client: offered in version_information (compatible negotiation); 0: none */
    int inline_io; /* the Python thread may send for a sleeping network thread (inline.c) */
} aq_config_t;

/* Which AES-GCM implementation picoquic's connections use: "fusion" (picotls'
 * AES-NI engine, on a CPU that has the instructions and in a build with it),
 * "openssl" or "minicrypto". */
const char* aq_aes_gcm_engine(void);

/* Endpoint: created and configured on the Python thread, then started. */
aq_endpoint_t* aq_endpoint_new(const aq_config_t* cfg, char* err, size_t errlen);
int aq_endpoint_start(aq_endpoint_t* ep, const struct sockaddr* bind_addr, int timeout_ms,
    char* err, size_t errlen);
int aq_endpoint_fd(aq_endpoint_t* ep);
int aq_endpoint_port(aq_endpoint_t* ep);
int aq_endpoint_thread_exited(aq_endpoint_t* ep, int* return_code);
/* End the network thread once every requested CONNECTION_CLOSE has gone out (or the
 * close linger ran out); the exit is signalled on the wake fd like any event. */
/* Corked, stream writes and FINs only owe the network thread a wake-up, which
 * aq_endpoint_flush pays (Python calls it once per event-loop turn that wrote);
 * uncorking flushes. */
void aq_endpoint_set_corked(aq_endpoint_t* ep, int corked);
void aq_endpoint_flush(aq_endpoint_t* ep);
/* Inline I/O (inline.c), Python thread.  The UDP socket Python may wait on (-1
 * if inline I/O is off or the loop is not running), open until
 * aq_endpoint_close_fd: stop waiting on it before. */
int aq_inline_socket_fd(aq_endpoint_t* ep);
/* Python wants to wait on that socket (take), or no longer.  Wanting, it waits
 * on it once a drain finds aq_inline_sockets_held true: the network thread
 * hands it over once the endpoint has lived a while and traffic is light. */
int aq_inline_take_sockets(aq_endpoint_t* ep, int take); /* 1 if it may be had */
/* The socket is readable (or, readable = 0, may be): if the network thread
 * sleeps, receive and process its datagrams.  What they make due now (an ACK,
 * say) is left to aq_endpoint_flush (aq_endpoint_wake_owed turns true): call it
 * once the events' handlers have had their turn, to send it with their answers.  1 if
 * nothing came, 2 if events wait: drain them now (no wake fd signal); 3: stop
 * waiting on the socket until a drain finds aq_inline_sockets_held true again
 * (the network thread is awake and takes them, or holds the sockets for a
 * burst); 4: both 2 and 3 (a burst came: the network thread takes the rest
 * until the socket is quiet); 0 if it was busy at a mere look; -1 if it is gone. */
int aq_inline_receive(aq_endpoint_t* ep, int readable);
/* Python holds the sockets: after a 3 or 4, wait on the socket again. */
int aq_inline_sockets_held(aq_endpoint_t* ep);
/* A flush's work done here if the network thread sleeps; 1 if done, 0 if the
 * caller must wake the network thread instead.  after_receive: it sends what an
 * inline receive left (if that is more than a message or two, the network
 * thread takes the sockets: a transfer). */
int aq_inline_flush(aq_endpoint_t* ep, int after_receive);
/* True if corked commands wait for aq_endpoint_flush (Python thread). */
int aq_endpoint_wake_owed(aq_endpoint_t* ep);
void aq_endpoint_exit_when_closed(aq_endpoint_t* ep);
void aq_endpoint_stop(aq_endpoint_t* ep); /* joins the thread, frees picoquic; idempotent */
/* After aq_endpoint_stop, once nobody waits on it: close the wake fd (events left
 * can still be drained). */
void aq_endpoint_close_fd(aq_endpoint_t* ep);
void aq_endpoint_free(aq_endpoint_t* ep);
int64_t aq_endpoint_buffer_chunks(aq_endpoint_t* ep); /* stream buffer chunks allocated now */
/* Python thread, for diagnosis: the hand-over flags between the two threads, as
 * "name=value" pairs in `buf` (a snapshot: the network thread may move on). */
void aq_endpoint_describe(aq_endpoint_t* ep, char* buf, size_t size);

/* Drain: detach the whole event list, then iterate it. */
size_t aq_drain_begin(aq_endpoint_t* ep);
/* Python thread: true from the network thread's signal (the wake fd written)
 * until the next aq_drain_begin takes it. */
int aq_endpoint_signalled(aq_endpoint_t* ep);
/* Write the wake fd unless a wake-up is already pending (any thread: the
 * network thread's signal; the tests race it against the drains). */
void aq_wake_python(aq_endpoint_t* ep);
/* Python thread: what aq_drain_begin does, but the wake fd is read only if the
 * network thread signalled (after an inline receive, which signals nothing: no
 * read system call that would fail); a signal whose write is still on its way
 * then leaves the fd readable, for the fd's reader. */
size_t aq_drain_if_signalled(aq_endpoint_t* ep);
/* Python thread: what aq_drain_begin does but for the signal, which stays
 * pending (the wake fd readable): an event loop that looks for events before it
 * runs its tasks drains them early, and the task that waits for the fd still
 * wakes and drains what came after. */
size_t aq_drain_collect(aq_endpoint_t* ep);
aq_node_t* aq_drain_next(aq_endpoint_t* ep, uint32_t* flags); /* returns a new reference */

void aq_node_ref(aq_node_t* n);
void aq_node_unref(aq_node_t* n);

/* Connections (Python thread). */
aq_conn_t* aq_conn_new_client(aq_endpoint_t* ep, const struct sockaddr* peer,
    const char* sni, const char* alpn);
/* Ask for CONNECTION_CLOSE with `code`, after up to linger_us for sent data to be
 * acknowledged (then with late_code); -1 when out of memory. */
int aq_conn_close(aq_conn_t* c, uint64_t code, const char* reason, uint64_t linger_us, uint64_t late_code);
int aq_conn_send_datagram(aq_conn_t* c, const uint8_t* data, size_t len);
/* Ask for a key update; picoquic ignores it while the previous one is unconfirmed. */
void aq_conn_update_keys(aq_conn_t* c);
/* Copy the latest path statistics and the peer's current address. */
void aq_conn_get_stats(aq_conn_t* c, aq_path_stats_t* stats, struct sockaddr_storage* peer);
aq_dgram_t* aq_conn_pop_datagram(aq_conn_t* c, int arm);
void aq_dgram_free(aq_dgram_t* d);

/* Streams (Python thread). */
aq_stream_t* aq_stream_new_local(aq_conn_t* c, int is_uni);
size_t aq_stream_readable(aq_stream_t* s);
size_t aq_stream_read(aq_stream_t* s, uint8_t* dst, size_t max);
int aq_stream_rx_arm(aq_stream_t* s); /* 1 if bytes, FIN or reset are there after arming */
size_t aq_stream_writable(aq_stream_t* s);
/* Copy what fits below the ring's cap, or with `all` every byte (past the cap):
 * the count written, or -1 (nothing written) when out of memory.  With `fin`,
 * the FIN follows if every byte went in (one hand-off for both). */
ptrdiff_t aq_stream_write(aq_stream_t* s, const uint8_t* src, size_t len, int all, int fin);
size_t aq_stream_tx_arm(aq_stream_t* s); /* arm AQ_EV_TX (and the connection's AQ_EV_TX_ROOM), return the room now */
/* The room a waiting writer is woken for (AQ_EV_TX): half the ring, so that a
 * transfer's writer fills it in a few large writes a wake-up. */
size_t aq_stream_tx_wake_room(const aq_stream_t* s);
size_t aq_stream_unsent(aq_stream_t* s);
void aq_stream_send_fin(aq_stream_t* s);
void aq_stream_reset(aq_stream_t* s, uint64_t code);
void aq_stream_stop_sending(aq_stream_t* s, uint64_t code);
void aq_stream_discard_rx(aq_stream_t* s); /* drop unread bytes, now and to come */
/* Python is done with the stream: a peer's stream gives its stream credit back
 * once picoquic is done with it too.  Idempotent. */
void aq_stream_release(aq_stream_t* s);

#endif
