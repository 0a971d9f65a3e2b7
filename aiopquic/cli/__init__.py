"""Command-line tools of ``python -m aiopquic``:

- ``demo``: a QUIC echo server and client on loopback, printing what happens;
- ``serve MODULE:APP``: an ASGI application over HTTP/3 (like ``hypercorn``);
- ``get URL``: one request over HTTP/3 (like ``curl --http3-only``);
- ``webtransport-echo``: a WebTransport echo server and a page to try it in a browser.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from ._backend import BACKENDS, missing

__all__ = ["main"]


def _add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio", help="asyncio, trio, or asyncio on uvloop")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aiopquic``."""
    parser = argparse.ArgumentParser(
        prog="python -m aiopquic", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="server + client on loopback, printing what happens")
    _add_backend_argument(demo)
    demo.add_argument("--verbose", "-v", action="store_true", help="log aiopquic's debug messages")

    serve = sub.add_parser("serve", help="serve an ASGI application over HTTP/3 (like hypercorn app:app)")
    serve.add_argument("app", metavar="MODULE:APP", help="the application, imported from the current directory (APP defaults to 'app')")
    serve.add_argument("--certfile", required=True, help="certificate chain (PEM)")
    serve.add_argument("--keyfile", required=True, help="private key (PEM)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; '::' for every address)")
    serve.add_argument("--port", type=int, default=4433, help="UDP port (default 4433; 0 picks a free one)")
    _add_backend_argument(serve)
    serve.add_argument("--root-path", default="", help="the ASGI root_path (mount point behind a proxy)")
    serve.add_argument("--shutdown-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="on SIGINT/SIGTERM, how long requests in flight may finish (default 5)")
    serve.add_argument("--verbose", "-v", action="store_true", help="log aiopquic's debug messages")

    get = sub.add_parser("get", help="fetch a URL over HTTP/3 (like curl --http3-only)")
    get.add_argument("url", metavar="URL", help="an https:// URL")
    get.add_argument("-o", "--output", metavar="FILE", help="write the body to FILE (default: stdout)")
    trust = get.add_mutually_exclusive_group()
    trust.add_argument("--cafile", metavar="FILE", help="trust the CAs in FILE (PEM) instead of the default ones")
    trust.add_argument("-k", "--insecure", action="store_true", help="do not verify the server's certificate")
    get.add_argument("-X", "--request", dest="method", metavar="METHOD", help="request method (default GET, POST with -d)")
    get.add_argument("-d", "--data", metavar="DATA", help="request body; @FILE reads it from FILE, @- from stdin")
    get.add_argument("-H", "--header", dest="headers", action="append", default=[], metavar="'NAME: VALUE'",
                     help="add a request header (repeatable)")
    get.add_argument("-i", "--include", action="store_true", help="write the status line and headers before the body")
    get.add_argument("-v", "--verbose", action="store_true", help="show the request and response heads on stderr")
    get.add_argument("-s", "--silent", action="store_true", help="no progress display")
    get.add_argument("-f", "--fail", action="store_true", help="exit 22, writing no body, when the status is 400 or more")
    get.add_argument("-m", "--max-time", dest="timeout", type=float, metavar="SECONDS", help="give up after this long")
    _add_backend_argument(get)

    echo = sub.add_parser("webtransport-echo", help="a WebTransport echo server and a page to try it in a browser")
    echo.add_argument("--port", type=int, default=4433, help="UDP port of the WebTransport server (default 4433)")
    echo.add_argument("--page-port", type=int, default=8080, help="TCP port of the page (default 8080)")
    echo.add_argument("--certfile", help="certificate (PEM; default: a throw-away one a browser pins by its hash)")
    echo.add_argument("--keyfile", help="its private key (PEM)")
    _add_backend_argument(echo)
    echo.add_argument("--verbose", "-v", action="store_true", help="log aiopquic's debug messages")

    args = parser.parse_args(argv)
    if (needed := missing(args.backend)) is not None:
        parser.error(needed)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose and args.command != "get" else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from .demo import run

        return run(args.backend)
    if args.command == "serve":
        from .serve import run as serve_run

        return serve_run(
            args.app,
            certfile=args.certfile,
            keyfile=args.keyfile,
            host=args.host,
            port=args.port,
            backend=args.backend,
            root_path=args.root_path,
            shutdown_timeout=args.shutdown_timeout,
        )
    if args.command == "get":
        from .get import run as get_run

        return get_run(
            args.url,
            output=args.output,
            cafile=args.cafile,
            insecure=args.insecure,
            method=args.method,
            data=args.data,
            headers=args.headers,
            include=args.include,
            verbose=args.verbose,
            silent=args.silent,
            fail=args.fail,
            timeout=args.timeout,
            backend=args.backend,
        )
    if args.command == "webtransport-echo":
        from .wt_echo import run as echo_run

        return echo_run(
            port=args.port, page_port=args.page_port, certfile=args.certfile, keyfile=args.keyfile, backend=args.backend
        )
    return 2
