/*
 * trust.c: see trust.h.  The validation itself is picotls's OpenSSL verifier;
 * this file only remembers what it accepted.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* timegm */
#endif
#include "trust.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "picotls.h"
#include "picotls/openssl.h"
#include "picoquic_internal.h" /* picoformat_32, PICOPARSE_32 */

/* Chains remembered per store (the oldest goes first), and for how long at most. */
#define AQ_TRUST_REMEMBER 8
#define AQ_TRUST_MAX_AGE_S 3600

typedef int (*aq_sign_verifier_fn)(void*, uint16_t, ptls_iovec_t, ptls_iovec_t);

typedef struct {
    char* server_name; /* NULL: a free slot */
    uint8_t* chain;    /* each certificate: its length (4 bytes, big endian), then its DER */
    size_t chain_len;
    EVP_PKEY* key;     /* the leaf's public key, for the handshake signature */
    aq_sign_verifier_fn verify_sign;
    time_t valid_from, valid_until;
} aq_validated_t;

struct aq_trust {
    atomic_int refs;
    X509_STORE* store;
    pthread_mutex_t lock;
    aq_validated_t chains[AQ_TRUST_REMEMBER];
    size_t next; /* the slot to fill next */
    unsigned long hits;
};

typedef struct {
    ptls_verify_certificate_t super; /* first: picotls hands this pointer back */
    ptls_openssl_verify_certificate_t openssl;
    ptls_openssl_override_verify_certificate_t on_result; /* sees OpenSSL's error code */
    aq_verify_failed_fn on_failure;
    aq_trust_t* trust;
} aq_verifier_t;

aq_trust_t* aq_trust_load(const char* cafile, char* err, size_t errlen)
{
    aq_trust_t* trust = (aq_trust_t*)calloc(1, sizeof(aq_trust_t));
    X509_STORE* store = X509_STORE_new();
    X509_LOOKUP* lookup = store != NULL ? X509_STORE_add_lookup(store, X509_LOOKUP_file()) : NULL;
    if (trust == NULL || lookup == NULL || X509_LOOKUP_load_file(lookup, cafile, X509_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "no CA certificate could be read from %s (expected PEM)", cafile);
        X509_STORE_free(store);
        free(trust);
        return NULL;
    }
    atomic_init(&trust->refs, 1);
    trust->store = store;
    pthread_mutex_init(&trust->lock, NULL);
    return trust;
}

static void aq_validated_clear(aq_validated_t* v)
{
    free(v->server_name);
    free(v->chain);
    EVP_PKEY_free(v->key);
    memset(v, 0, sizeof(*v));
}

void aq_trust_free(aq_trust_t* trust)
{
    if (trust == NULL || atomic_fetch_sub(&trust->refs, 1) != 1) {
        return;
    }
    for (size_t i = 0; i < AQ_TRUST_REMEMBER; i++) {
        aq_validated_clear(&trust->chains[i]);
    }
    X509_STORE_free(trust->store);
    pthread_mutex_destroy(&trust->lock);
    free(trust);
}

unsigned long aq_trust_hits(aq_trust_t* trust)
{
    pthread_mutex_lock(&trust->lock);
    unsigned long hits = trust->hits;
    pthread_mutex_unlock(&trust->lock);
    return hits;
}

static int aq_chain_equals(const aq_validated_t* v, const ptls_iovec_t* certs, size_t num_certs)
{
    size_t at = 0;
    for (size_t i = 0; i < num_certs; i++) {
        size_t len = certs[i].len;
        if (v->chain_len - at < 4 + len) {
            return 0;
        }
        const uint8_t* p = v->chain + at;
        if (PICOPARSE_32(p) != len ||
            memcmp(p + 4, certs[i].base, len) != 0) {
            return 0;
        }
        at += 4 + len;
    }
    return at == v->chain_len;
}

/* A chain validated before for this name, still valid now: hand out its key. */
static int aq_trust_recall(aq_trust_t* trust, const char* server_name, const ptls_iovec_t* certs,
    size_t num_certs, aq_sign_verifier_fn* verify_sign, void** verify_data)
{
    time_t now = time(NULL);
    int found = 0;
    pthread_mutex_lock(&trust->lock);
    for (size_t i = 0; i < AQ_TRUST_REMEMBER && !found; i++) {
        aq_validated_t* v = &trust->chains[i];
        if (v->server_name != NULL && now >= v->valid_from && now < v->valid_until &&
            strcmp(v->server_name, server_name) == 0 && aq_chain_equals(v, certs, num_certs)) {
            EVP_PKEY_up_ref(v->key); /* the signature check frees its reference */
            *verify_data = v->key;
            *verify_sign = v->verify_sign;
            trust->hits++;
            found = 1;
        }
    }
    pthread_mutex_unlock(&trust->lock);
    return found;
}

static int aq_asn1_time(const ASN1_TIME* t, time_t* out)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
        return -1;
    }
    *out = timegm(&tm);
    return 0;
}

/* The window in which every certificate of the chain is valid, at most an hour from now. */
static int aq_chain_validity(const ptls_iovec_t* certs, size_t num_certs, time_t* from, time_t* until)
{
    *from = 0;
    *until = time(NULL) + AQ_TRUST_MAX_AGE_S;
    for (size_t i = 0; i < num_certs; i++) {
        const unsigned char* p = certs[i].base;
        X509* x = d2i_X509(NULL, &p, (long)certs[i].len);
        time_t not_before, not_after;
        int bad = x == NULL || aq_asn1_time(X509_get0_notBefore(x), &not_before) != 0 ||
            aq_asn1_time(X509_get0_notAfter(x), &not_after) != 0;
        X509_free(x);
        if (bad) {
            return -1;
        }
        if (not_before > *from) {
            *from = not_before;
        }
        if (not_after < *until) {
            *until = not_after;
        }
    }
    return 0;
}

static void aq_trust_remember(aq_trust_t* trust, const char* server_name, const ptls_iovec_t* certs,
    size_t num_certs, aq_sign_verifier_fn verify_sign, EVP_PKEY* key)
{
    aq_validated_t v = { 0 };
    for (size_t i = 0; i < num_certs; i++) {
        v.chain_len += 4 + certs[i].len;
    }
    if (aq_chain_validity(certs, num_certs, &v.valid_from, &v.valid_until) != 0 ||
        (v.chain = (uint8_t*)malloc(v.chain_len)) == NULL || (v.server_name = strdup(server_name)) == NULL) {
        aq_validated_clear(&v);
        return; /* not remembered: validated again next time */
    }
    uint8_t* p = v.chain;
    for (size_t i = 0; i < num_certs; i++) {
        size_t len = certs[i].len;
        picoformat_32(p, (uint32_t)len);
        memcpy(p + 4, certs[i].base, len);
        p += 4 + len;
    }
    EVP_PKEY_up_ref(key);
    v.key = key;
    v.verify_sign = verify_sign;
    pthread_mutex_lock(&trust->lock);
    aq_validated_clear(&trust->chains[trust->next]);
    trust->chains[trust->next] = v;
    trust->next = (trust->next + 1) % AQ_TRUST_REMEMBER;
    pthread_mutex_unlock(&trust->lock);
}

static int aq_verify(ptls_verify_certificate_t* self, ptls_t* tls, const char* server_name,
    aq_sign_verifier_fn* verify_sign, void** verify_data, ptls_iovec_t* certs, size_t num_certs)
{
    aq_verifier_t* verifier = (aq_verifier_t*)self;
    /* Only a client's view of a named server is remembered. */
    int rememberable = num_certs > 0 && server_name != NULL && !ptls_is_server(tls);
    if (rememberable && aq_trust_recall(verifier->trust, server_name, certs, num_certs, verify_sign, verify_data)) {
        return 0;
    }
    int ret = verifier->openssl.super.cb(&verifier->openssl.super, tls, server_name, verify_sign, verify_data,
        certs, num_certs);
    if (ret == 0 && rememberable && *verify_data != NULL) {
        aq_trust_remember(verifier->trust, server_name, certs, num_certs, *verify_sign, (EVP_PKEY*)*verify_data);
    }
    return ret;
}

/* A CA certificate where the server's own should be, the server's own further on. */
static int aq_leaf_misplaced(X509* first, STACK_OF(X509)* chain)
{
    if (first == NULL || X509_check_ca(first) == 0) {
        return 0;
    }
    for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
        if (X509_check_ca(sk_X509_value(chain, i)) == 0) {
            return 1;
        }
    }
    return 0;
}

/* picotls's verdict, and OpenSSL's reason for it: pass the reason on, keep the verdict. */
static int aq_verify_result(ptls_openssl_override_verify_certificate_t* self, ptls_t* tls, int ret, int ossl_ret,
    X509* cert, STACK_OF(X509)* chain)
{
    aq_verifier_t* verifier = (aq_verifier_t*)((char*)self - offsetof(aq_verifier_t, on_result));
    if (ret != 0 && verifier->on_failure != NULL) {
        int reason = aq_leaf_misplaced(cert, chain) ? AQ_VERIFY_CHAIN_ORDER : ossl_ret;
        verifier->on_failure((picoquic_cnx_t*)*ptls_get_data_ptr(tls), reason);
    }
    return ret;
}

static void aq_verifier_free(ptls_verify_certificate_t* self)
{
    aq_verifier_t* verifier = (aq_verifier_t*)self;
    ptls_openssl_dispose_verify_certificate(&verifier->openssl);
    aq_trust_free(verifier->trust);
    free(verifier);
}

int aq_trust_use(picoquic_quic_t* quic, aq_trust_t* trust, aq_verify_failed_fn on_failure)
{
    aq_verifier_t* verifier = (aq_verifier_t*)calloc(1, sizeof(aq_verifier_t));
    if (verifier == NULL || ptls_openssl_init_verify_certificate(&verifier->openssl, trust->store) != 0) {
        free(verifier);
        return -1;
    }
    verifier->super.cb = aq_verify;
    verifier->super.algos = verifier->openssl.super.algos;
    verifier->on_result.cb = aq_verify_result;
    verifier->on_failure = on_failure;
    verifier->openssl.override_callback = &verifier->on_result;
    atomic_fetch_add(&trust->refs, 1);
    verifier->trust = trust;
    picoquic_set_verify_certificate_callback(quic, &verifier->super, aq_verifier_free);
    return 0;
}
