/*
 * trust.h: a CA store shared by the client endpoints of a QuicConfig, and the
 * certificate chains it has already validated.
 *
 * Validating a server's chain (decoding each certificate, building the path
 * to a trusted root, checking signatures and the name) costs OpenSSL 3 about
 * half a millisecond.  A client that connects to the same server again gets
 * the same chain, byte for byte: the store remembers which chains it validated
 * for which server name, and until the earliest expiry among their
 * certificates (or an hour, whichever is sooner) it accepts the same bytes for
 * the same name without validating them again.  The handshake signature
 * (CertificateVerify), which proves the server holds the key, is still checked
 * on every connection.  Thread-safe: verifiers on several network threads
 * share one store.
 */
#ifndef AIOPQUIC_TRUST_H
#define AIOPQUIC_TRUST_H

#include <stddef.h>

#include "picoquic.h"

typedef struct aq_trust aq_trust_t;

/* Python thread: read the PEM CA certificates of `cafile`; NULL (and `err`) if none. */
aq_trust_t* aq_trust_load(const char* cafile, char* err, size_t errlen);
/* Drop the caller's reference; verifiers keep theirs until their context goes. */
void aq_trust_free(aq_trust_t* trust);

/* Why a verification failed, as told to aq_verify_failed_fn: an OpenSSL
 * X509_V_ERR_* code, or this one when the chain does not start with the
 * server's own certificate (a CA certificate first, a leaf after it). */
#define AQ_VERIFY_CHAIN_ORDER (-1)

/* Network thread: the chain `cnx`'s peer presented failed verification. */
typedef void (*aq_verify_failed_fn)(picoquic_cnx_t* cnx, int reason);

/* Verify the peers of `quic` against `trust` (remembering validated chains);
 * tell `on_failure` (may be NULL) why a chain is refused. */
int aq_trust_use(picoquic_quic_t* quic, aq_trust_t* trust, aq_verify_failed_fn on_failure);

/* How many chains were taken from memory instead of being validated (tests). */
unsigned long aq_trust_hits(aq_trust_t* trust);

#endif
