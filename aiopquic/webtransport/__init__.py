"""WebTransport over HTTP/3 (draft-ietf-webtrans-http3: drafts 02, 13/14 and 15/16).

So far the sans-I/O core: code points, capsules, stream headers, dialect
negotiation, session flow control, routing and message framing. The anyio
driver (sessions, ``serve_webtransport``, ``open_webtransport_session``)
builds on it.
"""
