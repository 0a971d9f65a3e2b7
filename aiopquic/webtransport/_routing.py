"""Server-side routing: :class:`WebTransportApp`, its routes and middleware.

Pure Python, no I/O: the server driver builds a :class:`SessionRequest` from a
valid CONNECT, asks :meth:`WebTransportApp.admit` whether to accept it (a
middleware status or 404 rejects it), and runs the matched handler with the
session.

Route patterns are paths whose segments may be ``{name}`` (one segment) or,
as the last segment, ``{name:path}`` (the rest of the path). Static routes win
over patterns; patterns are tried in the order they were added.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..h3._headers import Headers
from ._dialects import ConnectRequest, Dialect, SessionLimits

#: A session handler: ``async def handler(session) -> None``. Its argument is the
#: driver's session object (``WebTransportSession``), which knows its ``path_params``.
Handler = Callable[[Any], Awaitable[None]]
#: A middleware: returns None to let the request through, or a status to reject it.
Middleware = Callable[["SessionRequest"], Awaitable[int | None]]

_HandlerT = TypeVar("_HandlerT", bound=Handler)
_MiddlewareT = TypeVar("_MiddlewareT", bound=Middleware)

_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """A WebTransport CONNECT as middleware sees it (before it is accepted).

    ``path`` is percent-decoded, without the query string (``query``, still
    encoded).
    """

    path: str
    headers: Headers
    origin: str | None
    authority: str
    dialect: Dialect
    query: str = ""

    @classmethod
    def from_connect(cls, request: ConnectRequest) -> SessionRequest:
        """The request a validated CONNECT describes."""
        return cls(request.path, request.headers, request.origin, request.authority, request.dialect, request.query)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The handler for a path and the parameters its pattern took from it."""

    handler: Handler
    path_params: dict[str, str]


class _Route:
    __slots__ = ("handler", "pattern", "regex")

    def __init__(self, pattern: str, handler: Handler) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"a route is an absolute path starting with '/', not {pattern!r}")
        self.pattern = pattern
        self.handler = handler
        self.regex = _compile(pattern)


def _compile(pattern: str) -> re.Pattern[str] | None:
    """A regex for a pattern with parameters, None for a static path."""
    parts: list[str] = []
    names: set[str] = set()
    position = 0
    for match in _PARAMETER.finditer(pattern):
        name, rest = match.group(1), match.group(2)
        if name in names:
            raise ValueError(f"route {pattern!r} names the parameter {name!r} twice")
        names.add(name)
        whole_segment = pattern[match.start() - 1] == "/" and pattern[match.end() : match.end() + 1] in ("", "/")
        if not whole_segment:
            raise ValueError(f"route {pattern!r}: a parameter must be a whole path segment")
        if rest and match.end() != len(pattern):
            raise ValueError(f"route {pattern!r}: {{{name}:path}} must be the last segment")
        parts.append(re.escape(pattern[position : match.start()]))
        parts.append(f"(?P<{name}>.+)" if rest else f"(?P<{name}>[^/]+)")
        position = match.end()
    if not names:
        if "{" in pattern or "}" in pattern:
            raise ValueError(f"route {pattern!r} has a brace that is not a parameter like {{name}}")
        return None
    tail = pattern[position:]
    if "{" in tail or "}" in tail:
        raise ValueError(f"route {pattern!r} has a brace that is not a parameter like {{name}}")
    parts.append(re.escape(tail))
    return re.compile("".join(parts))


class WebTransportApp:
    """A WebTransport server application: routes to session handlers, and middleware.

    ::

        app = WebTransportApp()

        @app.route("/rooms/{name}")
        async def room(session): ...

        @app.middleware
        async def only_our_origin(request: SessionRequest) -> int | None:
            return None if request.origin == "https://example.org" else 403

    ``limits`` is what a client may do per connection and session (draft-13+:
    WT_MAX_SESSIONS and the initial session flow-control windows; draft-02
    peers get ``max_sessions`` per connection and no flow control).
    """

    def __init__(self, *, limits: SessionLimits | None = None) -> None:
        if limits is not None and not isinstance(limits, SessionLimits):
            raise TypeError(f"limits must be a SessionLimits, not {type(limits).__name__}")
        #: What each client connection and session may do (see the class doc).
        self.limits = limits if limits is not None else SessionLimits()
        self._static: dict[str, _Route] = {}
        self._patterns: list[_Route] = []
        self._middleware: list[Middleware] = []

    def route(self, path: str) -> Callable[[_HandlerT], _HandlerT]:
        """Decorator: the handler for sessions to ``path`` (a path or a pattern)."""

        def register(handler: _HandlerT) -> _HandlerT:
            self.add_route(path, handler)
            return handler

        return register

    def add_route(self, path: str, handler: Handler) -> None:
        """Register ``handler`` for ``path`` (``ValueError`` if the path is taken or malformed)."""
        route = _Route(path, handler)
        if path in self._static or any(existing.pattern == path for existing in self._patterns):
            raise ValueError(f"route {path!r} is already registered")
        if route.regex is None:
            self._static[path] = route
        else:
            self._patterns.append(route)

    def middleware(self, function: _MiddlewareT) -> _MiddlewareT:
        """Decorator: run ``function`` on every request, in the order added, before routing."""
        self._middleware.append(function)
        return function

    def resolve(self, path: str) -> RouteMatch | None:
        """The handler and parameters for a (decoded) path, or None: 404."""
        static = self._static.get(path)
        if static is not None:
            return RouteMatch(static.handler, {})
        for route in self._patterns:
            assert route.regex is not None
            match = route.regex.fullmatch(path)
            if match is not None:
                return RouteMatch(route.handler, match.groupdict())
        return None

    async def admit(self, request: SessionRequest) -> tuple[int, RouteMatch | None]:
        """Decide on a request: ``(200, match)`` to accept, ``(status, None)`` to reject.

        Middleware runs first, in order; the first status any returns rejects
        the request (it must be 300-599: a redirect or an error). Then the
        path is routed: 404 when no route matches. The match's
        ``path_params`` go to the session.
        """
        for middleware in self._middleware:
            status = await middleware(request)
            if status is not None:
                if isinstance(status, bool) or not isinstance(status, int) or not 300 <= status <= 599:
                    raise ValueError(f"middleware {middleware!r} returned {status!r}: a rejection is a status from 300 to 599")
                return status, None
        match = self.resolve(request.path)
        if match is None:
            return 404, None
        return 200, match
