"""Application protocol negotiation: ``WT-Available-Protocols`` and ``WT-Protocol`` (draft-13+ section 3.3).

The client may list the protocols it speaks, most preferred first, as a
Structured Field List of Strings (RFC 9651); the server may answer with one
of them as a String Item. A field holding anything but Strings is ignored
whole; parameters are ignored. A client that required a choice and gets none,
or gets one it did not offer, closes the session with WT_ALPN_ERROR.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._codes import WTErrorCode

AVAILABLE_PROTOCOLS = b"wt-available-protocols"
PROTOCOL = b"wt-protocol"

_STRING_CHARS = frozenset(range(0x20, 0x7F))


class NegotiationError(Exception):
    """The server's WT-Protocol does not fit the client's offer: close with WT_ALPN_ERROR."""

    error_code = WTErrorCode.ALPN_ERROR


def _string(protocol: str) -> bytes:
    if not (protocol.isascii() and protocol.isprintable()):
        raise ValueError(f"a protocol name must be printable ASCII, not {protocol!r}")
    data = protocol.encode("ascii")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def encode_available_protocols(protocols: Iterable[str]) -> bytes:
    """The ``WT-Available-Protocols`` value for ``protocols`` (most preferred first)."""
    return b", ".join(_string(protocol) for protocol in protocols)


def encode_protocol(protocol: str) -> bytes:
    """The ``WT-Protocol`` value naming ``protocol``."""
    return _string(protocol)


def _parse_string(value: bytes, pos: int) -> tuple[str, int] | None:
    """A String at ``value[pos]`` (which is '"'): (text, position after it), or None if malformed."""
    out = bytearray()
    pos += 1
    while pos < len(value):
        byte = value[pos]
        if byte == 0x5C:  # backslash: only \" and \\ are escapes
            if pos + 1 >= len(value) or value[pos + 1] not in b'"\\':
                return None
            out.append(value[pos + 1])
            pos += 2
        elif byte == 0x22:
            return out.decode("ascii"), pos + 1
        elif byte not in _STRING_CHARS:
            return None
        else:
            out.append(byte)
            pos += 1
    return None


def _skip_parameters(value: bytes, pos: int) -> int:
    """The position after an item's parameters (their values may hold quoted commas)."""
    quoted = False
    while pos < len(value):
        byte = value[pos]
        if quoted and byte == 0x5C:
            pos += 2
            continue
        if byte == 0x22:
            quoted = not quoted
        elif byte == 0x2C and not quoted:
            break
        pos += 1
    return pos


def _parse_strings(value: bytes) -> list[str] | None:
    strings: list[str] = []
    pos = 0
    while True:
        while pos < len(value) and value[pos] in b" \t":
            pos += 1
        if pos >= len(value) or value[pos] != 0x22:
            return None  # an empty member, or one that is not a String: ignore the field
        parsed = _parse_string(value, pos)
        if parsed is None:
            return None
        text, pos = parsed
        strings.append(text)
        if pos < len(value) and value[pos] == 0x3B:  # ';' parameters, which carry no meaning here
            pos = _skip_parameters(value, pos)
        while pos < len(value) and value[pos] in b" \t":
            pos += 1
        if pos == len(value):
            return strings
        if value[pos] != 0x2C:
            return None
        pos += 1


def parse_available_protocols(value: bytes) -> list[str] | None:
    """The protocols a ``WT-Available-Protocols`` value lists, or None if the field is to be ignored."""
    return _parse_strings(value.strip(b" \t"))


def parse_protocol(value: bytes) -> str | None:
    """The protocol a ``WT-Protocol`` value names, or None if the field is to be ignored."""
    strings = _parse_strings(value.strip(b" \t"))
    return strings[0] if strings is not None and len(strings) == 1 else None


def choose_protocol(offered: list[str], supported: Iterable[str]) -> str | None:
    """The server's pick: the client's most preferred protocol the server supports."""
    ours = set(supported)
    return next((protocol for protocol in offered if protocol in ours), None)


def check_selected(offered: list[str], selected: bytes | None, *, required: bool) -> str | None:
    """What the client learns from the response's ``WT-Protocol`` (None: no protocol agreed).

    Raises :class:`NegotiationError` when the server picked something not
    offered, or picked nothing usable while the client ``required`` a pick.
    """
    choice = None if selected is None else parse_protocol(selected)
    if choice is not None and choice not in offered:
        raise NegotiationError(f"the server chose {choice!r}, which the client did not offer ({offered})")
    if choice is None and required:
        raise NegotiationError(f"the server chose none of the protocols the client offered ({offered})")
    return choice
