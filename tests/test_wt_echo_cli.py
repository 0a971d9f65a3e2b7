"""``python -m aiopquic webtransport-echo``: its echo server, its page, its command line."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from aiopquic import QuicConfig
from aiopquic import webtransport as wt
from aiopquic.cli.certs import make_pinned_certificate
from aiopquic.cli.wt_echo import serve_echo

from .helpers import read_all, wait_for_line

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20


async def fetch_page(port: int) -> str:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        return (await read_all(stream)).decode()


@pytest.mark.anyio
async def test_echo_server_and_its_page(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pinned = make_pinned_certificate(tmp_path)
    server_config = QuicConfig(alpn=["h3"], certfile=pinned.certfile, keyfile=pinned.keyfile)
    # The client trusts the self-signed certificate itself (what pinning its hash means).
    client_config = QuicConfig(alpn=["h3"], cafile=pinned.certfile, server_name="127.0.0.1")
    caplog.set_level(logging.INFO, logger="aiopquic.cli")
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            port, page_port = await tg.start(serve_echo, server_config, pinned.sha256, 0, 0)

            page = await fetch_page(page_port)
            assert page.startswith("HTTP/1.1 200 OK")
            assert f"https://127.0.0.1:{port}/echo" in page
            assert json.dumps(list(pinned.sha256)) in page

            async with wt.open_webtransport_session(f"https://127.0.0.1:{port}/echo", config=client_config) as session:
                stream = await session.open_stream()
                await stream.send(b"x" * 100_000, eof=True)
                assert await read_all(stream) == b"x" * 100_000

                uni = await session.open_uni_stream()
                await uni.send(b"one way", eof=True)
                answer = await session.accept_stream()
                assert isinstance(answer, wt.WebTransportReceiveStream)
                assert await read_all(answer) == b"one way"

                await session.send_datagram(b"ping")
                assert await session.receive_datagram() == b"ping"
                session.close(5, "done here")

            with anyio.fail_after(5):
                while not any("closed: code 5, reason 'done here'" in r.getMessage() for r in caplog.records):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()


def test_the_command_serves_until_interrupted() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aiopquic", "webtransport-echo", "--port", "0", "--page-port", "0"],
        cwd=ROOT, stderr=subprocess.PIPE,
    )
    try:
        said = wait_for_line(process, r"(?s)echo on https://127\.0\.0\.1:\d+/echo.*SHA-256: [0-9a-f]{64}.*"
                                      r"open http://127\.0\.0\.1:\d+/", TIMEOUT)
        assert said
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_command_wants_both_certificate_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiopquic", "webtransport-echo", "--certfile", "cert.pem"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert "give both --certfile and --keyfile" in result.stderr
