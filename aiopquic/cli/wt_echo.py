"""``python -m aiopquic webtransport-echo``: a WebTransport echo server a browser can try.

It serves, on 127.0.0.1:

- WebTransport at ``https://127.0.0.1:PORT/echo``: bidirectional streams echoed
  as they arrive, unidirectional streams answered on a unidirectional stream of
  ours, datagrams echoed; each session's opening and closing (code and reason)
  logged on stderr;
- a page at ``http://127.0.0.1:PAGE_PORT/`` (a secure context, so a browser
  lets it use WebTransport) that opens a session, pinning the server's
  certificate by its SHA-256 (``serverCertificateHashes``), and echoes what you
  type on a stream or as a datagram.

Without ``--certfile``/``--keyfile`` it makes a throw-away certificate a browser
accepts that way (ECDSA P-256, valid 10 days).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import ssl
import sys
import tempfile
from pathlib import Path

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from ..quic.config import QuicConfig
from ..quic.errors import StreamReset
from ..webtransport import (
    SessionClosed,
    WebTransportApp,
    WebTransportReceiveStream,
    WebTransportSession,
    WebTransportStream,
    serve_webtransport,
)
from .certs import make_pinned_certificate
from ._backend import run as run_on

__all__ = ["echo_app", "run", "serve_echo"]

logger = logging.getLogger("aiopquic.cli.webtransport_echo")

#: What a browser page needs to reach the server.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>aiopquic WebTransport echo</title>
<style>body{font:15px system-ui;margin:2em;max-width:44em}pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}</style>
<h1>aiopquic WebTransport echo</h1>
<p><input id="text" value="hello over WebTransport" size="40">
<button id="stream">send on a stream</button> <button id="datagram">send as a datagram</button>
<button id="close">close (code 1000)</button></p>
<pre id="log"></pre>
<script type="module">
const URL_ = "https://127.0.0.1:%(port)d/echo";
const HASH = new Uint8Array(%(hash)s);
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const text = () => new TextEncoder().encode(document.getElementById("text").value);
const decode = (bytes) => new TextDecoder().decode(bytes);
let transport;
try {
  transport = new WebTransport(URL_, { serverCertificateHashes: [{ algorithm: "sha-256", value: HASH }] });
  await transport.ready;
  log(`session open: ${URL_}`);
} catch (e) {
  log(`could not open a session: ${e}`);
  throw e;
}
transport.closed.then((info) => log(`session closed: ${JSON.stringify(info)}`), (e) => log(`session failed: ${e}`));
const reader = transport.datagrams.readable.getReader();
(async () => { for (;;) { const { value, done } = await reader.read(); if (done) return; log(`datagram echo: ${decode(value)}`); } })();
document.getElementById("stream").onclick = async () => {
  const stream = await transport.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  await writer.write(text());
  await writer.close();
  let got = "";
  for await (const chunk of stream.readable) got += decode(chunk);
  log(`stream echo: ${got}`);
};
document.getElementById("datagram").onclick = async () => {
  const writer = transport.datagrams.writable.getWriter();
  await writer.write(text());
  writer.releaseLock();
};
document.getElementById("close").onclick = () => transport.close({ closeCode: 1000, reason: "closed from the page" });
</script>
"""


def echo_app() -> WebTransportApp:
    """The echo application: ``/echo`` echoes streams and datagrams."""
    app = WebTransportApp()

    @app.route("/echo")
    async def echo(session: WebTransportSession) -> None:
        logger.info("session %d open from %s (%s)", session.session_id, session.origin or "no origin",
                       session.dialect.name)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_echo_datagrams, session)
                async for stream in session:
                    tg.start_soon(_answer, session, stream)
                tg.cancel_scope.cancel()
        finally:
            closed = session.close_error
            if closed is not None:
                logger.info("session %d closed: code %d, reason %r", session.session_id, closed.error_code,
                               closed.reason)

    return app


async def _echo_datagrams(session: WebTransportSession) -> None:
    with contextlib.suppress(SessionClosed):
        while True:
            await session.send_datagram(await session.receive_datagram())


async def _answer(session: WebTransportSession, stream: WebTransportStream | WebTransportReceiveStream) -> None:
    with contextlib.suppress(StreamReset, SessionClosed):
        if isinstance(stream, WebTransportStream):
            async with stream:
                while True:
                    try:
                        data = await stream.receive()
                    except anyio.EndOfStream:
                        return  # leaving the block sends our FIN
                    await stream.send(data)
        else:
            chunks = []
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    chunks.append(await stream.receive())
            back = await session.open_uni_stream()
            await back.send(b"".join(chunks), eof=True)


async def _serve_page(stream: SocketStream, page: bytes) -> None:
    async with stream:
        with anyio.move_on_after(10), contextlib.suppress(anyio.BrokenResourceError, anyio.EndOfStream):
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 16384:
                request += await stream.receive()
            found = request.startswith(b"GET / ") or request.startswith(b"GET /?")
            status, body = ("200 OK", page) if found else ("404 Not Found", b"")
            await stream.send(
                f"HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body
            )


async def serve_echo(
    config: QuicConfig,
    sha256: bytes,
    port: int = 4433,
    page_port: int = 8080,
    *,
    task_status: TaskStatus[tuple[int, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the echo application and its page on 127.0.0.1 until cancelled;
    reports ``(webtransport_port, page_port)`` through ``task_status``."""
    async with anyio.create_task_group() as tg:
        listener = await tg.start(serve_webtransport, echo_app(), "127.0.0.1", port, config)
        page = (PAGE % {"port": listener.port, "hash": json.dumps(list(sha256))}).encode()
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=page_port)
        tg.start_soon(tcp.serve, lambda stream: _serve_page(stream, page))
        task_status.started((listener.port, tcp.extra(SocketAttribute.local_port)))


def _certificate_hash(certfile: str) -> bytes:
    """SHA-256 of the DER form of the first certificate in ``certfile``."""
    pem = Path(certfile).read_text()
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem[: pem.index("-----END CERTIFICATE-----") + 25])).digest()


def run(*, port: int, page_port: int, certfile: str | None, keyfile: str | None, backend: str) -> int:
    """The command: serve until SIGINT/SIGTERM; returns the exit code."""
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the sessions' comings and goings are what this command shows
    if (certfile is None) != (keyfile is None):
        print("webtransport-echo: give both --certfile and --keyfile, or neither", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="aiopquic-wt-echo-") as tmp:
        if certfile is None or keyfile is None:
            pinned = make_pinned_certificate(tmp)
            certfile, keyfile, sha256 = str(pinned.certfile), str(pinned.keyfile), pinned.sha256
        else:
            try:
                sha256 = _certificate_hash(certfile)
            except (OSError, ValueError) as exc:
                print(f"webtransport-echo: cannot read a certificate from {certfile}: {exc}", file=sys.stderr)
                return 2
        config = QuicConfig(alpn=["h3"], certfile=certfile, keyfile=keyfile)

        async def main() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with anyio.create_task_group() as tg:
                    wt_port, http_port = await tg.start(serve_echo, config, sha256, port, page_port)
                    print(f"WebTransport echo on https://127.0.0.1:{wt_port}/echo\n"
                          f"certificate SHA-256: {sha256.hex()}\n"
                          f"open http://127.0.0.1:{http_port}/ in Chrome, Edge or Firefox; Ctrl-C to stop",
                          file=sys.stderr, flush=True)
                    async for _ in signals:
                        break
                    tg.cancel_scope.cancel()

        run_on(main, backend=backend)
    return 0

