"""pywebtransport 0.8 (draft-13, on aioquic) as an independent WebTransport peer.

- :func:`pywebtransport_session`: its client against our server: a bidi
  echo, a uni stream answered on a uni stream, a datagram echo, then its
  close with a code and a reason. Blocking (asyncio.run): call it through
  helpers.run_blocking.
- :class:`PywebtransportServer`: its server in a thread of its own, on
  127.0.0.1: ``/echo`` echoes bidi streams, answers a uni stream on one of
  its own, echoes datagrams and notes how the session was closed;
  ``/close`` reads one stream, then closes the session with code 77.

pywebtransport's ``initial_max_*`` default to 0 (nothing allowed until a
capsule grants it): both sides here set them. Its initial data limit is
smaller than half its flow-control window, so it grants WT_MAX_DATA as soon
as we send: pywebtransport 0.8 sends its capsules as bare frames on the
CONNECT stream (not inside DATA frames) and fails the connection on a DATA
frame there, so our side answers in kind once it has seen one.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

from pywebtransport import ClientConfig, ServerApp, ServerConfig, WebTransportClient
from pywebtransport.stream import WebTransportReceiveStream, WebTransportStream

#: What pywebtransport allows us per session, before it grants more.
INITIAL_MAX_DATA = 256 * 1024
INITIAL_MAX_STREAMS = 4


@dataclass
class ClientReport:
    """What pywebtransport's client saw of the session."""

    bidi_echo: bytes = b""
    uni_echo: bytes = b""
    datagram_echo: bytes = b""


def pywebtransport_session(port: int, path: str, *, cafile: str | os.PathLike[str], payload: bytes,
                           close_code: int, close_reason: str) -> ClientReport:
    """Run the whole session against 127.0.0.1:``port``; what it saw."""
    config = ClientConfig(
        ca_certs=os.fspath(cafile), verify_mode=ssl.CERT_REQUIRED, connect_timeout=10,
        initial_max_data=INITIAL_MAX_DATA, initial_max_streams_bidi=INITIAL_MAX_STREAMS,
        initial_max_streams_uni=INITIAL_MAX_STREAMS,
    )
    report = ClientReport()

    async def run() -> ClientReport:
        async with WebTransportClient(config=config) as client:
            session = await client.connect(url=f"https://127.0.0.1:{port}{path}",
                                           headers={"origin": "https://pywebtransport.test"})
            stream = await session.create_bidirectional_stream()
            await stream.write(data=payload, end_stream=True)
            report.bidi_echo = await stream.read_all()
            uni = await session.create_unidirectional_stream()
            await uni.write(data=b"one way", end_stream=True)
            async for back in session.incoming_streams():
                assert isinstance(back, WebTransportReceiveStream)
                report.uni_echo = await back.read_all()
                break
            datagrams = await session.create_datagram_transport()
            await datagrams.send(data=b"tick")
            report.datagram_echo = await datagrams.receive(timeout=5)
            await session.close(code=close_code, reason=close_reason)
        return report

    return asyncio.run(asyncio.wait_for(run(), 15))


@dataclass
class ServerSeen:
    """What pywebtransport's server saw of our client's sessions."""

    origins: list[str] = field(default_factory=list)
    last_words: bytes = b""
    closes: list[tuple[int, str]] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)


class PywebtransportServer:
    """pywebtransport's ServerApp in its own thread (``with`` starts and stops it)."""

    def __init__(self, certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str]) -> None:
        self.config = ServerConfig(
            certfile=os.fspath(certfile), keyfile=os.fspath(keyfile), bind_host="127.0.0.1", bind_port=_free_udp_port(),
            initial_max_data=INITIAL_MAX_DATA, initial_max_streams_bidi=INITIAL_MAX_STREAMS,
            initial_max_streams_uni=INITIAL_MAX_STREAMS,
        )
        self.seen = ServerSeen()
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="pywebtransport server", daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> PywebtransportServer:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"pywebtransport's server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        app = ServerApp(config=self.config)
        seen = self.seen

        def on_closed(event: Any) -> None:
            data = event.data if isinstance(event.data, dict) else {}
            seen.closes.append((data.get("code", -1), data.get("reason", "")))
            seen.closed.set()

        @app.route(path="/echo")
        async def echo(session: Any) -> None:
            session.on(event_type="session_closed", handler=on_closed)
            seen.origins.append(session.headers.get("origin", ""))
            datagrams = await session.create_datagram_transport()

            async def echo_datagrams() -> None:
                while True:
                    await datagrams.send(data=await datagrams.receive())

            async def answer(stream: Any) -> None:
                data = await stream.read_all()
                if isinstance(stream, WebTransportStream):
                    await stream.write(data=data, end_stream=True)
                else:
                    back = await session.create_unidirectional_stream()
                    await back.write(data=data, end_stream=True)

            tasks = [asyncio.create_task(echo_datagrams())]
            async for stream in session.incoming_streams():
                tasks.append(asyncio.create_task(answer(stream)))
            for task in tasks:
                task.cancel()
            await session.wait_closed()

        @app.route(path="/close")
        async def close(session: Any) -> None:
            async for stream in session.incoming_streams():
                seen.last_words = await stream.read_all()
                break
            await session.close(code=77, reason="closed by pywebtransport", close_connection=False)

        async with app:
            await app.server.listen(host="127.0.0.1", port=self.config.bind_port)
            address = app.server.local_address
            assert address is not None
            self.port = address[1]
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()


def _free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 now (pywebtransport's server takes no port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
