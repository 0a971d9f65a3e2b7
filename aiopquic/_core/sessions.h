/*
 * sessions.h: TLS session tickets kept across client endpoints.
 *
 * A picoquic context's own ticket store dies with it, and most client contexts
 * serve one connection.  A cache (one per QuicConfig) keeps the tickets servers
 * send and hands one to the next connection to the same server name and ALPN,
 * which then resumes the session (no certificate to send or verify).  A ticket
 * is used once, whether it came from the cache or from an earlier connection
 * of the same context.  Thread-safe: contexts on several network threads share it.
 */
#ifndef AIOPQUIC_SESSIONS_H
#define AIOPQUIC_SESSIONS_H

#include <stdint.h>

#include "picoquic.h"

typedef struct aq_sessions aq_sessions_t;

aq_sessions_t* aq_sessions_new(void);
void aq_sessions_free(aq_sessions_t* cache);

/* Network thread, before creating a connection: unless the context holds an
 * unused ticket for (sni, alpn) already, move one valid ticket for them (if
 * any) from the cache into the context. */
void aq_sessions_lend(aq_sessions_t* cache, picoquic_quic_t* quic, const char* sni, const char* alpn);

/* Network thread, once a client connection has started: mark the ticket it
 * resumes with (if any) used, so that neither a later connection of the same
 * context nor the cache takes it again. */
void aq_sessions_mark_used(picoquic_cnx_t* cnx);

/* Network thread: drop the tickets the context holds (for a config that does
 * not resume sessions, whose contexts still receive tickets). */
void aq_sessions_forget(picoquic_quic_t* quic);

/* Once the context's thread has stopped: move the context's unused tickets
 * into the cache. */
void aq_sessions_keep(aq_sessions_t* cache, picoquic_quic_t* quic);

#endif
