"""Known peers that break the capsule protocol, recognised up front.

RFC 9297 carries a CONNECT stream's capsules inside HTTP/3 DATA frames.
pywebtransport 0.8 (and picoquic's h3zero before October 2025) writes them
as bare frames instead (a capsule's type and length then read as a frame's),
and pywebtransport fails the whole connection (H3_FRAME_UNEXPECTED) on a
DATA frame there. A session answers a peer in kind once it has seen a bare
capsule from it (``session.py``). That can be too late: our first capsule
(a WT_MAX_DATA grant, say) may go out before the peer sent any. So a peer
whose SETTINGS look exactly like pywebtransport 0.8's is answered in kind
from the start. pywebtransport sends no user-agent with its CONNECT, so its
SETTINGS are what tells it: draft-13/14 only (WT_MAX_SESSIONS without
WT_ENABLED or draft-02's ENABLE_WEBTRANSPORT), ENABLE_CONNECT_PROTOCOL from
either side, RFC 9297's H3_DATAGRAM, and no GREASE identifier (aioquic,
under it, sends none) - a combination no RFC 9297 WebTransport stack we know
of sends (Chrome, Firefox and webtransport-go send draft-02's setting or
WT_ENABLED, and GREASE).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..h3._frames import Setting, is_reserved
from ._codes import WTSetting


def expects_bare_capsules(peer_settings: Mapping[int, int]) -> bool:
    """True if the peer's SETTINGS are pywebtransport 0.8's (capsules outside DATA frames)."""
    return (
        peer_settings.get(WTSetting.WT_MAX_SESSIONS, 0) > 0
        and WTSetting.WT_ENABLED not in peer_settings
        and WTSetting.ENABLE_WEBTRANSPORT not in peer_settings
        and peer_settings.get(Setting.ENABLE_CONNECT_PROTOCOL) == 1
        and peer_settings.get(Setting.H3_DATAGRAM) == 1
        and not any(is_reserved(key) for key in peer_settings)
    )
