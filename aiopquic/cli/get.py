"""``python -m aiopquic get URL``: one request over HTTP/3 (like ``curl --http3-only``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import BinaryIO, TextIO
from urllib.parse import urlsplit

import anyio

from ..quic.config import QuicConfig
from ..quic.errors import HandshakeError, QuicError
from ._backend import run as run_on

__all__ = ["run"]

#: Bodies over this size get a progress display on stderr.
PROGRESS_ABOVE = 1024 * 1024


class GetError(Exception):
    """A failure to report in one line (exit status 1)."""


class Progress:
    """A one-line progress bar on stderr: redrawn in place on a terminal,
    a summary line at the end otherwise. Shown only once the body is large
    (``PROGRESS_ABOVE``, by its content-length or by what arrived)."""

    def __init__(self, stream: TextIO, total: int | None, *, enabled: bool) -> None:
        self.stream = stream
        self.total = total
        self.enabled = enabled
        self.tty = stream.isatty()
        self.received = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._shown = False

    def _large(self) -> bool:
        return (self.total or 0) > PROGRESS_ABOVE or self.received > PROGRESS_ABOVE

    def update(self, count: int) -> None:
        self.received += count
        if not (self.enabled and self.tty and self._large()):
            return
        now = time.monotonic()
        if now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = self.received / elapsed
        if self.total:
            fraction = min(self.received / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            line = f"\r[{bar:<30}] {fraction * 100:5.1f}% {_size(self.received)}/{_size(self.total)} {_size(rate)}/s"
        else:
            line = f"\r{_size(self.received)} {_size(rate)}/s"
        self.stream.write(line)
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if not (self.enabled and self._large()):
            return
        now = time.monotonic()
        if self.tty:
            self._draw(now)
            self.stream.write("\n")
        else:
            elapsed = max(now - self.started, 1e-6)
            self.stream.write(f"received {_size(self.received)} in {elapsed:.2f} s ({_size(self.received / elapsed)}/s)\n")
        self.stream.flush()


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise GetError(f"bad header {text!r}: expected 'name: value'")
    return name.strip().lower(), value.strip()


def _body(data: str | None) -> bytes:
    if data is None:
        return b""
    if data.startswith("@"):
        path = data[1:]
        try:
            if path == "-":
                return sys.stdin.buffer.read()
            with open(path, "rb") as file:
                return file.read()
        except OSError as exc:
            raise GetError(f"cannot read {path!r}: {exc}") from exc
    return data.encode()


async def _get(
    url: str,
    *,
    config: QuicConfig,
    method: str,
    headers: list[tuple[str, str]],
    content: bytes,
    output: BinaryIO,
    include: bool,
    verbose: bool,
    progress: bool,
    fail: bool,
) -> int:
    from ..h3.client import open_h3_connection

    parts = urlsplit(url)
    if parts.scheme != "https":
        raise GetError(f"HTTP/3 needs an https:// URL, got {url!r}")
    if not parts.hostname:
        raise GetError(f"no host in {url!r}")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise GetError(f"bad port in {url!r}: {exc}") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    err = sys.stderr
    if verbose:
        print(f"* connecting to {parts.hostname} port {port} (UDP, HTTP/3)", file=err)
    started = time.monotonic()
    async with open_h3_connection(parts.hostname, port, config=config) as conn:
        if verbose:
            print(f"* connected in {(time.monotonic() - started) * 1000:.1f} ms to {conn.quic.remote_address}", file=err)
            print(f"> {method} {path} HTTP/3", file=err)
            print(f"> host: {conn.authority}", file=err)
            for key, text in headers:
                print(f"> {key}: {text}", file=err)
            print(">", file=err)
        async with conn.stream(method, path, headers=headers, content=content) as response:
            head = [f"HTTP/3 {response.status}"]
            head += [f"{name.decode('latin-1')}: {value.decode('latin-1')}" for name, value in response.headers]
            if verbose:
                for line in head:
                    print(f"< {line}", file=err)
                print("<", file=err)
            if include:
                output.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            if fail and response.status >= 400:
                raise GetError(f"the server answered {response.status}")
            length = next((value for name, value in response.headers if name == b"content-length"), None)
            meter = Progress(err, int(length) if length and length.isdigit() else None, enabled=progress)
            async for chunk in response.aiter_bytes():
                output.write(chunk)
                meter.update(len(chunk))
            output.flush()
            meter.finish()
            if verbose:
                for trailer, field in response.trailers:
                    print(f"< {trailer.decode('latin-1')}: {field.decode('latin-1')} (trailer)", file=err)
                print(f"* {meter.received} bytes of body in {time.monotonic() - started:.3f} s", file=err)
    return 0


def run(
    url: str,
    *,
    output: str | None,
    cafile: str | None,
    insecure: bool,
    method: str | None,
    data: str | None,
    headers: Sequence[str],
    include: bool,
    verbose: bool,
    silent: bool,
    fail: bool,
    timeout: float | None,
    backend: str,
) -> int:
    """Fetch ``url``; return the exit status (0, 1 on failure, 2 on bad arguments)."""
    try:
        parsed_headers = [_parse_header(text) for text in headers]
        content = _body(data)
        config = QuicConfig(alpn=["h3"], cafile=cafile, verify=not insecure)
    except (GetError, ValueError, TypeError) as exc:
        print(f"aiopquic get: error: {exc}", file=sys.stderr)
        return 2
    method = (method or ("POST" if data is not None else "GET")).upper()
    out: BinaryIO
    try:
        out = open(output, "wb") if output and output != "-" else sys.stdout.buffer
    except OSError as exc:
        print(f"aiopquic get: error: cannot write {output!r}: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        with anyio.fail_after(timeout):
            return await _get(
                url,
                config=config,
                method=method,
                headers=parsed_headers,
                content=content,
                output=out,
                include=include,
                verbose=verbose,
                progress=not silent,
                fail=fail,
            )

    try:
        return run_on(main, backend=backend)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, no traceback, for what can go wrong on the network
        error = _leaf(exc)
        if isinstance(error, TimeoutError):
            message = f"timed out after {timeout} s"
        elif isinstance(error, (GetError, QuicError, OSError, ValueError, anyio.BrokenResourceError)):
            message = str(error) or type(error).__name__
            if isinstance(error, HandshakeError) and "certificate" in message:
                message += " (here: --cafile FILE, or --insecure)"
        else:
            raise
        print(f"aiopquic get: error: {message}", file=sys.stderr)
        return 22 if isinstance(error, GetError) and fail and message.startswith("the server answered") else 1
    finally:
        if out is not sys.stdout.buffer:
            out.close()


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and len(exc.exceptions) == 1:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc
