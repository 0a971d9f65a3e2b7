"""``python -m aiopquic serve`` and ``python -m aiopquic get`` as subprocesses, against each other."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiopquic.cli.certs import CertificateSet

from .h3_starlette_app import pattern
from .helpers import wait_for_line

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30


def _cli(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "aiopquic", *args], cwd=ROOT, capture_output=True, timeout=TIMEOUT, input=input
    )


class Server:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"https://127.0.0.1:{port}"


@pytest.fixture(scope="module", params=["asyncio", "trio", "uvloop"])
def server(request: pytest.FixtureRequest, certs: CertificateSet) -> Iterator[Server]:
    process = subprocess.Popen(
        [sys.executable, "-m", "aiopquic", "serve", "tests.h3_starlette_app:app",
         "--certfile", str(certs.certfile), "--keyfile", str(certs.keyfile),
         "--host", "127.0.0.1", "--port", "0", "--backend", request.param],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        match = wait_for_line(process, r"https://127\.0\.0\.1:(\d+)/", TIMEOUT)
        yield Server(process, int(match.group(1)))
        # SIGTERM: a graceful shutdown, exit status 0.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)
        assert process.stderr is not None
        process.stderr.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio", "uvloop"])
def test_get_a_large_body_to_a_file(server: Server, certs: CertificateSet, tmp_path: Path, backend: str) -> None:
    size = 5 * 1024 * 1024 + 3
    out = tmp_path / "body.bin"
    result = _cli("get", f"{server.url}/bytes/{size}", "--cafile", str(certs.cafile), "-o", str(out), "--backend", backend)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(pattern(size)).hexdigest()
    assert result.stdout == b""
    # stderr is no terminal here: one summary line instead of a redrawn bar.
    assert re.search(rb"received 5\.0 MiB in [0-9.]+ s", result.stderr), result.stderr


def test_get_to_stdout_with_the_head(server: Server, certs: CertificateSet) -> None:
    result = _cli("get", f"{server.url}/info?a=1", "--cafile", str(certs.cafile), "-i", "-H", "X-Test: yes")
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/3 200\r\n")
    assert b"content-type: application/json" in head
    seen = json.loads(body)
    assert seen["query"] == "a=1" and seen["headers"]["x-test"] == "yes" and seen["http_version"] == "3"


def test_post_a_file(server: Server, certs: CertificateSet, tmp_path: Path) -> None:
    body = pattern(2 * 1024 * 1024 + 11)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(body)
    result = _cli("get", f"{server.url}/sha256", "--cafile", str(certs.cafile), "-d", f"@{upload}", "-v", "-s")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    assert b"> POST /sha256 HTTP/3" in result.stderr and b"< HTTP/3 200" in result.stderr


def test_failures_have_a_message_and_an_exit_status(server: Server, certs: CertificateSet, other_certs: CertificateSet) -> None:
    result = _cli("get", f"{server.url}/", "--cafile", str(other_certs.cafile))
    assert result.returncode == 1
    assert b"aiopquic get: error:" in result.stderr and b"--insecure" in result.stderr
    assert b"Traceback" not in result.stderr

    result = _cli("get", f"{server.url}/", "--insecure")
    assert result.returncode == 0 and result.stdout == b"hello over HTTP/3"

    result = _cli("get", f"{server.url}/missing", "--cafile", str(certs.cafile), "-f")
    assert result.returncode == 22 and b"404" in result.stderr

    result = _cli("get", f"{server.url}/sleep/5", "--cafile", str(certs.cafile), "-m", "0.5")
    assert result.returncode == 1 and b"timed out" in result.stderr

    result = _cli("get", f"http://127.0.0.1:{server.port}/")
    assert result.returncode == 1 and b"https://" in result.stderr

    result = _cli("get", f"{server.url}/", "-H", "no colon")
    assert result.returncode == 2 and b"bad header" in result.stderr


def test_nobody_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = _cli("get", f"https://127.0.0.1:{port}/", "-k", "-m", "0.5")
    assert result.returncode == 1 and b"aiopquic get: error:" in result.stderr


def test_serve_refuses_a_bad_app(certs: CertificateSet) -> None:
    common = ["--certfile", str(certs.certfile), "--keyfile", str(certs.keyfile), "--port", "0"]
    result = _cli("serve", "tests.no_such_module:app", *common)
    assert result.returncode == 2 and b"cannot import module" in result.stderr
    result = _cli("serve", "tests.h3_starlette_app:nothing", *common)
    assert result.returncode == 2 and b"no attribute" in result.stderr
    result = _cli("serve", "tests.h3_starlette_app:app", "--certfile", "/nonexistent", "--keyfile", str(certs.keyfile))
    assert result.returncode == 2 and b"certfile" in result.stderr
