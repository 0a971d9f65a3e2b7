# Declarations of the C bridge (bridge.h) and of the extension types.
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "<sys/socket.h>":
    struct sockaddr:
        unsigned short sa_family
    struct sockaddr_storage:
        unsigned short ss_family


cdef extern from "bridge.h" nogil:
    ctypedef struct aq_path_stats_t:
        uint64_t rtt_us
        uint64_t rtt_min_us
        uint64_t cwnd
        uint64_t bytes_in_flight
        uint64_t pacing_rate
        uint64_t packets_sent
        uint64_t packets_lost
        uint64_t packets_retransmitted
        uint64_t address_changes
        uint64_t stream_window
        uint32_t version
        char cipher[64]

    ctypedef struct aq_endpoint_t:
        pass

    ctypedef struct aq_node_t:
        int kind
        void* py_obj

    ctypedef struct aq_conn_t:
        aq_node_t node
        int is_client
        char alpn[256]
        char local_addr[128]
        char peer_addr[128]
        uint64_t remote_max_datagram
        uint64_t remote_idle_timeout_ms
        uint64_t local_error
        uint64_t remote_error
        uint64_t local_app_error
        uint64_t remote_app_error
        char* remote_reason
        int close_truncated
        int verify_error
        int was_ready
        int resumed
        uint64_t dg_tx_dropped
        uint64_t dg_rx_dropped

    ctypedef struct aq_ring_t:
        size_t cap

    ctypedef struct aq_stream_t:
        aq_node_t node
        aq_conn_t* conn
        uint64_t stream_id
        aq_ring_t rx
        aq_ring_t tx
        int rx_fin
        int rx_reset
        uint64_t rx_reset_code
        int tx_stopped
        uint64_t tx_stop_code
        int early_data

    ctypedef struct aq_dgram_t:
        size_t len
        uint8_t data[1]

    ctypedef struct aq_config_t:
        int is_server
        const char* certfile
        const char* keyfile
        const char* cafile
        void* trust
        void* sessions
        int verify
        const char* const* alpns
        size_t n_alpns
        uint64_t idle_timeout_ms
        uint64_t handshake_timeout_us
        uint64_t max_data
        uint64_t max_stream_data
        uint64_t max_stream_window
        uint64_t send_buffer
        uint64_t connection_send_buffer
        uint64_t max_streams_bidi
        uint64_t max_streams_uni
        uint64_t max_datagram_frame_size
        uint64_t datagram_queue
        const char* congestion_control
        const char* keylog_file
        const char* qlog_dir
        int socket_buffer_size
        uint32_t max_connections
        int early_data
        int retry
        const uint16_t* cipher_suites
        size_t n_cipher_suites
        uint32_t version
        uint32_t desired_version
        int inline_io

    enum:
        AQ_KIND_CONN
        AQ_KIND_STREAM
        AQ_EV_NEW
        AQ_EV_RX
        AQ_EV_RESET
        AQ_EV_STOP
        AQ_EV_TX
        AQ_EV_READY
        AQ_EV_CLOSED
        AQ_EV_DGRAM
        AQ_EV_CLOSE_SENT
        AQ_EV_TX_ROOM
        AQ_EV_EARLY

    aq_endpoint_t* aq_endpoint_new(const aq_config_t* cfg, char* err, size_t errlen)
    int aq_endpoint_start(aq_endpoint_t* ep, const sockaddr* bind_addr, int timeout_ms,
                          char* err, size_t errlen)
    int aq_endpoint_fd(aq_endpoint_t* ep)
    int aq_endpoint_port(aq_endpoint_t* ep)
    int aq_endpoint_thread_exited(aq_endpoint_t* ep, int* return_code)
    void aq_endpoint_set_corked(aq_endpoint_t* ep, int corked)
    void aq_endpoint_flush(aq_endpoint_t* ep)
    int aq_inline_socket_fd(aq_endpoint_t* ep)
    int aq_inline_take_sockets(aq_endpoint_t* ep, int take)
    int aq_inline_receive(aq_endpoint_t* ep, int readable)
    int aq_inline_sockets_held(aq_endpoint_t* ep)
    int aq_endpoint_wake_owed(aq_endpoint_t* ep)
    void aq_endpoint_exit_when_closed(aq_endpoint_t* ep)
    void aq_endpoint_stop(aq_endpoint_t* ep)
    void aq_endpoint_close_fd(aq_endpoint_t* ep)
    void aq_endpoint_free(aq_endpoint_t* ep)
    int64_t aq_endpoint_buffer_chunks(aq_endpoint_t* ep)
    void aq_endpoint_describe(aq_endpoint_t* ep, char* buf, size_t size)
    const char* aq_aes_gcm_engine()

    size_t aq_drain_begin(aq_endpoint_t* ep)
    size_t aq_drain_if_signalled(aq_endpoint_t* ep)
    int aq_endpoint_signalled(aq_endpoint_t* ep)
    void aq_wake_python(aq_endpoint_t* ep)
    size_t aq_drain_collect(aq_endpoint_t* ep)
    aq_node_t* aq_drain_next(aq_endpoint_t* ep, uint32_t* flags)
    void aq_node_ref(aq_node_t* n)
    void aq_node_unref(aq_node_t* n)

    aq_conn_t* aq_conn_new_client(aq_endpoint_t* ep, const sockaddr* peer,
                                  const char* sni, const char* alpn)
    int aq_conn_close(aq_conn_t* c, uint64_t code, const char* reason, uint64_t linger_us, uint64_t late_code)
    int aq_conn_send_datagram(aq_conn_t* c, const uint8_t* data, size_t length)
    void aq_conn_update_keys(aq_conn_t* c)
    void aq_conn_get_stats(aq_conn_t* c, aq_path_stats_t* stats, sockaddr_storage* peer)
    aq_dgram_t* aq_conn_pop_datagram(aq_conn_t* c, int arm)
    void aq_dgram_free(aq_dgram_t* d)

    aq_stream_t* aq_stream_new_local(aq_conn_t* c, int is_uni)
    size_t aq_stream_readable(aq_stream_t* s)
    size_t aq_stream_read(aq_stream_t* s, uint8_t* dst, size_t max_bytes)
    int aq_stream_rx_arm(aq_stream_t* s)
    size_t aq_stream_writable(aq_stream_t* s)
    Py_ssize_t aq_stream_write(aq_stream_t* s, const uint8_t* src, size_t length, int all, int fin)
    size_t aq_stream_tx_arm(aq_stream_t* s)
    size_t aq_stream_tx_wake_room(const aq_stream_t* s)
    size_t aq_stream_unsent(aq_stream_t* s)
    void aq_stream_send_fin(aq_stream_t* s)
    void aq_stream_reset(aq_stream_t* s, uint64_t code)
    void aq_stream_stop_sending(aq_stream_t* s, uint64_t code)
    void aq_stream_release(aq_stream_t* s)
    void aq_stream_discard_rx(aq_stream_t* s)


cdef extern from "sessions.h" nogil:
    ctypedef struct aq_sessions_t:
        pass
    aq_sessions_t* aq_sessions_new()
    void aq_sessions_free(aq_sessions_t* cache)


cdef extern from "trust.h" nogil:
    ctypedef struct aq_trust_t:
        pass
    aq_trust_t* aq_trust_load(const char* cafile, char* err, size_t errlen)
    void aq_trust_free(aq_trust_t* trust)
    unsigned long aq_trust_hits(aq_trust_t* trust)


cdef class TrustStore:
    cdef aq_trust_t* store


cdef class SessionCache:
    cdef aq_sessions_t* cache


cdef class Endpoint:
    cdef aq_endpoint_t* ep
    cdef SessionCache sessions
    cdef readonly bint is_server
    cdef readonly bint closed
    cdef bint started
    cdef void c_flush(self) noexcept
    cdef bint c_wake_owed(self) noexcept
    cdef bint c_signalled(self) noexcept
    cdef int c_receive_inline(self, bint readable) noexcept


cdef class ConnHandle:
    cdef aq_conn_t* c
    cdef readonly Endpoint endpoint
    cdef public object owner


cdef class StreamHandle:
    cdef aq_stream_t* s
    cdef readonly ConnHandle conn
    cdef readonly uint64_t stream_id
    cdef readonly size_t tx_threshold
    # For the quic layer's Cython (quic/_fast.pyx): the same as read(), write(),
    # tx_arm(), send_fin() and discard_rx(), without a Python call.
    cdef bytes c_read(self, size_t max_bytes)
    cdef Py_ssize_t c_write(self, const uint8_t* data, size_t length, bint all, bint fin) except -1
    cdef size_t c_tx_arm(self) noexcept
    cdef void c_send_fin(self) noexcept
    cdef void c_discard_rx(self) noexcept
    cdef size_t c_readable(self) noexcept
