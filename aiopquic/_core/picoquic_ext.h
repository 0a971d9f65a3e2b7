/*
 * picoquic_ext.h: small queries picoquic's API lacks, read from its internal
 * structures.  They depend on the picoquic version pinned by the build.
 */
#ifndef AIOPQUIC_PICOQUIC_EXT_H
#define AIOPQUIC_PICOQUIC_EXT_H

#include "picoquic.h"

/* 1 while stream data we sent is not acknowledged: a STREAM or RESET_STREAM
 * frame in a packet in flight, or stream data waiting to be sent again after a
 * loss.  Control frames (NEW_CONNECTION_ID, ACK_FREQUENCY...) do not count. */
int aq_stream_data_unacked(picoquic_cnx_t* cnx);

/* 1 if stream_id is ours and beyond the stream limit the peer granted so far:
 * any frame for it now would be a STREAM_LIMIT_ERROR at the peer. */
int aq_stream_beyond_peer_limit(picoquic_cnx_t* cnx, uint64_t stream_id);

/* Server: accept 0-RTT (early) data from resuming clients, or not.  picoquic
 * always accepts it; refusing also issues session tickets that do not offer it. */
void aq_accept_early_data(picoquic_quic_t* quic, int accept);

/* 1 if a STREAM frame of this stream came in a 0-RTT packet (patch 0008). */
int aq_stream_is_0rtt(picoquic_cnx_t* cnx, uint64_t stream_id);

/* The negotiated QUIC version (0 before it is known), the TLS cipher suite's
 * name (NULL before the handshake) and the packets retransmitted so far. */
uint32_t aq_cnx_version(picoquic_cnx_t* cnx);
const char* aq_cnx_cipher(picoquic_cnx_t* cnx);
uint64_t aq_cnx_retransmissions(picoquic_cnx_t* cnx);

/* Receive flow control of one stream as picoquic sees it: *edge is the end of
 * the furthest bytes the peer has sent us (out-of-order ones included), *limit
 * the MAX_STREAM_DATA we last granted.  0, or -1 if picoquic has no such stream. */
int aq_stream_rx_edge(picoquic_cnx_t* cnx, uint64_t stream_id, uint64_t* edge, uint64_t* limit);

/* Restrict the TLS cipher suites to these IANA IDs, in this order of preference:
 * 0, or -1 (nothing changed) if one is not available or out of memory. */
int aq_set_cipher_suites(picoquic_quic_t* quic, const uint16_t* ids, size_t n);

#endif
