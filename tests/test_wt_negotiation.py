"""WT-Available-Protocols / WT-Protocol (draft-13+ section 3.3)."""

from __future__ import annotations

import pytest

from aiopquic.webtransport._codes import WTErrorCode
from aiopquic.webtransport._negotiation import (
    NegotiationError,
    check_selected,
    choose_protocol,
    encode_available_protocols,
    encode_protocol,
    parse_available_protocols,
    parse_protocol,
)


def test_protocol_lists_round_trip_with_escapes() -> None:
    protocols = ["moq-00", 'say "hi"', "back\\slash"]
    value = encode_available_protocols(protocols)
    assert value == b'"moq-00", "say \\"hi\\"", "back\\\\slash"'
    assert parse_available_protocols(value) == protocols
    assert parse_protocol(encode_protocol("chat")) == "chat"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'"a","b"', ["a", "b"]),
        (b' "a";q=1 ,\t"b";x="1,2";y ', ["a", "b"]),  # parameters are ignored, even with quoted commas
        (b'"a" ;q=1', None),  # no space may come before parameters
        (b'"a", b', None),  # a Token: the whole field is ignored
        (b'"a", 1', None),
        (b'"a",', None),
        (b'"unterminated', None),
        (b'"bad \\x escape"', None),
        (b'"tab\there"', None),
        (b'("a" "b")', None),  # an Inner List
        (b"", None),
    ],
)
def test_available_protocols_parsing(value: bytes, expected: list[str] | None) -> None:
    assert parse_available_protocols(value) == expected


def test_wt_protocol_is_one_string() -> None:
    assert parse_protocol(b'"a";p=1') == "a"
    assert parse_protocol(b'"a", "b"') is None
    assert parse_protocol(b"a") is None


def test_names_must_be_printable_ascii() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        encode_protocol("é")
    with pytest.raises(ValueError, match="printable ASCII"):
        encode_available_protocols(["ok", "new\nline"])


def test_server_picks_the_clients_most_preferred_protocol_it_supports() -> None:
    assert choose_protocol(["b", "a"], ["a", "b"]) == "b"
    assert choose_protocol(["c"], ["a"]) is None


def test_client_checks_the_servers_choice() -> None:
    assert check_selected(["a", "b"], b'"b"', required=True) == "b"
    assert check_selected(["a"], None, required=False) is None
    assert check_selected(["a"], b"token", required=False) is None  # malformed: ignored
    with pytest.raises(NegotiationError, match="chose 'c', which the client did not offer") as info:
        check_selected(["a"], b'"c"', required=False)
    assert info.value.error_code == WTErrorCode.ALPN_ERROR == 0x0817B3DD
    with pytest.raises(NegotiationError, match="chose none"):
        check_selected(["a"], None, required=True)
