"""``python -m aiopquic serve MODULE:APP``: an ASGI application over HTTP/3 (like ``hypercorn app:app``)."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from typing import Any

import anyio

from ..quic.config import QuicConfig
from ._backend import run as run_on

__all__ = ["load_app", "run"]

logger = logging.getLogger("aiopquic.cli")


class CLIError(Exception):
    """A mistake on the command line: the message says which."""


def load_app(spec: str) -> Any:
    """The object ``MODULE:ATTR`` names (``ATTR`` may be dotted; default ``app``),
    the module imported with the current directory first on ``sys.path``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise CLIError(f"expected MODULE:APP, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise CLIError(f"cannot import module {module_name!r}: {exc}") from exc
        raise
    app: Any = module
    for part in (attribute or "app").split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise CLIError(f"module {module_name!r} has no attribute {attribute or 'app'!r}") from None
    if not callable(app):
        raise CLIError(f"{spec!r} is not an ASGI application (not callable)")
    return app


async def _serve(app: Any, host: str, port: int, config: QuicConfig, root_path: str, shutdown_timeout: float) -> None:
    from ..h3.server import serve_h3

    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    print(f"aiopquic serve: {signal.Signals(signum).name}, shutting down", file=sys.stderr, flush=True)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)
        listener = await tg.start(
            lambda task_status: serve_h3(
                app, host, port, config, root_path=root_path, shutdown_timeout=shutdown_timeout, task_status=task_status
            )
        )
        shown = f"[{host}]" if ":" in host else host
        print(f"aiopquic serve: HTTP/3 on https://{shown}:{listener.port}/ (UDP)", file=sys.stderr, flush=True)


def run(
    spec: str,
    *,
    certfile: str,
    keyfile: str,
    host: str,
    port: int,
    backend: str,
    root_path: str = "",
    shutdown_timeout: float = 5.0,
) -> int:
    """Serve ``spec`` until SIGINT or SIGTERM; return the exit status."""
    try:
        app = load_app(spec)
        config = QuicConfig(alpn=["h3"], certfile=certfile, keyfile=keyfile)
    except (CLIError, ValueError, TypeError) as exc:
        print(f"aiopquic serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        run_on(_serve, app, host, port, config, root_path, shutdown_timeout, backend=backend)
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        error = _leaf(exc)
        if not isinstance(error, OSError):
            raise
        print(f"aiopquic serve: error: cannot serve on {host} port {port}: {error}", file=sys.stderr)
        return 1
    return 0


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and len(exc.exceptions) == 1:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc
