/*
 * endpoint.c: creating, starting, stopping and freeing an endpoint (Python
 * thread), and the network thread's start and exit.
 */
#include "internal.h"
#include "autoqlog.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* 1 ms, as picoquic's option string "T<microseconds>" (see bbr.c BBRSetOptions). */
#define AQ_BBR_SHADOW_RTT_OPTION "T1000"

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
    if (ep->inline_io) {
        atomic_store(&ep->net_sleeping, 0); /* nobody may work for it any more */
        pthread_mutex_unlock(&ep->work_lock); /* held since aq_thread_main */
    }
    atomic_store(&ep->py_wake_pending, 1);
    uint64_t one = 1;
    ssize_t r = write(ep->wake_fd, &one, sizeof(one));
    (void)r;
}

static void* aq_thread_main(void* arg)
{
    aq_endpoint_t* ep = (aq_endpoint_t*)arg;
    /* picoquic's loop ends with pthread_exit(), so report the exit from a cleanup handler. */
    aq_on_network_thread = 1;
    if (ep->inline_io) {
        pthread_mutex_lock(&ep->work_lock); /* let go of only for the loop's waits */
    }
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
    aq_chunk_pool_init(&ep->chunk_pool, AQ_POOL_CHUNKS);
    ep->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ep->inline_fd = -1;
    pthread_mutex_init(&ep->start_lock, NULL);
    pthread_cond_init(&ep->start_cond, NULL);
    pthread_mutex_init(&ep->work_lock, NULL);
    ep->inline_io = cfg->inline_io;
    ep->stopped = 1; /* until started */
    if (ep->wake_fd < 0) {
        snprintf(err, errlen, "eventfd failed: %s", strerror(errno));
        aq_endpoint_free(ep);
        return NULL;
    }
    ep->is_server = cfg->is_server;
    ep->early_data = cfg->early_data;
    ep->version = cfg->version;
    ep->desired_version = cfg->desired_version;
    ep->rx_window = (size_t)cfg->max_stream_data;
    ep->conn_window = cfg->max_data;
    ep->rx_window_max = (size_t)(cfg->max_stream_window != 0 ? cfg->max_stream_window : cfg->max_data);
    if (ep->rx_window_max < ep->rx_window) {
        ep->rx_window_max = ep->rx_window;
    }
    ep->tx_cap = (size_t)cfg->send_buffer;
    ep->conn_tx_cap = cfg->connection_send_buffer;
    ep->dgram_queue = cfg->datagram_queue > 0 ? (size_t)cfg->datagram_queue : 1;
    ep->local_max_datagram = cfg->max_datagram_frame_size;
    ep->n_alpns = cfg->n_alpns;
    ep->alpns = (char**)calloc(cfg->n_alpns ? cfg->n_alpns : 1, sizeof(char*));
    for (size_t i = 0; ep->alpns != NULL && i < cfg->n_alpns; i++) {
        if ((ep->alpns[i] = strdup(cfg->alpns[i])) == NULL) {
            break;
        }
    }
    if (ep->alpns == NULL || (cfg->n_alpns > 0 && ep->alpns[cfg->n_alpns - 1] == NULL)) {
        snprintf(err, errlen, "out of memory");
        aq_endpoint_free(ep);
        return NULL;
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
        aq_accept_early_data(ep->quic, cfg->early_data);
        if (cfg->retry) {
            picoquic_set_cookie_mode(ep->quic, 1); /* a Retry for every new connection */
        }
    }
    if (cfg->n_cipher_suites > 0 && aq_set_cipher_suites(ep->quic, cfg->cipher_suites, cfg->n_cipher_suites) != 0) {
        snprintf(err, errlen, "a cipher suite is not available in this build, or out of memory");
        aq_endpoint_free(ep);
        return NULL;
    }
    picoquic_set_app_max_data(ep->quic, 1); /* see aq_grant_max_data() */
    picoquic_set_app_stream_credit(ep->quic, 1); /* see aq_return_stream_credit() */
    /* Path statistics for Python: a fresh copy when the RTT moves by 1 ms or the
     * pacing rate by 1 MB/s (picoquic_callback_path_quality_changed). */
    picoquic_default_quality_update(ep->quic, 1000000, 1000);
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
    /* bbr sizes its window as a multiple of bandwidth x min RTT.  Where the min RTT
     * is below what the end hosts' own scheduling adds to every round trip (a few
     * hundred microseconds of thread wake-ups: loopback, a LAN), that window stalls
     * the sender between ACKs and bbr reads the stall as the path's bandwidth, down
     * to its floor of a few packets.  picoquic's bbr and bbr1 take a "shadow RTT"
     * option for that case (made for Wi-Fi): below it, the window is computed as if
     * the min RTT were the shadow RTT, and "path saturated" detection, which needs a
     * faithful min RTT, is off.  Paths with a min RTT above it are unaffected. */
    char const* cc_option = NULL;
    if (strcmp(cfg->congestion_control, "bbr") == 0 || strcmp(cfg->congestion_control, "bbr1") == 0) {
        cc_option = AQ_BBR_SHADOW_RTT_OPTION;
    }
    picoquic_set_default_congestion_algorithm_ex(ep->quic, cc, cc_option);
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
    if (ep->inline_io) {
        ep->inline_fd = aq_inline_dup_socket(ep);
    }
    return atomic_load(&ep->port);
}

int64_t aq_endpoint_buffer_chunks(aq_endpoint_t* ep)
{
    return atomic_load(&ep->chunk_pool.in_use);
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

void aq_endpoint_set_corked(aq_endpoint_t* ep, int corked)
{
    ep->corked = corked;
    if (!corked) {
        aq_endpoint_flush(ep);
    }
}

void aq_endpoint_flush(aq_endpoint_t* ep)
{
    size_t written = ep->written_since_flush;
    int after_receive = ep->send_owed_by_receive;
    ep->written_since_flush = 0;
    ep->send_owed_by_receive = 0;
    if (atomic_exchange(&ep->wake_owed, 0) && !ep->stopped) {
        /* A message or two goes out from here; a burst from the network thread,
         * beside the event loop. */
        if (ep->inline_io && written <= AQ_INLINE_FLUSH_MAX && aq_inline_flush(ep, after_receive)) {
            return;
        }
        aq_wake_net(ep);
    }
}

int aq_endpoint_wake_owed(aq_endpoint_t* ep)
{
    return atomic_load(&ep->wake_owed);
}

void aq_endpoint_describe(aq_endpoint_t* ep, char* buf, size_t size)
{
    /* Fields of the network thread read without its lock: a diagnosis only. */
    snprintf(buf, size,
        "events_waiting=%d py_wake_pending=%d py_signal_needed=%d net_idle=%d net_sleeping=%d "
        "net_wake_pending=%d commands_waiting=%d wake_owed=%d python_wants=%d sockets_to_python=%d "
        "python_paused=%d handshaking=%u handback_us=%llu thread_exited=%d",
        atomic_load(&ep->py_head) != NULL || ep->drain_cur != NULL, atomic_load(&ep->py_wake_pending),
        ep->py_signal_needed, atomic_load(&ep->net_idle), atomic_load(&ep->net_sleeping),
        atomic_load(&ep->net_wake_pending), atomic_load(&ep->net_head) != NULL, atomic_load(&ep->wake_owed),
        atomic_load(&ep->python_wants), atomic_load(&ep->sockets_to_python), atomic_load(&ep->python_paused),
        ep->handshaking, (unsigned long long)ep->handback_us, atomic_load(&ep->thread_exited));
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

void aq_endpoint_close_fd(aq_endpoint_t* ep)
{
    if (ep->wake_fd >= 0) {
        close(ep->wake_fd);
        ep->wake_fd = -1;
    }
    if (ep->inline_fd >= 0) {
        close(ep->inline_fd);
        ep->inline_fd = -1;
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
    if (ep->inline_fd >= 0) {
        close(ep->inline_fd);
    }
    for (size_t i = 0; ep->alpns != NULL && i < ep->n_alpns; i++) {
        free(ep->alpns[i]);
    }
    free(ep->alpns);
    free(ep->to_delete);
    pthread_mutex_destroy(&ep->start_lock);
    pthread_cond_destroy(&ep->start_cond);
    pthread_mutex_destroy(&ep->work_lock);
    aq_chunk_pool_clear(&ep->chunk_pool);
    free(ep);
}
