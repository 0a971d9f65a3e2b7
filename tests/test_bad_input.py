"""Bad input gets a clear exception: configuration, certificates, peers that vanish."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from aiopquic import ConnectionClosed, QuicConfig, open_quic_connection, serve_quic
from aiopquic.cli.certs import CertificateSet

from .helpers import echo_handler, read_all

BAD_VALUES = [
    ({"alpn": []}, "alpn"),
    ({"alpn": ["x" * 300]}, "alpn"),
    ({"alpn": ["h3\0evil"]}, "alpn"),  # C would see "h3"
    ({"alpn": ["\udc80"]}, "alpn"),
    ({"alpn": ["h3"], "certfile": "/nonexistent/cert.pem", "keyfile": "/nonexistent/key.pem"}, "certfile"),
    ({"alpn": ["h3"], "cafile": "/nonexistent/ca.pem"}, "cafile"),
    ({"alpn": ["h3"], "server_name": ""}, "server_name"),
    ({"alpn": ["h3"], "server_name": "example.org\0.evil"}, "server_name"),
    ({"alpn": ["h3"], "idle_timeout": -1}, "idle_timeout"),
    ({"alpn": ["h3"], "idle_timeout": float("nan")}, "idle_timeout"),
    ({"alpn": ["h3"], "idle_timeout": float("inf")}, "idle_timeout"),
    ({"alpn": ["h3"], "idle_timeout": 1e20}, "idle_timeout"),  # overflowed at connect
    ({"alpn": ["h3"], "idle_timeout": 0.0001}, "idle_timeout"),  # 0 ms: never
    ({"alpn": ["h3"], "handshake_timeout": 0}, "handshake_timeout"),
    ({"alpn": ["h3"], "handshake_timeout": 1e-7}, "handshake_timeout"),  # 0 us: picoquic's 30 s
    ({"alpn": ["h3"], "handshake_timeout": 1e20}, "handshake_timeout"),
    ({"alpn": ["h3"], "close_timeout": 1e20}, "close_timeout"),
    ({"alpn": ["h3"], "max_data": 0}, "max_data"),
    ({"alpn": ["h3"], "max_stream_data": 10}, "max_stream_data"),
    ({"alpn": ["h3"], "max_streams_bidi": -1}, "max_streams_bidi"),
    ({"alpn": ["h3"], "max_datagram_frame_size": 1 << 62}, "max_datagram_frame_size"),
    ({"alpn": ["h3"], "congestion_control": "warp"}, "congestion_control"),
    ({"alpn": ["h3"], "qlog_dir": "/nonexistent/dir"}, "qlog_dir"),
    ({"alpn": ["h3"], "keylog_file": "/nonexistent/dir/keys.log"}, "keylog_file"),
    ({"alpn": ["h3"], "keylog_file": "/tmp/keys\0.log"}, "keylog_file"),  # C would write /tmp/keys
]

WRONG_TYPES = [
    ({"alpn": "h3"}, "alpn"),
    ({"alpn": [b"h3"]}, "alpn"),
    # verify must be exactly True or False: these all used to turn verification off.
    ({"alpn": ["h3"], "verify": None}, "verify"),
    ({"alpn": ["h3"], "verify": ""}, "verify"),
    ({"alpn": ["h3"], "verify": 0}, "verify"),
    ({"alpn": ["h3"], "verify": "yes"}, "verify"),
    ({"alpn": ["h3"], "resume_sessions": None}, "resume_sessions"),
    ({"alpn": ["h3"], "inline_io": 1}, "inline_io"),
    ({"alpn": ["h3"], "server_name": b"example.org"}, "server_name"),
    ({"alpn": ["h3"], "idle_timeout": "30"}, "idle_timeout"),
    ({"alpn": ["h3"], "handshake_timeout": True}, "handshake_timeout"),
    ({"alpn": ["h3"], "max_streams_uni": 1.5}, "max_streams_uni"),
    ({"alpn": ["h3"], "socket_buffer_size": True}, "socket_buffer_size"),
    ({"alpn": ["h3"], "congestion_control": None}, "congestion_control"),
    ({"alpn": ["h3"], "cafile": 3}, "cafile"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_VALUES)
def test_bad_config_values_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        QuicConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "field"), WRONG_TYPES)
def test_wrong_config_types_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(TypeError, match=field):
        QuicConfig(**kwargs)  # type: ignore[arg-type]


def test_config_bounds_are_inclusive() -> None:
    QuicConfig(alpn=["h3"], idle_timeout=0, handshake_timeout=0.001, close_timeout=0)
    QuicConfig(alpn=["h3"], idle_timeout=86400, handshake_timeout=86400, close_timeout=86400)
    # aioquic's own examples use 65536; any varint is a legal transport parameter.
    QuicConfig(alpn=["h3"], max_datagram_frame_size=65536)
    QuicConfig(alpn=["h3"], max_datagram_frame_size=(1 << 62) - 1)


def test_config_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        QuicConfig(["h3"])  # type: ignore[misc]
    config = QuicConfig(alpn=["h3"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.idle_timeout = 3  # type: ignore[misc]


def test_certfile_without_keyfile(certs: CertificateSet) -> None:
    with pytest.raises(ValueError, match="keyfile"):
        QuicConfig(alpn=["h3"], certfile=certs.certfile)


@pytest.mark.anyio
async def test_garbage_key_fails_to_serve(certs: CertificateSet, tmp_path: Path) -> None:
    bad_key = tmp_path / "key.pem"
    bad_key.write_text("this is not a key\n")
    config = QuicConfig(alpn=["h3"], certfile=certs.certfile, keyfile=bad_key)
    with anyio.fail_after(10):
        with pytest.raises(ValueError, match="certificate and key"):
            await serve_quic(echo_handler, "127.0.0.1", 0, config)


@pytest.mark.anyio
async def test_key_of_another_certificate_fails_to_serve(certs: CertificateSet, other_certs: CertificateSet) -> None:
    # picoquic starts happily with such a pair; every client then sees "TLS alert 0x33".
    config = QuicConfig(alpn=["h3"], certfile=certs.certfile, keyfile=other_certs.keyfile)
    with anyio.fail_after(10):
        with pytest.raises(ValueError, match="does not match") as info:
            await serve_quic(echo_handler, "127.0.0.1", 0, config)
    assert str(certs.certfile) in str(info.value) and str(other_certs.keyfile) in str(info.value)


@pytest.mark.anyio
async def test_garbage_cafile_fails_to_connect(tmp_path: Path) -> None:
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("this is not a certificate\n")
    config = QuicConfig(alpn=["h3"], cafile=bad_ca)
    with anyio.fail_after(10):
        with pytest.raises(ValueError, match="cafile: no CA certificate could be read"):
            await open_quic_connection("127.0.0.1", 4433, config=config)


@pytest.mark.anyio
async def test_serving_needs_a_certificate() -> None:
    with pytest.raises(ValueError, match="certfile"):
        await serve_quic(echo_handler, "127.0.0.1", 0, QuicConfig(alpn=["h3"]))


@pytest.mark.anyio
async def test_port_in_use(server_config: QuicConfig) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with anyio.fail_after(10):
            with pytest.raises(OSError, match="UDP socket"):
                await serve_quic(echo_handler, "127.0.0.1", taken.getsockname()[1], server_config)


@pytest.mark.anyio
async def test_bad_ports_and_types(client_config: QuicConfig) -> None:
    with pytest.raises(ValueError, match="port"):
        await open_quic_connection("127.0.0.1", 0, config=client_config)
    with pytest.raises(TypeError, match="QuicConfig"):
        await open_quic_connection("127.0.0.1", 443, config={"alpn": ["h3"]})  # type: ignore[arg-type]


SERVER_SCRIPT = textwrap.dedent(
    """
    import sys, anyio
    from aiopquic import QuicConfig, serve_quic
    from tests.helpers import echo_handler

    async def main():
        config = QuicConfig(alpn=["test"], certfile=sys.argv[1], keyfile=sys.argv[2], idle_timeout=60)
        async with anyio.create_task_group() as tg:
            listener = await tg.start(serve_quic, echo_handler, "127.0.0.1", 0, config)
            print(listener.port, flush=True)
            await anyio.sleep_forever()

    anyio.run(main)
    """
)


@pytest.mark.anyio
async def test_peer_that_vanishes_is_detected(certs: CertificateSet, anyio_backend: object) -> None:
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(certs.certfile), str(certs.keyfile)],
        stdout=subprocess.PIPE,
        cwd=root,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        config = QuicConfig(alpn=["test"], cafile=certs.cafile, idle_timeout=1.0)
        with anyio.fail_after(20):
            async with open_quic_connection("127.0.0.1", port, config=config) as conn:
                stream = await conn.open_stream()
                await stream.send(b"are you there")
                await stream.send_eof()
                assert await read_all(stream) == b"are you there"
                server.kill()  # no CONNECTION_CLOSE: the peer just disappears
                server.wait()
                stream = await conn.open_stream()
                await stream.send(b"hello?")
                with pytest.raises(ConnectionClosed) as info:
                    await read_all(stream)
        assert "timed out" in str(info.value)
    finally:
        server.kill()
        server.wait()
