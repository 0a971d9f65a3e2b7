"""Validation of HTTP/3 field sections (RFC 9114 section 4.3, RFC 9220).

Each check raises :class:`MessageError` naming what is wrong; the caller
resets the stream with H3_MESSAGE_ERROR.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from itertools import chain

Headers = list[tuple[bytes, bytes]]

#: Fields that only mean something on a single-hop HTTP/1.1 connection.
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})

REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
RESPONSE_PSEUDO = frozenset({b":status"})

#: Bytes a field name must not hold; ``bytes.translate`` deletes them in C, so a
#: name that loses length had one (a loop over its bytes costs ~5 % of a request).
_FORBIDDEN_NAME_BYTES = b"\x00\r\n: ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class MessageError(ValueError):
    """A malformed request or response (H3_MESSAGE_ERROR on its stream)."""


def field_section_size(headers: Collection[tuple[bytes, bytes]]) -> int:
    """The size SETTINGS_MAX_FIELD_SECTION_SIZE limits (RFC 9114 section 4.2.2)."""
    return sum(map(len, chain.from_iterable(headers))) + 32 * len(headers)


@dataclass(slots=True)
class RequestHead:
    """What the pseudo-header fields of a request say."""

    method: bytes
    scheme: bytes | None
    authority: bytes | None
    path: bytes | None
    protocol: bytes | None
    content_length: int | None


#: Fields already found valid.  Requests repeat most of theirs (QPACK's dynamic
#: table is built on that), and checking one is a pure function of its bytes;
#: cleared when full, so it stays small whatever the peers send.
_VALID_FIELDS: set[tuple[bytes, bytes]] = set()
_VALID_FIELDS_MAX = 1024


def _check_field(name: bytes, value: bytes) -> None:
    field = (name, value)
    if field in _VALID_FIELDS:
        return
    _check_new_field(name, value)
    if len(_VALID_FIELDS) >= _VALID_FIELDS_MAX:
        _VALID_FIELDS.clear()
    _VALID_FIELDS.add(field)


def _check_new_field(name: bytes, value: bytes) -> None:
    if not name:
        raise MessageError("empty field name")
    body = name[1:] if name[:1] == b":" else name
    if not body or len(body.translate(None, _FORBIDDEN_NAME_BYTES)) != len(body):
        raise MessageError(f"invalid field name {name!r} (names must be lowercase tokens)")
    if b"\x00" in value or b"\r" in value or b"\n" in value:
        raise MessageError(f"field {name!r} has a NUL, CR or LF in its value")
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        raise MessageError(f"field {name!r} has whitespace around its value")
    if name in CONNECTION_SPECIFIC:
        raise MessageError(f"connection-specific field {name.decode()!r} is not allowed in HTTP/3")
    if name == b"te" and value != b"trailers":
        raise MessageError("the only TE value HTTP/3 allows is 'trailers'")


def _split(headers: Headers, allowed_pseudo: frozenset[bytes]) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        _check_field(name, value)
        if name[:1] == b":":
            if regular:
                raise MessageError(f"pseudo-header {name.decode()} after a regular field")
            if name not in allowed_pseudo:
                raise MessageError(f"pseudo-header {name.decode()} is not allowed here")
            if name in pseudo:
                raise MessageError(f"pseudo-header {name.decode()} appears twice")
            pseudo[name] = value
        else:
            regular.append((name, value))
    return pseudo, regular


def _content_length(fields: list[tuple[bytes, bytes]]) -> int | None:
    values = {value for name, value in fields if name == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        raise MessageError("content-length fields disagree")
    value = values.pop()
    if not value.isdigit():
        raise MessageError(f"content-length {value!r} is not a number")
    return int(value)


def validate_request(headers: Headers, *, extended_connect: bool) -> RequestHead:
    """Check a request's field section; return its pseudo-header fields."""
    pseudo, regular = _split(headers, REQUEST_PSEUDO)
    method = pseudo.get(b":method")
    if method is None:
        raise MessageError("request without :method")
    protocol = pseudo.get(b":protocol")
    if protocol is not None and (method != b"CONNECT" or not extended_connect):
        raise MessageError(":protocol is only allowed on an extended CONNECT the server enabled")
    if method == b"CONNECT" and protocol is None:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise MessageError("CONNECT must not carry :scheme or :path")
        if not pseudo.get(b":authority"):
            raise MessageError("CONNECT without :authority")
    else:
        for required in (b":scheme", b":path"):
            if not pseudo.get(required):
                raise MessageError(f"request without {required.decode()}")
    scheme = pseudo.get(b":scheme")
    authority = pseudo.get(b":authority")
    if scheme in (b"https", b"http") and not authority and not any(name == b"host" for name, _ in regular):
        raise MessageError(f"{scheme.decode()} request without :authority or host")
    return RequestHead(
        method=method,
        scheme=scheme,
        authority=authority,
        path=pseudo.get(b":path"),
        protocol=protocol,
        content_length=_content_length(regular),
    )


def validate_response(headers: Headers) -> tuple[int, int | None]:
    """Check a response's field section; return ``(status, content_length)``."""
    pseudo, regular = _split(headers, RESPONSE_PSEUDO)
    status = pseudo.get(b":status")
    if status is None:
        raise MessageError("response without :status")
    if len(status) != 3 or not status.isdigit() or status[:1] == b"0":
        raise MessageError(f"invalid :status {status!r}")
    return int(status), _content_length(regular)


def validate_trailers(headers: Headers) -> None:
    """Check a trailer section: regular fields only."""
    for name, value in headers:
        _check_field(name, value)
        if name[:1] == b":":
            raise MessageError(f"pseudo-header {name.decode()} in trailers")
