"""The three WebTransport dialects: SETTINGS, CONNECT headers, and which one to speak.

- **draft-02** (Chrome, Firefox): SETTINGS_ENABLE_WEBTRANSPORT = 1 on both
  sides, ``:protocol webtransport`` and ``sec-webtransport-http3-draft02: 1``
  on the request, ``sec-webtransport-http3-draft: draft02`` on the response
  (draft-02 section 6). No session flow control.
- **draft-13/14** (Safari, pywebtransport 0.8): SETTINGS_WT_MAX_SESSIONS > 0,
  ``:protocol webtransport``, session flow control seeded by the
  WT_INITIAL_* settings.
- **draft-15/16**: the server sends SETTINGS_WT_ENABLED = 1 (draft clients
  send it too), ``:protocol webtransport-h3``, the same flow control.

The server offers all three at once; a client uses the newest one the
server's SETTINGS offer, and the server answers each request in the dialect
its ``:protocol`` and the client's SETTINGS name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from urllib.parse import unquote

from ..h3._frames import Setting
from ..h3._headers import Headers
from ._codes import WTSetting


class Dialect(IntEnum):
    """A WebTransport over HTTP/3 draft; a larger value is a newer draft."""

    DRAFT02 = 2
    DRAFT13 = 13  # also draft-14: the same wire format
    DRAFT15 = 15  # also draft-16

    @property
    def upgrade_token(self) -> bytes:
        """The ``:protocol`` value of this dialect's CONNECT."""
        return b"webtransport-h3" if self is Dialect.DRAFT15 else b"webtransport"

    @property
    def has_flow_control(self) -> bool:
        """True for the dialects with session flow control (WT_MAX_DATA and friends)."""
        return self is not Dialect.DRAFT02


ALL_DIALECTS = frozenset(Dialect)
#: Every ``:protocol`` value that asks for a WebTransport session.
UPGRADE_TOKENS = frozenset(d.upgrade_token for d in Dialect)

DRAFT02_REQUEST_HEADER = b"sec-webtransport-http3-draft02"
DRAFT02_RESPONSE_HEADER = b"sec-webtransport-http3-draft"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What we allow a peer per session, announced in our SETTINGS.

    The initial limits seed session flow control (draft-13+): a peer may open
    ``initial_max_streams_*`` streams and send ``initial_max_data`` bytes of
    stream data in a session before a capsule grants more. Announcing any
    non-zero initial limit declares that we use flow control.
    """

    max_sessions: int = 16
    #: As much as QuicConfig's default ``max_data``, which bounds the memory of
    #: every stream anyway: with 1 MiB (granted again at half), a bulk transfer
    #: waited on each grant's trip through both event loops (0.6-0.8x of raw QUIC).
    initial_max_data: int = 16 * 1024 * 1024
    initial_max_streams_bidi: int = 100
    initial_max_streams_uni: int = 100

    def __post_init__(self) -> None:
        for name in ("max_sessions", "initial_max_data", "initial_max_streams_bidi", "initial_max_streams_uni"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"SessionLimits.{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"SessionLimits.{name} must be >= 0, not {value}")
        if self.max_sessions < 1:
            raise ValueError("SessionLimits.max_sessions must be at least 1")

    def to_settings(self) -> dict[int, int]:
        """The WT_MAX_SESSIONS and WT_INITIAL_* settings that announce these limits."""
        return {
            WTSetting.WT_MAX_SESSIONS: self.max_sessions,
            WTSetting.WT_INITIAL_MAX_DATA: self.initial_max_data,
            WTSetting.WT_INITIAL_MAX_STREAMS_UNI: self.initial_max_streams_uni,
            WTSetting.WT_INITIAL_MAX_STREAMS_BIDI: self.initial_max_streams_bidi,
        }


def server_settings(limits: SessionLimits = SessionLimits()) -> dict[int, int]:
    """The WebTransport SETTINGS a server sends to speak all three dialects.

    Goes into ``H3Settings(enable_connect_protocol=True, h3_datagram=True,
    extra=...)``. The old datagram setting 0xffd277 is for Chrome versions
    that look only at it.
    """
    settings = {
        WTSetting.ENABLE_WEBTRANSPORT: 1,
        WTSetting.H3_DATAGRAM_DRAFT04: 1,
        WTSetting.WT_ENABLED: 1,
        **limits.to_settings(),
    }
    return {int(key): value for key, value in settings.items()}


def client_settings(limits: SessionLimits = SessionLimits(max_sessions=1)) -> dict[int, int]:
    """The WebTransport SETTINGS a client sends, naming every dialect it speaks.

    Goes into ``H3Settings(h3_datagram=True, extra=...)``.
    """
    settings = {WTSetting.ENABLE_WEBTRANSPORT: 1, WTSetting.WT_ENABLED: 1, **limits.to_settings()}
    return {int(key): value for key, value in settings.items()}


def validate_peer_settings(settings: Mapping[int, int], *, is_client: bool) -> str | None:
    """Why the peer's SETTINGS break a WebTransport draft (close with H3_SETTINGS_ERROR), or None."""
    for key in (WTSetting.ENABLE_WEBTRANSPORT, WTSetting.H3_DATAGRAM_DRAFT04):
        if settings.get(key, 0) > 1:
            return f"setting {key.name} (0x{int(key):x}) must be 0 or 1, not {settings[key]}"
    if is_client and settings.get(WTSetting.WT_ENABLED, 0) > 1:
        return f"setting WT_ENABLED (0x{int(WTSetting.WT_ENABLED):x}) must be 0 or 1, not {settings[WTSetting.WT_ENABLED]}"
    return None


def _datagrams(settings: Mapping[int, int]) -> bool:
    return settings.get(Setting.H3_DATAGRAM) == 1 or settings.get(WTSetting.H3_DATAGRAM_DRAFT04) == 1


def offered_dialects(settings: Mapping[int, int]) -> frozenset[Dialect]:
    """The dialects a peer's SETTINGS offer (with everything each one requires)."""
    offered: set[Dialect] = set()
    if not _datagrams(settings):
        return frozenset()
    if settings.get(WTSetting.ENABLE_WEBTRANSPORT) == 1:
        offered.add(Dialect.DRAFT02)
    extended_connect = settings.get(Setting.ENABLE_CONNECT_PROTOCOL) == 1
    if settings.get(WTSetting.WT_MAX_SESSIONS, 0) > 0 and extended_connect:
        offered.add(Dialect.DRAFT13)
    if settings.get(WTSetting.WT_ENABLED) == 1 and extended_connect:
        offered.add(Dialect.DRAFT15)
    return frozenset(offered)


def client_dialect(server: Mapping[int, int], spoken: Iterable[Dialect] = ALL_DIALECTS) -> Dialect | None:
    """The dialect a client uses: the newest one it speaks that the server's SETTINGS offer."""
    common = offered_dialects(server) & frozenset(spoken)
    return max(common) if common else None


def flow_control_enabled(dialect: Dialect, ours: Mapping[int, int], theirs: Mapping[int, int]) -> bool:
    """Whether session flow control applies (both sides must declare it).

    draft-14 section 5.1: a side declares it with WT_MAX_SESSIONS > 1 or any
    non-zero WT_INITIAL_* setting; draft-16 counts only the WT_INITIAL_* ones.
    Without flow control, flow-control capsules are ignored and a connection
    carries one session.
    """
    if not dialect.has_flow_control:
        return False

    def declares(settings: Mapping[int, int]) -> bool:
        initial = (WTSetting.WT_INITIAL_MAX_DATA, WTSetting.WT_INITIAL_MAX_STREAMS_UNI, WTSetting.WT_INITIAL_MAX_STREAMS_BIDI)
        if any(settings.get(key, 0) for key in initial):
            return True
        return dialect is Dialect.DRAFT13 and settings.get(WTSetting.WT_MAX_SESSIONS, 0) > 1

    return declares(ours) and declares(theirs)


class InvalidConnect(ValueError):
    """A WebTransport CONNECT request we refuse; answer with ``status``."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A valid WebTransport CONNECT request, as the server sees it.

    ``path`` is percent-decoded and without the query, which is ``query``
    (still encoded, without the ``?``).
    """

    dialect: Dialect
    authority: str
    path: str
    query: str
    origin: str | None
    headers: Headers


def is_webtransport_request(headers: Headers) -> bool:
    """True for an extended CONNECT asking for WebTransport (any dialect)."""
    method = protocol = None
    for name, value in headers:
        if name == b":method":
            method = value
        elif name == b":protocol":
            protocol = value
        elif name[:1] != b":":
            break
    return method == b"CONNECT" and protocol in UPGRADE_TOKENS


def _request_dialect(protocol: bytes, draft02_header: bool, client: Mapping[int, int], offered: frozenset[Dialect]) -> Dialect:
    if protocol == Dialect.DRAFT15.upgrade_token:
        candidates = {Dialect.DRAFT15}
    else:
        candidates = set()
        if client.get(WTSetting.WT_MAX_SESSIONS, 0) > 0:
            candidates.add(Dialect.DRAFT13)
        if draft02_header or client.get(WTSetting.ENABLE_WEBTRANSPORT) == 1:
            candidates.add(Dialect.DRAFT02)
    common = candidates & offered
    if not common:
        raise InvalidConnect(
            f"a {protocol.decode(errors='replace')!r} CONNECT names no WebTransport draft this server speaks"
            " (the client's SETTINGS and headers must name draft-02, draft-13/14 or draft-15/16)"
        )
    return max(common)


def parse_connect(
    headers: Headers, client: Mapping[int, int], offered: frozenset[Dialect] = ALL_DIALECTS
) -> ConnectRequest:
    """Check a WebTransport CONNECT and tell its dialect; :class:`InvalidConnect` says why not.

    ``client`` is the client's SETTINGS: the drafts forbid a server to
    process a WebTransport request before they arrive, so the driver holds
    the request until then. The HTTP/3 layer has already checked the field
    section's syntax (pseudo-headers once each, lowercase names).
    """
    fields: dict[bytes, bytes] = {}
    for name, value in headers:
        fields.setdefault(name, value)
    if fields.get(b":method") != b"CONNECT":
        raise InvalidConnect("a WebTransport session starts with a CONNECT request", 405)
    protocol = fields.get(b":protocol")
    if protocol not in UPGRADE_TOKENS:
        raise InvalidConnect(f":protocol {protocol!r} is not WebTransport's")
    if fields.get(b":scheme") != b"https":
        raise InvalidConnect(f"WebTransport needs :scheme https, not {fields.get(b':scheme')!r}")
    authority = fields.get(b":authority")
    if not authority:
        raise InvalidConnect("WebTransport CONNECT without :authority")
    target = fields.get(b":path")
    if not target or target[:1] != b"/":
        raise InvalidConnect(f"WebTransport CONNECT needs an absolute :path, not {target!r}")
    origin = fields.get(b"origin")
    dialect = _request_dialect(protocol, fields.get(DRAFT02_REQUEST_HEADER) == b"1", client, offered)
    try:
        raw_path, _, query = target.decode("ascii").partition("?")
        path = unquote(raw_path, errors="strict")
        authority_text = authority.decode("ascii")
        origin_text = None if origin is None else origin.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidConnect(f"WebTransport CONNECT with a non-ASCII or badly encoded field: {exc}") from None
    return ConnectRequest(dialect, authority_text, path, query, origin_text, headers)


def request_headers(
    dialect: Dialect, *, authority: str, path: str, origin: str | None = None, extra: Iterable[tuple[bytes, bytes]] = ()
) -> Headers:
    """The CONNECT request our client sends to open a session in ``dialect``."""
    headers: Headers = [
        (b":method", b"CONNECT"),
        (b":scheme", b"https"),
        (b":authority", authority.encode("ascii")),
        (b":path", path.encode("ascii")),
        (b":protocol", dialect.upgrade_token),
    ]
    if dialect is Dialect.DRAFT02:
        headers.append((DRAFT02_REQUEST_HEADER, b"1"))
    if origin is not None:
        headers.append((b"origin", origin.encode("ascii")))
    headers.extend(extra)
    return headers


def response_headers(dialect: Dialect, status: int = 200, extra: Iterable[tuple[bytes, bytes]] = ()) -> Headers:
    """The response our server sends to a CONNECT in ``dialect`` (a 2xx accepts the session)."""
    if not 200 <= status <= 599:
        raise ValueError(f"a CONNECT's final response needs a status from 200 to 599, not {status}")
    headers: Headers = [(b":status", str(status).encode())]
    if dialect is Dialect.DRAFT02:
        headers.append((DRAFT02_RESPONSE_HEADER, b"draft02"))
    headers.extend(extra)
    return headers
