"""Which peers get capsules as bare frames from the start (pywebtransport 0.8's SETTINGS)."""

from __future__ import annotations

from aiopquic.h3._frames import Setting
from aiopquic.h3._protocol import H3Settings
from aiopquic.webtransport._dialects import client_settings, server_settings
from aiopquic.webtransport._quirks import expects_bare_capsules

# What pywebtransport 0.8.1's client and server send (its h3_engine._get_local_settings).
PYWEBTRANSPORT = {
    Setting.ENABLE_CONNECT_PROTOCOL: 1,
    Setting.H3_DATAGRAM: 1,
    Setting.QPACK_BLOCKED_STREAMS: 16,
    Setting.QPACK_MAX_TABLE_CAPACITY: 4096,
    0x2B61: 262144,
    0x2B65: 4,
    0x2B64: 4,
    0x14E9CD29: 1,
}


def test_pywebtransport_settings_are_recognised() -> None:
    assert expects_bare_capsules(PYWEBTRANSPORT)


def test_other_stacks_are_not() -> None:
    # ours (GREASE, WT_ENABLED, draft-02's setting), aioquic's draft-02, Chrome's draft-02
    ours = H3Settings(enable_connect_protocol=True, h3_datagram=True, extra=server_settings()).to_wire()
    assert not expects_bare_capsules(ours)
    assert not expects_bare_capsules(H3Settings(h3_datagram=True, extra=client_settings()).to_wire())
    aioquic = {Setting.QPACK_MAX_TABLE_CAPACITY: 4096, Setting.QPACK_BLOCKED_STREAMS: 16,
               Setting.ENABLE_CONNECT_PROTOCOL: 1, 0x21: 1, Setting.H3_DATAGRAM: 1, 0x2B603742: 1}
    assert not expects_bare_capsules(aioquic)
    chrome = {Setting.H3_DATAGRAM: 1, 0xFFD277: 1, 0x2B603742: 1, Setting.MAX_FIELD_SECTION_SIZE: 65536}
    assert not expects_bare_capsules(chrome)
    # the same settings with a GREASE identifier, or with WT_ENABLED, are not pywebtransport 0.8's
    assert not expects_bare_capsules({**PYWEBTRANSPORT, 0x21 + 0x1F * 7: 0})
    assert not expects_bare_capsules({**PYWEBTRANSPORT, 0x2C7CF000: 1})
