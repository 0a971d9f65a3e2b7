"""A real browser against our WebTransport server (issue 10): headless Chromium
(Debian's ``chromium``, which ``tools/run.sh test`` installs) loads a page from a
tiny HTTP server on http://127.0.0.1 (a secure context), opens a session to
``serve_webtransport`` pinned by ``serverCertificateHashes``, runs its checks
(tests/wt_chromium_page.html) and POSTs the results back as JSON.

Chromium runs as root with ``--headless --no-sandbox``, a throw-away profile,
and a resolver that maps every name but 127.0.0.1 to nothing, so it reaches
only our two servers. Its stderr is shown when the test fails.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import ByteReceiveStream, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from aiopquic import QuicConfig, StreamReset
from aiopquic import webtransport as wt

from .helpers import read_all

pytestmark = pytest.mark.anyio

PAGE = Path(__file__).with_name("wt_chromium_page.html")
#: The checks the page runs, each reported as "ok" or what went wrong.
CHECKS = (
    "session", "bidi echo", "256 KiB echo", "8 concurrent streams", "uni echo", "datagram echo",
    "stream resets", "server close", "close",
)
CLOSE_CODE = 4242
CLOSE_REASON = "bye from chromium \u2713"
#: From starting Chromium to the page's results (a run takes about two seconds).
RESULTS_TIMEOUT = 30.0


@dataclass(frozen=True)
class PinnedCertificate:
    """A certificate Chromium accepts through ``serverCertificateHashes``."""

    certfile: Path
    keyfile: Path
    sha256: bytes  # of the DER certificate


def make_pinned_certificate(directory: Path) -> PinnedCertificate:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1, valid for 10 days
    (the WebTransport spec allows at most 14 for a certificate pinned by hash)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "pinned-cert.pem", directory / "pinned-key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return PinnedCertificate(certfile, keyfile, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())


def echo_app(seen: dict[str, Any]) -> wt.WebTransportApp:
    """``/echo``: bidi streams echoed, uni streams answered on a uni stream of
    ours, datagrams echoed; ``seen`` gets what Chromium sent and how it closed."""
    app = wt.WebTransportApp()

    @app.route("/echo")
    async def echo(session: wt.WebTransportSession) -> None:
        seen["dialect"] = session.dialect
        seen["origin"] = session.origin
        seen["headers"] = session.headers
        seen["settings"] = dict(session._router.h3.protocol.peer_settings or {})

        async def datagrams() -> None:
            with contextlib.suppress(wt.SessionClosed):
                while True:
                    await session.send_datagram(await session.receive_datagram())

        async def answer(stream: wt.WebTransportStream | wt.WebTransportReceiveStream) -> None:
            try:
                if isinstance(stream, wt.WebTransportStream):
                    await echo_stream(stream)
                else:
                    data = await read_all(stream)
                    back = await session.open_uni_stream()
                    await back.send(data, eof=True)
            except StreamReset as exc:
                seen.setdefault("resets", []).append(exc.error_code)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(datagrams)
                async for stream in session:
                    tg.start_soon(answer, stream)
                tg.cancel_scope.cancel()
        except Exception as exc:
            seen["handler error"] = exc
            raise
        finally:
            seen["closed"] = session._closed  # the handler is cancelled once the peer closed

    @app.route("/server-close")
    async def server_close(session: wt.WebTransportSession) -> None:
        stream = await session.open_stream()
        await stream.send(b"from the server", eof=True)
        seen["answer"] = await read_all(stream)
        session.close(7, "server says bye")

    return app


async def echo_stream(stream: wt.WebTransportStream) -> None:
    """Echo each chunk as it arrives; answer b"reset me" with a reset (code 2**32 - 1, the largest)."""
    while True:
        try:
            data = await stream.receive()
        except anyio.EndOfStream:
            await stream.send_eof()
            return
        if data == b"reset me":
            stream.reset(0xFFFF_FFFF)
            return
        await stream.send(data)


async def _read_request(stream: SocketStream) -> tuple[str, str, bytes]:
    """Method, target and body of one HTTP/1.1 request."""
    buffered = BufferedByteReceiveStream(stream)
    head = await buffered.receive_until(b"\r\n\r\n", 64 * 1024)
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    length = 0
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await buffered.receive_exactly(length) if length else b""
    return method, target, body


@asynccontextmanager
async def page_server(results: anyio.abc.ObjectSendStream[dict[str, Any]]) -> AsyncIterator[int]:
    """A tiny HTTP/1.1 server on 127.0.0.1: ``GET /`` is the page, ``POST /results``
    hands the page's JSON to ``results``; yields its port."""
    page = PAGE.read_bytes()

    async def handle(stream: SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(10):
                try:
                    method, target, body = await _read_request(stream)
                except (anyio.IncompleteRead, anyio.BrokenResourceError):
                    return  # Chromium opens spare connections it may close unused
                if method == "GET" and target.partition("?")[0] == "/":
                    status, content = "200 OK", page
                elif method == "POST" and target == "/results":
                    await results.send(json.loads(body))
                    status, content = "204 No Content", b""
                else:  # /favicon.ico and the like
                    status, content = "404 Not Found", b""
                await stream.send(
                    f"HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n"
                    f"content-length: {len(content)}\r\nconnection: close\r\n\r\n".encode() + content
                )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


class ChromiumExited(Exception):
    """Chromium ended while the test still needed it."""


@asynccontextmanager
async def chromium(url: str, stderr: bytearray) -> AsyncIterator[None]:
    """Headless Chromium showing ``url`` for the duration of the block; its
    stderr goes into ``stderr``. Leaving the block ends it and its children;
    if it ends first, the block fails with :class:`ChromiumExited`.

    Everything it writes (profile, crash reports, temporary files) goes into a
    throw-away directory, short enough for its sockets' paths.
    """
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is not installed: run the suite with `bash tools/run.sh test`"
    with tempfile.TemporaryDirectory(prefix="wt-chromium-") as home:
        env = dict(os.environ)
        for name, sub in (("HOME", "home"), ("TMPDIR", "tmp"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache")):
            env[name] = os.path.join(home, sub)
            os.mkdir(env[name])
        args = [
            executable, "--headless", "--no-sandbox", f"--user-data-dir={home}/profile",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-gpu",
            "--disable-dev-shm-usage", url,
        ]
        process = await anyio.open_process(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
            start_new_session=True,
        )

        collected = anyio.Event()

        async def collect(pipe: ByteReceiveStream) -> None:
            async for chunk in pipe:
                stderr.extend(chunk)
            collected.set()

        async def watch() -> None:
            status = await process.wait()
            with anyio.move_on_after(1):  # its last words
                await collected.wait()
            raise ChromiumExited(f"chromium exited with status {status} while the test ran: see its stderr in the captured output")

        def signal_group(signum: int) -> None:
            with contextlib.suppress(ProcessLookupError):  # its own process group: renderers, zygotes
                os.killpg(process.pid, signum)

        try:
            async with anyio.create_task_group() as tg:
                assert process.stderr is not None
                tg.start_soon(collect, process.stderr)
                tg.start_soon(watch)
                yield
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                signal_group(signal.SIGTERM)
                with anyio.move_on_after(5):
                    await process.wait()
                signal_group(signal.SIGKILL)
                with anyio.move_on_after(5):
                    await process.wait()
                await process.aclose()


async def test_chromium_webtransport_session(tmp_path: Path) -> None:
    pinned = make_pinned_certificate(tmp_path)
    # Chromium leaves a connection without CONNECTION_CLOSE once its session is
    # over: the server's shutdown need not wait the default 2 s for its acks.
    config = QuicConfig(alpn=["h3"], certfile=pinned.certfile, keyfile=pinned.keyfile, close_timeout=0.2)
    seen: dict[str, Any] = {}
    stderr = bytearray()
    send_results, receive_results = anyio.create_memory_object_stream[dict[str, Any]](1)
    report: dict[str, Any] | None = None
    try:
        with anyio.fail_after(RESULTS_TIMEOUT + 10):
            async with anyio.create_task_group() as tg, page_server(send_results) as http_port:
                listener = await tg.start(wt.serve_webtransport, echo_app(seen), "127.0.0.1", 0, config)
                url = f"http://127.0.0.1:{http_port}/?port={listener.port}&hash={pinned.sha256.hex()}"
                async with chromium(url, stderr):
                    with anyio.fail_after(RESULTS_TIMEOUT):
                        report = await receive_results.receive()
                    with anyio.move_on_after(5):  # the close and the page's reset reach the handler
                        while "closed" not in seen or "resets" not in seen:
                            await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
    except BaseException:
        print(f"chromium's stderr:\n{stderr.decode(errors='replace')}")
        print(f"the page reported: {report}\nthe server saw: {seen}")
        raise

    assert report is not None
    failed = {name: report["checks"].get(name, "did not run") for name in CHECKS if report["checks"].get(name) != "ok"}
    assert not failed and report["error"] is None, (
        f"Chromium's checks failed: {failed}, error {report['error']!r}\n"
        f"({report['userAgent']}; the server saw {seen})\nchromium's stderr:\n{stderr.decode(errors='replace')}"
    )
    assert "handler error" not in seen, f"the server's handler failed: {seen['handler error']!r}"
    closed = seen.get("closed")
    assert isinstance(closed, wt.SessionClosed), f"the session did not close: {seen}"
    assert (closed.error_code, closed.reason, closed.by_peer) == (CLOSE_CODE, CLOSE_REASON, True)
    assert seen.get("resets") == [77], f"the handler saw the page's stream reset as {seen.get('resets')}, not [77]"
    assert seen.get("answer") == b"ack from chromium"
    assert seen.get("origin") == f"http://127.0.0.1:{http_port}"
    print(f"{report['userAgent']}: dialect {seen['dialect'].name}, SETTINGS { {hex(k): v for k, v in seen['settings'].items()} }")
