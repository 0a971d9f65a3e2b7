# cython: language_level=3, boundscheck=False, wraparound=False
"""Python face of the C bridge: one network thread per :class:`Endpoint`.

Nothing here knows about anyio.  The ``quic`` package above waits on
:meth:`Endpoint.fileno` and calls :meth:`Endpoint.drain`, which returns the
``(handle, flags)`` pairs raised since the last call.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

import socket

EV_NEW = AQ_EV_NEW
EV_RX = AQ_EV_RX
EV_RESET = AQ_EV_RESET
EV_STOP = AQ_EV_STOP
EV_TX = AQ_EV_TX
EV_READY = AQ_EV_READY
EV_CLOSED = AQ_EV_CLOSED
EV_DGRAM = AQ_EV_DGRAM
EV_CLOSE_SENT = AQ_EV_CLOSE_SENT
EV_TX_ROOM = AQ_EV_TX_ROOM
EV_EARLY = AQ_EV_EARLY
#: Local error of a client connection picoquic refused to start.
ERROR_START_FAILED = 0x10000000


cdef extern from "<netinet/in.h>":
    struct in_addr:
        pass

    struct in6_addr:
        pass

    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id

    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)


cdef extern from "<arpa/inet.h>":
    int inet_pton(int af, const char* src, void* dst)
    const char* inet_ntop(int af, const void* src, char* dst, unsigned int size)


cdef union sockaddr_any:
    sockaddr sa
    sockaddr_in v4
    sockaddr_in6 v6


cdef unsigned int _scope_id(str host, str scope) except? 0:
    """The interface index named by the ``%scope`` of an IPv6 address: a name or a number."""
    if scope.isdigit():
        index = int(scope)
        if 0 < index < 1 << 32:
            return index
    else:
        try:
            return socket.if_nametoindex(scope)
        except OSError:
            pass
    raise ValueError(
        f"{host!r}: no network interface {scope!r} on this host (the part after % names "
        "the interface of a scoped IPv6 address, e.g. fe80::1%eth0)"
    )


cdef int _to_sockaddr(str host, int port, sockaddr_any* out) except -1:
    """Fill ``out`` from a numeric IPv4 or IPv6 address and a port.

    An IPv6 address may name its interface (``fe80::1%eth0``, ``fe80::1%2``): that
    becomes ``sin6_scope_id``.  Anything else raises ValueError, never a wider address.
    """
    memset(out, 0, sizeof(sockaddr_any))
    address, percent, scope = host.partition("%")
    raw = address.encode()
    if ":" in address:
        if inet_pton(socket.AF_INET6, raw, &out.v6.sin6_addr) != 1 or (percent and not scope):
            raise ValueError(f"{host!r} is not a numeric IPv6 address")
        out.v6.sin6_family = socket.AF_INET6
        out.v6.sin6_port = htons(port)
        if scope:
            out.v6.sin6_scope_id = _scope_id(host, scope)
    else:
        if percent or inet_pton(socket.AF_INET, raw, &out.v4.sin_addr) != 1:
            raise ValueError(f"{host!r} is not a numeric IPv4 address")
        out.v4.sin_family = socket.AF_INET
        out.v4.sin_port = htons(port)
    return 0


cdef object _from_sockaddr(const sockaddr* sa):
    """Return ``(host, port)`` for an IPv4/IPv6 address (``%interface`` kept), or None."""
    cdef char buf[64]
    cdef const sockaddr_in* v4
    cdef const sockaddr_in6* v6
    if sa.sa_family == socket.AF_INET:
        v4 = <const sockaddr_in*>sa
        inet_ntop(socket.AF_INET, &v4.sin_addr, buf, sizeof(buf))
        return (buf.decode(), ntohs(v4.sin_port))
    if sa.sa_family == socket.AF_INET6:
        v6 = <const sockaddr_in6*>sa
        inet_ntop(socket.AF_INET6, &v6.sin6_addr, buf, sizeof(buf))
        host = buf.decode()
        if v6.sin6_scope_id:
            try:
                host += "%" + socket.if_indextoname(v6.sin6_scope_id)
            except OSError:
                host += "%" + str(v6.sin6_scope_id)
        return (host, ntohs(v6.sin6_port))
    return None


cdef bytes _opt(object value):
    return None if value is None else str(value).encode()


def aes_gcm_engine():
    """Which AES-GCM implementation the connections use: ``"fusion"`` (picotls'
    engine for CPUs with AES-NI, PCLMUL and AVX2, built on x86_64), else
    ``"openssl"`` (or ``"minicrypto"``)."""
    return aq_aes_gcm_engine().decode()


cdef extern from "tls_api.h" nogil:
    void picoquic_public_random(void* buf, size_t len)


def _public_random_into(uint8_t[::1] buffer, size_t offset, size_t length):
    """Fill ``length`` bytes of the writable ``buffer`` from ``offset`` with picoquic's
    public random generator, without the GIL (for the test of its lock: picoquic
    is linked in with hidden symbols, so ctypes cannot reach it)."""
    if offset + length > <size_t>buffer.shape[0]:
        raise ValueError("offset + length runs past the buffer")
    if length:
        with nogil:
            picoquic_public_random(&buffer[offset], length)


cdef class TrustStore:
    """A CA bundle, read once and shared by every endpoint that verifies with it."""

    def __cinit__(self, cafile):
        cdef char err[256]
        cdef bytes path = _opt(cafile)
        if path is None:
            raise TypeError("cafile must be a path")
        cdef const char* c_path = <const char*>path
        with nogil:  # reading a bundle takes milliseconds: let other threads run
            self.store = aq_trust_load(c_path, err, sizeof(err))
        if self.store == NULL:
            raise ValueError(err.decode(errors="replace"))

    def __dealloc__(self):
        if self.store != NULL:
            aq_trust_free(self.store)
            self.store = NULL

    @property
    def chains_recalled(self):
        """How many certificate chains were accepted from memory, not validated again."""
        return aq_trust_hits(self.store)


cdef class SessionCache:
    """TLS session tickets kept for the next client connections (see sessions.h)."""

    def __cinit__(self):
        self.cache = aq_sessions_new()
        if self.cache == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.cache != NULL:
            aq_sessions_free(self.cache)
            self.cache = NULL


# __dealloc__ stops the endpoint, which feeds the session cache: keep that reference.
@cython.no_gc_clear
cdef class Endpoint:
    """A picoquic context, its UDP socket and its network thread."""

    def __cinit__(
        self,
        *,
        bint is_server,
        alpns,
        certfile=None,
        keyfile=None,
        cafile=None,
        TrustStore trust_store=None,
        SessionCache session_cache=None,
        bint verify=True,
        uint64_t idle_timeout_ms=30000,
        uint64_t handshake_timeout_us=10000000,
        uint64_t max_data=16 << 20,
        uint64_t max_stream_data=1 << 20,
        uint64_t max_stream_window=0,
        uint64_t send_buffer=1 << 20,
        uint64_t connection_send_buffer=16 << 20,
        uint64_t max_streams_bidi=128,
        uint64_t max_streams_uni=128,
        uint64_t max_datagram_frame_size=0,
        uint64_t datagram_queue=1024,
        congestion_control="cubic",
        keylog_file=None,
        qlog_dir=None,
        int socket_buffer_size=4 << 20,
        uint32_t max_connections=1024,
        bint early_data=False,
        bint retry=False,
        cipher_suites=(),
        uint32_t version=0,
        uint32_t desired_version=0,
        bint inline_io=True,
    ):
        cdef aq_config_t cfg
        cdef char err[256]
        cdef bytes b_cert = _opt(certfile), b_key = _opt(keyfile), b_ca = _opt(cafile)
        cdef bytes b_cc = _opt(congestion_control), b_keylog = _opt(keylog_file)
        cdef bytes b_qlog = _opt(qlog_dir)
        cdef list b_alpns = [a.encode() for a in alpns]
        cdef const char** alpn_ptrs = <const char**>malloc((len(b_alpns) + 1) * sizeof(char*))
        cdef size_t n_suites = len(cipher_suites)
        cdef uint16_t* suite_ids = <uint16_t*>malloc((n_suites + 1) * sizeof(uint16_t))
        if alpn_ptrs == NULL or suite_ids == NULL:
            free(alpn_ptrs)
            free(suite_ids)
            raise MemoryError()
        memset(&cfg, 0, sizeof(cfg))
        try:
            for i, a in enumerate(b_alpns):
                alpn_ptrs[i] = <const char*>a
            cfg.is_server = is_server
            cfg.certfile = NULL if b_cert is None else <const char*>b_cert
            cfg.keyfile = NULL if b_key is None else <const char*>b_key
            cfg.cafile = NULL if b_ca is None else <const char*>b_ca
            cfg.trust = NULL if trust_store is None else <void*>trust_store.store
            cfg.sessions = NULL if session_cache is None else session_cache.cache
            cfg.verify = verify
            cfg.alpns = alpn_ptrs
            cfg.n_alpns = len(b_alpns)
            cfg.idle_timeout_ms = idle_timeout_ms
            cfg.handshake_timeout_us = handshake_timeout_us
            cfg.max_data = max_data
            cfg.max_stream_data = max_stream_data
            cfg.max_stream_window = max_stream_window
            cfg.send_buffer = send_buffer
            cfg.connection_send_buffer = connection_send_buffer
            cfg.max_streams_bidi = max_streams_bidi
            cfg.max_streams_uni = max_streams_uni
            cfg.max_datagram_frame_size = max_datagram_frame_size
            cfg.datagram_queue = datagram_queue
            cfg.congestion_control = <const char*>b_cc
            cfg.keylog_file = NULL if b_keylog is None else <const char*>b_keylog
            cfg.qlog_dir = NULL if b_qlog is None else <const char*>b_qlog
            cfg.socket_buffer_size = socket_buffer_size
            cfg.max_connections = max_connections
            cfg.early_data = early_data
            cfg.retry = retry
            for i, suite in enumerate(cipher_suites):
                suite_ids[i] = suite
            cfg.cipher_suites = suite_ids
            cfg.n_cipher_suites = n_suites
            cfg.version = version
            cfg.desired_version = desired_version
            cfg.inline_io = inline_io
            with nogil:  # reads the certificate and key files
                self.ep = aq_endpoint_new(&cfg, err, sizeof(err))
        finally:
            free(alpn_ptrs)
            free(suite_ids)
        if self.ep == NULL:
            raise ValueError(err.decode(errors="replace"))
        self.is_server = is_server
        self.sessions = session_cache  # the endpoint uses it until it is freed

    def __dealloc__(self):
        if self.ep != NULL:
            with nogil:
                aq_endpoint_free(self.ep)
            self.ep = NULL

    def start(self, str host, int port, int timeout_ms=5000):
        """Bind ``host``:``port`` (numeric, an IPv6 one perhaps with ``%interface``),
        start the thread, return the bound port.

        An empty ``host`` binds any address of both families (an IPv6 and an
        IPv4 socket), as a client that connects to either needs.

        With ``timeout_ms=0`` it returns 0 at once, without waiting for the socket:
        if opening it fails, the thread exits and :meth:`thread_error` says so.
        """
        cdef sockaddr_any addr
        cdef char err[256]
        cdef int bound
        if self.started or self.closed:
            raise RuntimeError("endpoint already started")
        if host:
            _to_sockaddr(host, port, &addr)
        else:
            memset(&addr, 0, sizeof(addr))
            addr.v4.sin_family = socket.AF_UNSPEC
            addr.v4.sin_port = htons(port)
        with nogil:
            bound = aq_endpoint_start(self.ep, &addr.sa, timeout_ms, err, sizeof(err))
        if bound < 0:
            self.closed = True
            raise OSError(err.decode(errors="replace"))
        self.started = True
        return bound

    @property
    def buffer_chunks(self):
        """How many 16 KiB stream-buffer chunks this endpoint holds now."""
        return aq_endpoint_buffer_chunks(self.ep)

    def fileno(self):
        """The wake fd: readable when :meth:`drain` has something to return."""
        return aq_endpoint_fd(self.ep)

    @property
    def port(self):
        return aq_endpoint_port(self.ep)

    def thread_error(self):
        """The network thread's return code if it has stopped, else None."""
        cdef int rc = 0
        if aq_endpoint_thread_exited(self.ep, &rc):
            return rc
        return None

    def signalled(self):
        """True while the wake fd has been written and no :meth:`drain` took it."""
        return self.c_signalled()

    def _signal_python(self, int repeat=1):
        """Tests only: raise the network thread's signal to Python (the wake fd
        written unless a signal is pending) ``repeat`` times in a row, from this
        thread, without the GIL."""
        cdef int i
        if self.ep != NULL:
            with nogil:
                for i in range(repeat):
                    aq_wake_python(self.ep)

    def describe(self):
        """The hand-over flags between the network thread and Python, as
        ``name=value`` pairs: for diagnosing a stall, not for decisions (the
        network thread moves on while they are read)."""
        cdef char buf[512]
        if self.ep == NULL:
            return "closed"
        aq_endpoint_describe(self.ep, buf, sizeof(buf))
        return buf.decode()

    cdef bint c_signalled(self) noexcept:
        return self.ep != NULL and aq_endpoint_signalled(self.ep) != 0

    def drain(self, bint early=False, bint after_receive=False):
        """Return the ``(handle, flags)`` pairs raised since the last call.

        ``early``: leave the signal pending (the wake fd readable), for a look
        before the event loop runs its tasks; the waiter on the fd drains again.
        ``after_receive``: after :meth:`receive_inline`, not because the wake fd
        was readable: take the signal only if there is one (no failing read)."""
        cdef list out = []
        cdef aq_node_t* n
        cdef uint32_t flags = 0
        cdef object handle
        if self.ep == NULL:
            return out
        if early:
            aq_drain_collect(self.ep)
        elif after_receive:
            aq_drain_if_signalled(self.ep)
        else:
            aq_drain_begin(self.ep)
        while True:
            n = aq_drain_next(self.ep, &flags)
            if n == NULL:
                break
            try:
                if flags == 0:
                    continue
                if n.py_obj != NULL:
                    handle = <object>n.py_obj
                elif n.kind == AQ_KIND_STREAM and flags & AQ_EV_NEW:
                    handle = _wrap_stream(self, <aq_stream_t*>n)
                elif n.kind == AQ_KIND_CONN and flags & AQ_EV_READY:
                    handle = _wrap_conn(self, <aq_conn_t*>n)
                else:
                    continue  # nobody listens to this object any more
                out.append((handle, flags))
            finally:
                aq_node_unref(n)
        return out

    def connect(self, str host, int port, server_name, alpn):
        """Start a client connection to numeric ``host``:``port``; return its handle."""
        cdef sockaddr_any addr
        cdef aq_conn_t* c
        cdef bytes b_sni = _opt(server_name)
        cdef bytes b_alpn = _opt(alpn)
        self._check_open()
        _to_sockaddr(host, port, &addr)
        c = aq_conn_new_client(self.ep, &addr.sa,
                               NULL if b_sni is None else <const char*>b_sni,
                               NULL if b_alpn is None else <const char*>b_alpn)
        if c == NULL:
            raise MemoryError()
        handle = _wrap_conn(self, c)
        aq_node_unref(&c.node)  # the handle holds its own reference
        return handle

    def set_corked(self, bint corked):
        """Corked, stream commands and datagrams only owe the network thread a wake-up, paid by
        :meth:`flush`; uncorking flushes."""
        if not self.closed:
            aq_endpoint_set_corked(self.ep, corked)

    def flush(self):
        """Wake the network thread if corked commands are waiting for it."""
        self.c_flush()

    def inline_socket_fd(self):
        """The UDP socket to wait on for :meth:`receive_inline` (-1 if none): the
        core's own descriptor of it, open until :meth:`close`."""
        return -1 if self.closed else aq_inline_socket_fd(self.ep)

    def take_sockets(self, bint take):
        """Ask the network thread for the UDP socket (inline I/O: it hands it over
        when it sees fit, see :meth:`sockets_held`), or give it back.  Taking,
        False if inline I/O is off or the endpoint has more than one socket."""
        if self.closed:
            return False
        return aq_inline_take_sockets(self.ep, take) != 0

    def receive_inline(self, bint readable=True):
        """Inline I/O: if the network thread sleeps, receive what waits on the
        sockets, on this thread.  What that makes due (an ACK) waits for
        :meth:`flush` (``wake_owed`` turns true), so that it leaves with the
        answers the events call for.  1 if nothing came, 2 if
        events are ready to dispatch, 3: stop waiting on the socket until a drain
        finds :meth:`sockets_held` (the network thread takes what came), 4 for
        both (a burst came: the network thread takes the rest until the socket is
        quiet), -1 if it is gone.
        ``readable=False``: a mere look (trio's instrument), which returns 0 and
        changes nothing if the network thread is busy."""
        return self.c_receive_inline(readable)

    cdef int c_receive_inline(self, bint readable) noexcept:
        if self.closed:
            return -1
        return aq_inline_receive(self.ep, readable)

    def sockets_held(self):
        """Python holds the sockets: after :meth:`receive_inline` returned 3 or 4,
        wait on the socket again once a drain finds this true."""
        return not self.closed and aq_inline_sockets_held(self.ep) != 0

    cdef void c_flush(self) noexcept:
        if not self.closed:
            aq_endpoint_flush(self.ep)

    cdef bint c_wake_owed(self) noexcept:
        """True if corked commands wait for :meth:`flush` (a command that found its
        stream already queued for the network thread owes no wake-up)."""
        return not self.closed and aq_endpoint_wake_owed(self.ep)

    def exit_when_closed(self):
        """Let the network thread end by itself once the requested closes are out."""
        if not self.closed:
            aq_endpoint_exit_when_closed(self.ep)

    def close(self):
        """Stop the thread (joining it), close the socket and the wake fd, free
        picoquic.  Nobody may wait on :meth:`fileno` or :meth:`inline_socket_fd`
        any more; the events left can still be drained."""
        if self.closed:
            return
        self.closed = True
        with nogil:
            aq_endpoint_stop(self.ep)
        aq_endpoint_close_fd(self.ep)

    def _check_open(self):
        if self.closed or not self.started:
            raise RuntimeError("endpoint is not running")


cdef ConnHandle _wrap_conn(Endpoint endpoint, aq_conn_t* c):
    cdef ConnHandle h = ConnHandle.__new__(ConnHandle)
    h.c = c
    h.endpoint = endpoint
    aq_node_ref(&c.node)
    c.node.py_obj = <void*>h
    return h


cdef StreamHandle _wrap_stream(Endpoint endpoint, aq_stream_t* s):
    cdef StreamHandle h = StreamHandle.__new__(StreamHandle)
    cdef aq_conn_t* c = s.conn
    h.conn = <ConnHandle>c.node.py_obj if c.node.py_obj != NULL else _wrap_conn(endpoint, c)
    h.s = s
    h.stream_id = s.stream_id
    h.tx_threshold = aq_stream_tx_wake_room(s)
    aq_node_ref(&s.node)
    s.node.py_obj = <void*>h
    return h


# A handle's __dealloc__ drops C references whose release touches the endpoint,
# so the garbage collector must not clear the handle's endpoint reference first.
@cython.no_gc_clear
cdef class ConnHandle:
    """One QUIC connection as the bridge sees it."""

    def __dealloc__(self):
        if self.c != NULL:
            self.c.node.py_obj = NULL
            aq_node_unref(&self.c.node)
            self.c = NULL

    @property
    def is_client(self):
        return bool(self.c.is_client)

    @property
    def alpn(self):
        return self.c.alpn.decode(errors="replace") or None

    @property
    def local_address(self):
        return _from_sockaddr(<sockaddr*>&self.c.local_addr)

    @property
    def peer_address(self):
        """The peer's address now (it follows a migration once the handshake is done)."""
        cdef aq_path_stats_t stats
        cdef sockaddr_storage peer
        aq_conn_get_stats(self.c, &stats, &peer)
        if peer.ss_family != 0:
            return _from_sockaddr(<sockaddr*>&peer)
        return _from_sockaddr(<sockaddr*>&self.c.peer_addr)

    @property
    def path_stats(self):
        """What picoquic knows of the path, as of its last noticeable change: a dict."""
        cdef aq_path_stats_t s
        cdef sockaddr_storage peer
        aq_conn_get_stats(self.c, &s, &peer)
        return {
            "rtt_us": s.rtt_us,
            "rtt_min_us": s.rtt_min_us,
            "cwnd": s.cwnd,
            "bytes_in_flight": s.bytes_in_flight,
            "pacing_rate": s.pacing_rate,
            "packets_sent": s.packets_sent,
            "packets_lost": s.packets_lost,
            "packets_retransmitted": s.packets_retransmitted,
            "address_changes": s.address_changes,
            "stream_window": s.stream_window,
            "version": s.version,
            "cipher": s.cipher.decode(errors="replace"),
        }

    @property
    def max_datagram_size(self):
        """Largest DATAGRAM frame payload both sides accept (0 = datagrams off)."""
        return self.c.remote_max_datagram

    @property
    def peer_idle_timeout(self):
        """The peer's idle timeout in seconds (0 = none), known once ready."""
        return self.c.remote_idle_timeout_ms / 1000.0

    @property
    def close_info(self):
        """``(local_error, remote_error, local_app_error, remote_app_error, reason)``."""
        cdef aq_conn_t* c = self.c
        reason = c.remote_reason.decode(errors="replace") if c.remote_reason != NULL else ""
        return (c.local_error, c.remote_error, c.local_app_error, c.remote_app_error, reason)

    @property
    def verify_error(self):
        """Why the server's certificate chain was refused: OpenSSL's X509_V_ERR_*
        code, -1 if it did not start with the server's own certificate; 0 if not."""
        return self.c.verify_error

    @property
    def resumed(self):
        """True if the handshake resumed an earlier TLS session."""
        return bool(self.c.resumed)

    @property
    def datagrams_dropped(self):
        """``(sent, received)`` datagrams dropped because a queue was full."""
        return (self.c.dg_tx_dropped, self.c.dg_rx_dropped)

    def open_stream(self, bint uni):
        cdef aq_stream_t* s
        self.endpoint._check_open()
        s = aq_stream_new_local(self.c, uni)
        if s == NULL:
            raise MemoryError()
        h = _wrap_stream(self.endpoint, s)
        aq_node_unref(&s.node)
        return h

    def update_keys(self):
        """Ask the network thread to start a key update."""
        if not self.endpoint.closed:
            aq_conn_update_keys(self.c)

    def close(self, uint64_t code, bytes reason, double linger=0.0, uint64_t late_code=0):
        """Ask for CONNECTION_CLOSE; wait up to ``linger`` s for sent data to be acked
        first, and close with ``late_code`` instead if they are not by then."""
        if not self.endpoint.closed:
            if aq_conn_close(self.c, code, reason, <uint64_t>(linger * 1e6), late_code) != 0:
                raise MemoryError()

    @property
    def close_truncated(self):
        """True if a lingering close ran out of time with sent data unacknowledged."""
        return bool(self.c.close_truncated)

    def send_datagram(self, const uint8_t[::1] data):
        """Queue a datagram; return True if the oldest queued one was dropped for it."""
        cdef int r
        self.endpoint._check_open()
        r = aq_conn_send_datagram(self.c, &data[0] if data.shape[0] else NULL, data.shape[0])
        if r < 0:
            raise MemoryError()
        return r == 1

    def receive_datagram(self):
        """Pop one received datagram, or return None (and arm EV_DGRAM)."""
        cdef aq_dgram_t* d = aq_conn_pop_datagram(self.c, 1)
        if d == NULL:
            return None
        try:
            return PyBytes_FromStringAndSize(<char*>d.data, d.len)
        finally:
            aq_dgram_free(d)


@cython.no_gc_clear
cdef class StreamHandle:
    """One QUIC stream as the bridge sees it: two byte rings and some flags."""

    def __dealloc__(self):
        if self.s != NULL:
            self.s.node.py_obj = NULL
            aq_node_unref(&self.s.node)
            self.s = NULL

    @property
    def fin_received(self):
        return bool(self.s.rx_fin)

    @property
    def readable(self):
        """Bytes in the receive ring now."""
        return aq_stream_readable(self.s)

    @property
    def early_data(self):
        """True for a peer's stream that arrived in 0-RTT (early data)."""
        return bool(self.s.early_data)

    @property
    def reset_code(self):
        """The peer's RESET_STREAM code, or None."""
        return self.s.rx_reset_code if self.s.rx_reset else None

    @property
    def stop_code(self):
        """The peer's STOP_SENDING code, or None."""
        return self.s.tx_stop_code if self.s.tx_stopped else None

    @property
    def unsent(self):
        """Bytes still in the send ring."""
        return aq_stream_unsent(self.s)

    def read(self, size_t max_bytes):
        """Return up to ``max_bytes`` bytes, or None when the ring is empty (arms EV_RX)."""
        return self.c_read(max_bytes)

    cdef bytes c_read(self, size_t max_bytes):
        cdef size_t n = aq_stream_readable(self.s)
        cdef bytes out
        if n == 0:
            if not aq_stream_rx_arm(self.s):
                return None
            n = aq_stream_readable(self.s)
            if n == 0:
                return None
        if n > max_bytes:
            n = max_bytes
        out = PyBytes_FromStringAndSize(NULL, n)
        aq_stream_read(self.s, <uint8_t*>PyBytes_AS_STRING(out), n)
        return out

    cdef size_t c_readable(self) noexcept:
        return aq_stream_readable(self.s)

    def write(self, const uint8_t[::1] data, bint all=False, bint fin=False):
        """Copy as much of ``data`` as fits into the send ring (with ``all``, every
        byte, past the ring's size); return the count.  With ``fin``, the FIN
        follows in the same hand-off if every byte went in."""
        return self.c_write(&data[0] if data.shape[0] else NULL, data.shape[0], all, fin)

    cdef Py_ssize_t c_write(self, const uint8_t* data, size_t length, bint all, bint fin) except -1:
        cdef Py_ssize_t n
        cdef uint8_t empty = 0
        if length == 0:
            if fin:
                aq_stream_write(self.s, &empty, 0, all, fin)
            return 0
        n = aq_stream_write(self.s, data, length, all, fin)
        if n < 0:
            raise MemoryError("no memory for the stream's send buffer")
        return n

    def tx_arm(self):
        """Arm EV_TX and return the room in the send ring now."""
        return aq_stream_tx_arm(self.s)

    cdef size_t c_tx_arm(self) noexcept:
        return aq_stream_tx_arm(self.s)

    def send_fin(self):
        aq_stream_send_fin(self.s)

    cdef void c_send_fin(self) noexcept:
        aq_stream_send_fin(self.s)

    def reset(self, uint64_t code):
        if not self.conn.endpoint.closed:
            aq_stream_reset(self.s, code)

    def discard_rx(self):
        """Drop the unread bytes, and those still to come: nobody will read them."""
        aq_stream_discard_rx(self.s)

    cdef void c_discard_rx(self) noexcept:
        aq_stream_discard_rx(self.s)

    def stop_sending(self, uint64_t code):
        if not self.conn.endpoint.closed:
            aq_stream_stop_sending(self.s, code)

    def release(self):
        """Python is done with this stream: a peer's stream gives its credit back
        (MAX_STREAMS) once picoquic is done with it too.  Idempotent."""
        if not self.conn.endpoint.closed:
            aq_stream_release(self.s)
