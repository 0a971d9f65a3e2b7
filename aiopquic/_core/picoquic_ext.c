/* picoquic_ext.c: see picoquic_ext.h. */
#include "picoquic_ext.h"

#include <stdlib.h>

#include "picoquic_internal.h"
#include "picotls.h"
#include "picotls/minicrypto.h"
#include "picotls/openssl.h"
#include "picoquic_crypto_provider_api.h"
#include "tls_api.h"
#include "bridge.h"

static int aq_is_stream_frame(uint8_t type)
{
    return type == picoquic_frame_type_reset_stream ||
        (type >= picoquic_frame_type_stream_range_min && type <= picoquic_frame_type_stream_range_max);
}

int aq_stream_data_unacked(picoquic_cnx_t* cnx)
{
    if (cnx->is_multipath_enabled) {
        return !picoquic_is_cnx_backlog_empty(cnx); /* per-path contexts: stay conservative */
    }
    if (cnx->queue_data_repeat_tree.size > 0) {
        return 1;
    }
    for (picoquic_packet_t* p = cnx->pkt_ctx[picoquic_packet_context_application].pending_first; p != NULL;
         p = p->packet_next) {
        size_t at = p->offset;
        if (p->is_ack_trap || p->is_mtu_probe || p->is_multipath_probe) {
            continue;
        }
        while (at < p->length) {
            size_t consumed = 0;
            int pure_ack = 0;
            if (aq_is_stream_frame(p->bytes[at])) {
                return 1;
            }
            if (picoquic_skip_frame(&p->bytes[at], p->length - at, &consumed, &pure_ack) != 0 || consumed == 0) {
                break;
            }
            at += consumed;
        }
    }
    return 0;
}

int aq_stream_beyond_peer_limit(picoquic_cnx_t* cnx, uint64_t stream_id)
{
    uint64_t limit = IS_BIDIR_STREAM_ID(stream_id) ? cnx->max_streams_bidir_remote : cnx->max_streams_unidir_remote;
    return IS_LOCAL_STREAM_ID(stream_id, cnx->client_mode) && STREAM_RANK_FROM_ID(stream_id) > limit;
}

int aq_stream_rx_edge(picoquic_cnx_t* cnx, uint64_t stream_id, uint64_t* edge, uint64_t* limit)
{
    picoquic_stream_head_t* stream = picoquic_find_stream(cnx, stream_id);
    picoquic_stream_data_node_t* last;
    if (stream == NULL) {
        return -1;
    }
    /* Out-of-order segments wait in stream_data_tree, sorted by offset. */
    last = (picoquic_stream_data_node_t*)picosplay_last(&stream->stream_data_tree);
    *edge = stream->consumed_offset;
    if (last != NULL && last->offset + last->length > *edge) {
        *edge = last->offset + last->length;
    }
    *limit = stream->maxdata_local;
    return 0;
}

void aq_accept_early_data(picoquic_quic_t* quic, int accept)
{
    ptls_context_t* ctx = (ptls_context_t*)quic->tls_master_ctx;
    if (ctx != NULL) {
        ctx->max_early_data_size = accept ? 0xFFFFFFFF : 0; /* picoquic's own value, or none */
    }
}

int aq_stream_is_0rtt(picoquic_cnx_t* cnx, uint64_t stream_id)
{
    picoquic_stream_head_t* stream = picoquic_find_stream(cnx, stream_id);
    return stream != NULL && stream->is_0rtt_received;
}

uint32_t aq_cnx_version(picoquic_cnx_t* cnx)
{
    return cnx->version_index >= 0 ? picoquic_supported_versions[cnx->version_index].version : 0;
}

const char* aq_cnx_cipher(picoquic_cnx_t* cnx)
{
    picoquic_tls_ctx_t* tls = (picoquic_tls_ctx_t*)cnx->tls_ctx;
    ptls_cipher_suite_t* suite = tls != NULL && tls->tls != NULL ? ptls_get_cipher(tls->tls) : NULL;
    if (suite == NULL) {
        return NULL;
    }
    if (suite->name != NULL) {
        return suite->name;
    }
    /* picoquic's fusion suites leave the name out. */
    switch (suite->id) {
    case PTLS_CIPHER_SUITE_AES_128_GCM_SHA256:
        return PTLS_CIPHER_SUITE_NAME_AES_128_GCM_SHA256;
    case PTLS_CIPHER_SUITE_AES_256_GCM_SHA384:
        return PTLS_CIPHER_SUITE_NAME_AES_256_GCM_SHA384;
    case PTLS_CIPHER_SUITE_CHACHA20_POLY1305_SHA256:
        return PTLS_CIPHER_SUITE_NAME_CHACHA20_POLY1305_SHA256;
    default:
        return NULL;
    }
}

uint64_t aq_cnx_retransmissions(picoquic_cnx_t* cnx)
{
    return cnx->nb_retransmission_total;
}

int aq_set_cipher_suites(picoquic_quic_t* quic, const uint16_t* ids, size_t n)
{
    ptls_context_t* ctx = (ptls_context_t*)quic->tls_master_ctx;
    ptls_cipher_suite_t** chosen;
    size_t k = 0;
    if (ctx == NULL || ctx->cipher_suites == NULL ||
        (chosen = (ptls_cipher_suite_t**)calloc(n + 1, sizeof(*chosen))) == NULL) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; ctx->cipher_suites[j] != NULL; j++) {
            if (ctx->cipher_suites[j]->id == ids[i]) {
                chosen[k++] = ctx->cipher_suites[j];
                break;
            }
        }
    }
    if (k != n) {
        free(chosen);
        return -1;
    }
    free((void*)ctx->cipher_suites); /* picoquic's own malloc'ed list, freed the same way */
    ctx->cipher_suites = chosen;
    return 0;
}

const char* aq_aes_gcm_engine(void)
{
    ptls_cipher_suite_t const* suite;
    picoquic_tls_api_init(); /* the providers register once, at the first context */
    suite = (ptls_cipher_suite_t const*)picoquic_get_cipher_suite_by_id_v(PTLS_CIPHER_SUITE_AES_128_GCM_SHA256, 0);
    if (suite == NULL) {
        return "none";
    }
    if (suite->aead == &ptls_openssl_aes128gcm) {
        return "openssl";
    }
    if (suite->aead == &ptls_minicrypto_aes128gcm) {
        return "minicrypto";
    }
    return "fusion"; /* the only other provider this build registers */
}
