"""WebTransportApp: routes with parameters, middleware, 404."""

from __future__ import annotations

import anyio
import pytest

from aiopquic.webtransport._dialects import (
    ConnectRequest,
    Dialect,
    SessionLimits,
    client_settings,
    parse_connect,
    request_headers,
)
from aiopquic.webtransport._routing import RouteMatch, SessionRequest, WebTransportApp


async def echo(session: object) -> None:
    """A handler (never run here: routing only hands it over)."""


async def room(session: object) -> None:
    """Another handler."""


async def files(session: object) -> None:
    """A handler for a path parameter."""


def request(path: str, origin: str | None = "https://example.org") -> SessionRequest:
    return SessionRequest(path=path, headers=[], origin=origin, authority="localhost", dialect=Dialect.DRAFT15)


def test_static_and_pattern_routes_resolve() -> None:
    app = WebTransportApp()
    assert app.route("/echo")(echo) is echo  # the decorator hands the handler back
    app.route("/rooms/{name}")(room)
    app.route("/files/{owner}/{rest:path}")(files)
    assert app.resolve("/echo") == RouteMatch(echo, {})
    assert app.resolve("/rooms/lobby") == RouteMatch(room, {"name": "lobby"})
    assert app.resolve("/files/ann/a/b.txt") == RouteMatch(files, {"owner": "ann", "rest": "a/b.txt"})
    for unknown in ("/", "/echo/", "/rooms", "/rooms/", "/rooms/a/b", "/files/ann", "/ech"):
        assert app.resolve(unknown) is None, unknown


def test_static_routes_win_over_patterns_and_patterns_keep_their_order() -> None:
    app = WebTransportApp()
    app.route("/rooms/{name}")(room)
    app.route("/rooms/special")(echo)
    app.route("/{anything}/{rest:path}")(files)
    assert app.resolve("/rooms/special") == RouteMatch(echo, {})
    assert app.resolve("/rooms/x") == RouteMatch(room, {"name": "x"})
    assert app.resolve("/a/b/c") == RouteMatch(files, {"anything": "a", "rest": "b/c"})


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("echo", "absolute path"),
        ("/rooms/x{name}", "whole path segment"),
        ("/rooms/{name}x", "whole path segment"),
        ("/{a}/{a}", "twice"),
        ("/{rest:path}/x", "last segment"),
        ("/rooms/{9}", "brace"),
        ("/rooms/{name}/}", "brace"),
    ],
)
def test_malformed_routes_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebTransportApp().add_route(pattern, echo)


def test_a_path_cannot_be_registered_twice() -> None:
    app = WebTransportApp()
    app.add_route("/echo", echo)
    app.add_route("/rooms/{name}", room)
    with pytest.raises(ValueError, match="already registered"):
        app.add_route("/echo", room)
    with pytest.raises(ValueError, match="already registered"):
        app.add_route("/rooms/{name}", echo)


@pytest.mark.anyio
async def test_admit_runs_middleware_in_order_then_routes() -> None:
    app = WebTransportApp()
    app.route("/rooms/{name}")(room)
    seen: list[str] = []

    @app.middleware
    async def log(req: SessionRequest) -> int | None:
        seen.append(req.path)
        await anyio.sleep(0)
        return None

    @app.middleware
    async def only_our_origin(req: SessionRequest) -> int | None:
        return None if req.origin == "https://example.org" else 403

    with anyio.fail_after(5):
        assert await app.admit(request("/rooms/a")) == (200, RouteMatch(room, {"name": "a"}))
        assert await app.admit(request("/rooms/a", origin="https://evil.example")) == (403, None)
        assert await app.admit(request("/nowhere")) == (404, None)
    assert seen == ["/rooms/a", "/rooms/a", "/nowhere"]


@pytest.mark.anyio
async def test_a_middleware_that_returns_something_odd_is_a_clear_error() -> None:
    app = WebTransportApp()

    @app.middleware
    async def bad(req: SessionRequest) -> int | None:
        return 200

    with anyio.fail_after(5), pytest.raises(ValueError, match="returned 200: a rejection is a status from 300 to 599"):
        await app.admit(request("/"))


def test_session_request_from_a_validated_connect() -> None:
    headers = request_headers(Dialect.DRAFT13, authority="h:1", path="/rooms/a%2Fb?k=v", origin="https://o")
    connect = parse_connect(headers, client_settings())
    assert isinstance(connect, ConnectRequest)
    assert SessionRequest.from_connect(connect) == SessionRequest("/rooms/a/b", headers, "https://o", "h:1", Dialect.DRAFT13, "k=v")


def test_an_app_takes_only_session_limits() -> None:
    assert WebTransportApp().limits == SessionLimits()
    limits = SessionLimits(max_sessions=2, initial_max_data=1 << 20)
    assert WebTransportApp(limits=limits).limits is limits
    with pytest.raises(TypeError, match="limits must be a SessionLimits"):
        WebTransportApp(limits={"max_sessions": 2})  # type: ignore[arg-type]
