/*
 * sessions.h: TLS session tickets kept across client endpoints.
 *
 * Each client connection has its own picoquic context, so picoquic's own ticket
 * store dies with it.  A cache (one per QuicConfig) keeps the tickets servers
 * send and hands one to the next connection to the same server name and ALPN,
 * which then resumes the session (no certificate to send or verify).  A ticket
 * is used once.  Thread-safe: contexts on several network threads share it.
 */
#ifndef AIOPQUIC_SESSIONS_H
#define AIOPQUIC_SESSIONS_H

#include <stdint.h>

#include "picoquic.h"

typedef struct aq_sessions aq_sessions_t;

aq_sessions_t* aq_sessions_new(void);
void aq_sessions_free(aq_sessions_t* cache);

/* Network thread, before creating a connection: move one valid ticket for
 * (sni, alpn) from the cache into the context.  Returns its id, 0 if none. */
uint64_t aq_sessions_lend(aq_sessions_t* cache, picoquic_quic_t* quic, const char* sni, const char* alpn);

/* Once the context's thread has stopped: move the context's tickets into the
 * cache, except the one lent (id `lent_id`): it has been used. */
void aq_sessions_keep(aq_sessions_t* cache, picoquic_quic_t* quic, uint64_t lent_id);

#endif
