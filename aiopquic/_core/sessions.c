/*
 * sessions.c: see sessions.h.  Tickets move between picoquic contexts as they
 * are: picoquic_stored_ticket_t blocks (one malloc each), relinked, never copied.
 */
#include "sessions.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "picoquic_internal.h"
#include "picoquic_utils.h"
#include "tls_api.h"

/* Bound the cache: servers send a ticket or two per connection. */
#define AQ_SESSIONS_MAX 32

struct aq_sessions {
    pthread_mutex_t lock;
    picoquic_stored_ticket_t* first; /* newest first */
    size_t count;
};

static uint64_t aq_ticket_id(const picoquic_stored_ticket_t* t)
{
    return t->ticket_length >= 8 ? PICOPARSE_64(t->ticket) : 0;
}

aq_sessions_t* aq_sessions_new(void)
{
    aq_sessions_t* cache = (aq_sessions_t*)calloc(1, sizeof(aq_sessions_t));
    if (cache != NULL) {
        pthread_mutex_init(&cache->lock, NULL);
    }
    return cache;
}

void aq_sessions_free(aq_sessions_t* cache)
{
    if (cache == NULL) {
        return;
    }
    picoquic_free_tickets(&cache->first);
    pthread_mutex_destroy(&cache->lock);
    free(cache);
}

void aq_sessions_lend(aq_sessions_t* cache, picoquic_quic_t* quic, const char* sni, const char* alpn)
{
    uint64_t now = picoquic_get_tls_time(quic); /* the clock of time_valid_until */
    size_t sni_length = strlen(sni), alpn_length = strlen(alpn);
    picoquic_stored_ticket_t** link;
    picoquic_stored_ticket_t* found = NULL;

    if (picoquic_get_stored_ticket(quic, sni, (uint16_t)sni_length, alpn, (uint16_t)alpn_length, 0, 1, 0) != NULL) {
        return; /* an earlier connection of this context got one: it goes first */
    }
    pthread_mutex_lock(&cache->lock);
    for (link = &cache->first; *link != NULL;) {
        picoquic_stored_ticket_t* t = *link;
        if (t->time_valid_until <= now) {
            *link = t->next_ticket; /* expired: drop it */
            cache->count--;
            free(t);
            continue;
        }
        if (found == NULL && t->sni_length == sni_length && t->alpn_length == alpn_length &&
            memcmp(t->sni, sni, sni_length) == 0 && memcmp(t->alpn, alpn, alpn_length) == 0) {
            *link = t->next_ticket;
            cache->count--;
            found = t;
            continue;
        }
        link = &t->next_ticket;
    }
    pthread_mutex_unlock(&cache->lock);
    if (found != NULL) {
        found->next_ticket = quic->p_first_ticket;
        found->was_used = 0;
        quic->p_first_ticket = found;
    }
}

void aq_sessions_mark_used(picoquic_cnx_t* cnx)
{
    if (cnx->resumed_ticket_id == 0) {
        return; /* a full handshake */
    }
    for (picoquic_stored_ticket_t* t = cnx->quic->p_first_ticket; t != NULL; t = t->next_ticket) {
        if (aq_ticket_id(t) == cnx->resumed_ticket_id) {
            t->was_used = 1;
        }
    }
}

void aq_sessions_forget(picoquic_quic_t* quic)
{
    picoquic_free_tickets(&quic->p_first_ticket);
}

void aq_sessions_keep(aq_sessions_t* cache, picoquic_quic_t* quic)
{
    picoquic_stored_ticket_t** link = &quic->p_first_ticket;
    pthread_mutex_lock(&cache->lock);
    while (*link != NULL) {
        picoquic_stored_ticket_t* t = *link;
        if (t->was_used) {
            link = &t->next_ticket; /* used once: picoquic frees it with the context */
            continue;
        }
        *link = t->next_ticket;
        t->next_ticket = cache->first;
        cache->first = t;
        cache->count++;
    }
    /* Too many: drop the oldest. */
    if (cache->count > AQ_SESSIONS_MAX) {
        picoquic_stored_ticket_t* t = cache->first;
        for (size_t i = 1; i < AQ_SESSIONS_MAX; i++) {
            t = t->next_ticket;
        }
        picoquic_free_tickets(&t->next_ticket);
        cache->count = AQ_SESSIONS_MAX;
    }
    pthread_mutex_unlock(&cache->lock);
}
