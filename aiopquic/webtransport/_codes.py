"""WebTransport over HTTP/3 code points, for every dialect we speak.

Sources, checked against the drafts' own text (the tags of
github.com/ietf-wg-webtrans/draft-ietf-webtrans-http3) and two independent
implementations (picoquic ``picohttp/h3zero.h``, quic-go ``webtransport-go``
``protocol.go``/``errors.go``/``capsule.go``):

- draft-02 section 8: SETTINGS_ENABLE_WEBTRANSPORT 0x2b603742, the
  WEBTRANSPORT_STREAM signal 0x41, the uni stream type 0x54,
  H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED 0x3994bd84, application errors from
  0x52e4a40fa8db (8-bit codes only in that draft);
- draft-13 and -14 section 9: SETTINGS_WT_MAX_SESSIONS 0x14e9cd29,
  SETTINGS_WT_INITIAL_MAX_STREAMS_UNI 0x2b64, ..._BIDI 0x2b65,
  SETTINGS_WT_INITIAL_MAX_DATA 0x2b61, WT_SESSION_GONE 0x170d7b68, the
  capsules, 32-bit application errors up to 0x52e5ac983162; draft-14 adds
  WT_FLOW_CONTROL_ERROR 0x045d4487;
- draft-15 and -16 section 9: SETTINGS_WT_ENABLED 0x2c7cf000 (replacing
  WT_MAX_SESSIONS), WT_ALPN_ERROR 0x0817b3dd, WT_REQUIREMENTS_NOT_MET
  0x212c0d48;
- draft-ietf-masque-h3-datagram-04/05 section 9.1: the old H3_DATAGRAM
  setting 0xffd277, which Chrome still sends beside RFC 9297's 0x33.
"""

from __future__ import annotations

from enum import IntEnum

from ..h3._frames import is_reserved


class WTSetting(IntEnum):
    """HTTP/3 SETTINGS identifiers WebTransport adds (RFC 9114's own ones live in ``h3``)."""

    #: draft-02 (Chrome, Firefox): both sides send 1.
    ENABLE_WEBTRANSPORT = 0x2B603742
    #: draft-ietf-masque-h3-datagram-04/05; Chrome sends it next to 0x33.
    H3_DATAGRAM_DRAFT04 = 0xFFD277
    #: draft-13/14: how many sessions the sender accepts (> 0 enables WebTransport).
    WT_MAX_SESSIONS = 0x14E9CD29
    #: draft-13+: initial session data limit (0: nothing until WT_MAX_DATA).
    WT_INITIAL_MAX_DATA = 0x2B61
    #: draft-13+: initial unidirectional stream limit per session.
    WT_INITIAL_MAX_STREAMS_UNI = 0x2B64
    #: draft-13+: initial bidirectional stream limit per session.
    WT_INITIAL_MAX_STREAMS_BIDI = 0x2B65
    #: draft-15/16: 1 means "webtransport-h3" is spoken.
    WT_ENABLED = 0x2C7CF000


#: The first varint of a WebTransport bidirectional stream (the WT_STREAM "frame" type).
BIDI_SIGNAL = 0x41
#: The unidirectional stream type of a WebTransport stream.
UNI_STREAM_TYPE = 0x54


class CapsuleType(IntEnum):
    """Capsule types (RFC 9297 section 3.2) WebTransport defines."""

    CLOSE_SESSION = 0x2843  # CLOSE_WEBTRANSPORT_SESSION / WT_CLOSE_SESSION
    DRAIN_SESSION = 0x78AE  # DRAIN_WEBTRANSPORT_SESSION / WT_DRAIN_SESSION
    MAX_DATA = 0x190B4D3D
    MAX_STREAM_DATA = 0x190B4D3E  # WebTransport over HTTP/2 only: prohibited over HTTP/3
    MAX_STREAMS_BIDI = 0x190B4D3F
    MAX_STREAMS_UNI = 0x190B4D40
    DATA_BLOCKED = 0x190B4D41
    STREAM_DATA_BLOCKED = 0x190B4D42  # WebTransport over HTTP/2 only: prohibited over HTTP/3
    STREAMS_BLOCKED_BIDI = 0x190B4D43
    STREAMS_BLOCKED_UNI = 0x190B4D44


#: Capsules whose receipt over HTTP/3 is a session error (draft-13+ section 5.4).
PROHIBITED_CAPSULES = frozenset({CapsuleType.MAX_STREAM_DATA, CapsuleType.STREAM_DATA_BLOCKED})


class WTErrorCode(IntEnum):
    """WebTransport's protocol error codes, in the HTTP/3 error code space."""

    #: A stream for a session that is not (yet) known, over the buffering limit.
    BUFFERED_STREAM_REJECTED = 0x3994BD84
    #: The stream's session is closed (draft-13+).
    SESSION_GONE = 0x170D7B68
    #: A peer broke session flow control (draft-14+).
    FLOW_CONTROL_ERROR = 0x045D4487
    #: Application protocol negotiation (WT-Protocol) failed (draft-15+).
    ALPN_ERROR = 0x0817B3DD
    #: The peer's SETTINGS lack what WebTransport needs (draft-15+).
    REQUIREMENTS_NOT_MET = 0x212C0D48


#: The HTTP/3 code that carries application error 0.
APPLICATION_ERROR_FIRST = 0x52E4A40FA8DB
#: The HTTP/3 code that carries application error 0xffffffff.
APPLICATION_ERROR_LAST = 0x52E5AC983162
#: Application error codes are 32-bit.
MAX_APPLICATION_ERROR = 0xFFFF_FFFF


def app_error_to_h3(code: int) -> int:
    """The HTTP/3 error code carrying WebTransport application error ``code``.

    The range skips HTTP/3's reserved GREASE values (0x1f * N + 0x21), one
    every 0x1e application codes (draft section 4.4's pseudocode).
    """
    if not 0 <= code <= MAX_APPLICATION_ERROR:
        raise ValueError(f"WebTransport error codes are 32-bit unsigned integers, not {code}")
    return APPLICATION_ERROR_FIRST + code + code // 0x1E


def h3_to_app_error(h3_code: int) -> int | None:
    """The application error an HTTP/3 code carries, or None if it carries none.

    None for codes outside the WebTransport range and for the GREASE values
    inside it: such a reset is a reset "with no application error code".
    """
    if not APPLICATION_ERROR_FIRST <= h3_code <= APPLICATION_ERROR_LAST or is_reserved(h3_code):
        return None
    shifted = h3_code - APPLICATION_ERROR_FIRST
    return shifted - shifted // 0x1F
