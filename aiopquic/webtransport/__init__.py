"""WebTransport over HTTP/3 (draft-ietf-webtrans-http3: drafts 02, 13/14 and 15/16).

So far the sans-I/O core and the pieces that need no connection:

- :class:`WebTransportApp` (routes, ``{name}`` patterns, middleware) and the
  :class:`SessionRequest` middleware sees;
- :class:`MessageStream` / :class:`MessageDatagrams`: JSON (or msgpack)
  messages over any anyio byte stream or datagram transport;
- :class:`Dialect` and :class:`SessionLimits`, which say which draft a
  session speaks and what a peer may open and send in one.

The wire protocol lives in private modules (``_codes``, ``_capsules``,
``_streams``, ``_dialects``, ``_flow``, ``_session_state``) that the anyio
driver (sessions, ``serve_webtransport``, ``open_webtransport_session``)
builds on.
"""

from ._dialects import Dialect, SessionLimits
from ._messages import MessageDatagrams, MessageDecodeError, MessageError, MessageStream, MessageTooLarge
from ._routing import SessionRequest, WebTransportApp

__all__ = [
    "Dialect",
    "MessageDatagrams",
    "MessageDecodeError",
    "MessageError",
    "MessageStream",
    "MessageTooLarge",
    "SessionLimits",
    "SessionRequest",
    "WebTransportApp",
]
