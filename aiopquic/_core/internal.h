/*
 * internal.h: what the bridge's C files share and Cython does not see: the
 * endpoint structure and the helpers one file offers another.
 *
 *   ring.c      byte rings and datagram queues (ring.h)
 *   events.c    nodes, their reference counts, the dirty lists both ways, the
 *               wake fd, the drain; flow-control accounting any thread may do
 *   net.c       the network thread's picoquic callbacks
 *   commands.c  the network thread working for Python: commands, the loop
 *   inline.c    the Python thread doing that work itself while the network
 *               thread sleeps (inline send)
 *   endpoint.c  creating, starting, stopping and freeing an endpoint
 *   api.c       what the Python thread calls on connections and streams
 */
#ifndef AIOPQUIC_INTERNAL_H
#define AIOPQUIC_INTERNAL_H

#include "bridge.h"

#include "picoquic.h"
#include "picoquic_utils.h"
#include "picoquic_packet_loop.h"
#include "picoquic_ext.h"
#include "sessions.h"
#include "trust.h"

/* Our own local error for a client connection picoquic refused to start. */
#define AQ_ERROR_START_FAILED 0x10000000ull

#define AQ_INLINE_BUFFER 0x10000
/* While Python holds the sockets, the network thread looks at them (in case the
 * event loop is busy) at least every AQ_HANDBACK_US microseconds as long as a
 * connection is open, backing off to AQ_HANDBACK_MAX_US while it finds nothing. */
#define AQ_HANDBACK_US 2000
#define AQ_HANDBACK_MAX_US 64000
/* The network thread, holding the sockets for a burst, hands them back to Python
 * once less than a burst (AQ_INLINE_BURST_BYTES) came and went, and no handshake
 * began, in this long (microseconds). */
#define AQ_QUIET_US 1000
/* ... and hands them over at all only this long (microseconds) after Python asked. */
#define AQ_SETTLE_US 20000
/* An inline receive stops after this many bytes: a burst, which the network
 * thread takes from there. */
#define AQ_INLINE_BURST_BYTES (16 * 1024)
/* So many readable sockets in a row with the network thread awake are a transfer
 * too: it takes the sockets until they are quiet. */
#define AQ_BUSY_IN_A_ROW 3
/* Most packets the event loop's thread sends at once: a message or two.  More is
 * a burst, which the network thread sends beside the event loop (it is woken: its
 * next timer is now). */
#define AQ_INLINE_SEND_MAX 2
/* The Python thread wakes the sleeping network thread for a timer that is due
 * this much sooner than its wait ends, not for less: the deadline it noted
 * (wait_deadline) runs a microsecond or two behind the timer it was computed
 * from, and a sleeping thread's wake-up is only this precise anyway (the
 * kernel's default timer slack). */
#define AQ_TIMER_SLACK_US 50

/* A flush sends inline only if the turn wrote at most this many stream bytes. */
#define AQ_INLINE_FLUSH_MAX 4096

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
    /* 1 while the network thread may sleep without looking at net_head again:
     * from its last look, before it polls, until it wakes (see aq_loop_cb). */
    _Atomic int net_idle;
    /* Python thread: stream writes queue their command without waking the
     * network thread; Python wakes it once per event-loop turn (aq_endpoint_flush). */
    int corked;
    _Atomic int wake_owed;
    size_t written_since_flush; /* Python thread: stream bytes written since the last flush */
    int send_owed_by_receive; /* Python thread: an inline receive left what is due to the flush */
    /* Inline send (inline.c): while the network thread sleeps in its poll, the
     * Python thread may do its work for a flush itself.  work_lock is held by the
     * network thread but for its poll; see the argument at the top of inline.c. */
    int inline_io;          /* QuicConfig's switch (aq_config_t.inline_io) */
    pthread_mutex_t work_lock;
    _Atomic int net_sleeping; /* the network thread let go of work_lock for its poll */
    uint64_t wait_deadline;   /* under work_lock: picoquic time that poll times out */
    int inline_fd; /* Python thread: our descriptor of the UDP socket, for Python to wait on; -1 */
    /* Who reads the sockets (inline.c).  Python wants them (python_wants) and holds
     * them (sockets_to_python: the network thread's poll leaves them out) but for
     * bursts, which the network thread takes until the socket is quiet again.
     * python_paused: Python stopped waiting on the socket until the next drain. */
    _Atomic int python_wants;
    _Atomic uint64_t python_wants_since; /* picoquic time Python asked for them */
    _Atomic int sockets_to_python;
    _Atomic int python_paused;
    int busy_in_a_row; /* Python thread: inline receives in a row that found the network thread awake */
    uint64_t window_start; /* network thread: bytes it received and sent since then (AQ_QUIET_US windows) */
    size_t window_bytes;
    unsigned window_handshakes; /* under work_lock: server handshakes begun since window_start */
    unsigned handshaking; /* under work_lock: linked connections whose handshake is not done */
    uint64_t handback_us; /* network thread: how often it looks at Python's sockets now */
    uint8_t inline_buffer[AQ_INLINE_BUFFER]; /* under work_lock: the datagrams of an inline receive */
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
    aq_chunk_pool_t chunk_pool; /* the stream rings' chunks */
    int stopped;
    int freeing;
    uint32_t version;         /* client: see aq_config_t */
    uint32_t desired_version;
    /* network thread only */
    int py_signal_needed;
    uint64_t idle_signal_since; /* the first batch that left an AQ_SIGNAL_IDLE pending; 0: none */
    aq_conn_t* conns;
    int close_waiters;
    int deferred_closes;
    int deferred_stops; /* of all connections */
    picoquic_cnx_t** to_delete;
    size_t n_to_delete;
    size_t cap_to_delete;
    /* client session resumption */
    aq_sessions_t* sessions;
    /* configuration */
    int is_server;
    int early_data; /* QuicConfig.early_data */
    size_t rx_window;     /* a stream's first window (QuicConfig.max_stream_data) */
    size_t rx_window_max; /* ... and how far autotuning may grow it (see aq_autotune_window) */
    uint64_t conn_window; /* bytes a connection may buffer (QuicConfig.max_data) */
    size_t tx_cap;
    uint64_t conn_tx_cap; /* bytes a connection's send rings hold at most (but for a cancelled send's rest) */
    size_t dgram_queue;
    uint64_t local_max_datagram;
    char** alpns;
    size_t n_alpns;
};

/* When to wake Python for what was raised: after this packet; after the whole
 * batch of packets at hand (stream bytes without FIN that have piled up); or once
 * the socket runs dry, when the network thread is about to sleep (fewer stream
 * bytes than that: more may follow at once), but no later than
 * AQ_IDLE_SIGNAL_MAX_US after the first batch that left it pending. */
enum { AQ_SIGNAL_IDLE = 1, AQ_SIGNAL_BATCH = 2, AQ_SIGNAL_NOW = 3 };
#define AQ_IDLE_SIGNAL_MAX_US 500

/* Set on the network thread: there the bridge acts on picoquic directly instead
 * of queueing commands for itself. */
extern _Thread_local int aq_on_network_thread;
/* Set around an inline receive's signal to Python, which then needs no wake-up. */
extern _Thread_local int aq_python_drains_next;

/* events.c: nodes, dirty lists, the wake fd */
aq_conn_t* aq_conn_alloc(aq_endpoint_t* ep, int is_client);
void aq_conn_consumed(aq_conn_t* c, uint64_t n);
void aq_conn_freed(aq_conn_t* c, uint64_t n);
void aq_copy_addr(struct sockaddr_storage* dst, const struct sockaddr* src);
aq_node_t* aq_detach_fifo(_Atomic(aq_node_t*)* head, int for_py);
void aq_push_net(aq_node_t* n, uint32_t flags);
void aq_push_net_corked(aq_node_t* n, uint32_t flags);
void aq_wake_net(aq_endpoint_t* ep);
void aq_push_py(aq_node_t* n, uint32_t flags);
void aq_push_py_when(aq_node_t* n, uint32_t flags, int when);
void aq_release_list(_Atomic(aq_node_t*)* head, int for_py);
void aq_signal_python(aq_endpoint_t* ep, int when);
aq_stream_t* aq_stream_alloc(aq_conn_t* c, uint64_t stream_id, int has_rx, int has_tx);

/* net.c: the network thread's picoquic callbacks */
int aq_conn_cb(picoquic_cnx_t* cnx, uint64_t stream_id, uint8_t* bytes, size_t length,
    picoquic_call_back_event_t event, void* ctx, void* stream_ctx);
void aq_conn_teardown(aq_conn_t* c);
void aq_grant_credit(aq_stream_t* s, picoquic_cnx_t* cnx);
int aq_is_local_stream(aq_conn_t* c, uint64_t stream_id);
void aq_link_conn(aq_endpoint_t* ep, aq_conn_t* c);
int aq_register_local(aq_stream_t* s, picoquic_cnx_t* cnx, int activate);
void aq_tx_discard(aq_stream_t* s);
void aq_return_stream_credit(aq_stream_t* s, picoquic_cnx_t* cnx);
void aq_forget_deferred_stop(aq_stream_t* s);
size_t aq_alpn_select(picoquic_quic_t* quic, picoquic_iovec_t* list, size_t count);
int aq_default_cb(picoquic_cnx_t* cnx, uint64_t stream_id, uint8_t* bytes, size_t length,
    picoquic_call_back_event_t event, void* ctx, void* stream_ctx);
void aq_grant_max_data(aq_conn_t* c, picoquic_cnx_t* cnx);
void aq_run_deferred_deletes(aq_endpoint_t* ep);
void aq_unlink_conn(aq_endpoint_t* ep, aq_conn_t* c);
void aq_unlink_stream(aq_stream_t* s);

/* commands.c: the network thread working for Python, and the packet loop */
int aq_loop_cb(picoquic_quic_t* quic, picoquic_packet_loop_cb_enum mode, void* ctx, void* argv);
void aq_run_deferred_closes(aq_endpoint_t* ep);
void aq_process_commands(aq_endpoint_t* ep);
void aq_after_send(aq_endpoint_t* ep);
void aq_after_receive(aq_endpoint_t* ep);

/* inline.c: the Python thread doing the network thread's work while it sleeps
 * (its Python-thread entry points are in bridge.h) */
/* Network thread, while Python holds the sockets: receive what waits on them. */
int aq_take_waiting(aq_endpoint_t* ep, picoquic_network_thread_ctx_t* thread_ctx);
/* Network thread, before a wait: whether this wait leaves the sockets to Python
 * (taking what waits on them first, and giving them back to Python once a burst
 * is over); the wait may be shortened. */
int aq_sockets_elsewhere(aq_endpoint_t* ep, picoquic_packet_loop_wait_arg_t* wait);
/* Python thread: our own descriptor of the loop's one UDP socket, or -1 (none yet). */
int aq_inline_dup_socket(aq_endpoint_t* ep);

#endif
