"""HTTP/3 (RFC 9114) over aiopquic's QUIC: an ASGI server and a client.

- :func:`serve_h3` serves any ASGI 3 application (Starlette, FastAPI, ...).
- :func:`open_h3_connection` opens one connection; :class:`H3Connection`
  sends requests on it.
- :class:`HTTP3Transport` lets ``httpx.AsyncClient`` speak HTTP/3 (needs the
  ``httpx`` extra).

The protocol itself is a sans-I/O core (``H3Protocol``) with QPACK from
``pylsqpack``; this package drives it over :mod:`aiopquic.quic` streams.
"""

from typing import TYPE_CHECKING, Any

from ._frames import ErrorCode
from ._protocol import H3Protocol, H3Settings
from .client import H3Connection, H3Response, H3StreamResponse, open_h3_connection
from .errors import H3Error, H3ProtocolError, RequestRejected
from .server import serve_h3

if TYPE_CHECKING:
    from .httpx_transport import HTTP3Transport

__all__ = [
    "ErrorCode",
    "H3Connection",
    "H3Error",
    "H3Protocol",
    "H3ProtocolError",
    "H3Response",
    "H3Settings",
    "H3StreamResponse",
    "HTTP3Transport",
    "RequestRejected",
    "open_h3_connection",
    "serve_h3",
]


def __getattr__(name: str) -> Any:
    # httpx is optional: import the transport only when it is asked for.
    if name == "HTTP3Transport":
        from .httpx_transport import HTTP3Transport

        return HTTP3Transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
