"""WebTransport over HTTP/3 (draft-ietf-webtrans-http3: drafts 02, 13/14 and 15/16).

- :func:`serve_webtransport` serves a :class:`WebTransportApp` (routes,
  ``{name}`` patterns, middleware); ``h3.serve_h3(asgi_app, ...,
  webtransport=app)`` serves it beside an ASGI app on one port.
- :func:`open_webtransport_session` opens a session to a server;
  :class:`WebTransportClient` opens many, sharing connections.
- :class:`WebTransportSession` mirrors ``QuicConnection``: streams
  (:class:`WebTransportStream`, :class:`WebTransportReceiveStream`,
  :class:`WebTransportSendStream`), datagrams, ``close(code, reason)``.
- :class:`MessageStream` / :class:`MessageDatagrams`: JSON (or msgpack)
  messages over any anyio byte stream or datagram transport.

The wire protocol lives in private modules (``_codes``, ``_capsules``,
``_streams``, ``_dialects``, ``_flow``, ``_session_state``).
"""

from ._dialects import Dialect, SessionLimits
from ._messages import MessageDatagrams, MessageDecodeError, MessageError, MessageStream, MessageTooLarge
from ._routing import SessionRequest, WebTransportApp
from .client import WebTransportClient, open_webtransport_session
from .errors import SessionClosed, SessionRejected
from .server import serve_webtransport
from .session import WebTransportSession
from .stream import WebTransportReceiveStream, WebTransportSendStream, WebTransportStream

__all__ = [
    "Dialect",
    "MessageDatagrams",
    "MessageDecodeError",
    "MessageError",
    "MessageStream",
    "MessageTooLarge",
    "SessionClosed",
    "SessionLimits",
    "SessionRejected",
    "SessionRequest",
    "WebTransportApp",
    "WebTransportClient",
    "WebTransportReceiveStream",
    "WebTransportSendStream",
    "WebTransportSession",
    "WebTransportStream",
    "open_webtransport_session",
    "serve_webtransport",
]
