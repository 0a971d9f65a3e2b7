"""Shared fixtures: the anyio backends, throwaway certificates, configs."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from aioquic.quic.configuration import QuicConfiguration

from aiopquic import QuicConfig
from aiopquic.cli.certs import CertificateSet, make_certificates

from .aioquic_h3 import AioquicH3Server
from .aioquic_peer import AioquicPeer
from .hypercorn_peer import HypercornH3Server


#: asyncio, trio, and asyncio on uvloop's event loop (libuv), which many asyncio
#: applications run: aiopquic's asyncio side (readers on its fds, futures, its
#: cancellation check) must work on it too.  uvloop has no Windows build.
BACKENDS: list[object] = ["asyncio", "trio"]
if sys.platform != "win32":
    BACKENDS.append(pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"))


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Every async test runs on asyncio, on trio and on asyncio with uvloop."""
    return request.param


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    """A CA and a server certificate for localhost, 127.0.0.1 and ::1."""
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    """A second, unrelated CA (to test untrusted chains) for the name example.org."""
    return make_certificates(tmp_path_factory.mktemp("other-certs"), ("example.org",))


@pytest.fixture
def server_config(certs: CertificateSet) -> QuicConfig:
    return QuicConfig(alpn=["test"], certfile=certs.certfile, keyfile=certs.keyfile)


@pytest.fixture
def client_config(certs: CertificateSet) -> QuicConfig:
    return QuicConfig(alpn=["test"], cafile=certs.cafile)


@pytest.fixture
def h3_server_config(certs: CertificateSet) -> QuicConfig:
    """A server config for HTTP/3 (ALPN h3) with the test certificate."""
    return QuicConfig(alpn=["h3"], certfile=certs.certfile, keyfile=certs.keyfile)


@pytest.fixture
def h3_client_config(certs: CertificateSet) -> QuicConfig:
    """A client config for HTTP/3 (ALPN h3) that trusts the test CA."""
    return QuicConfig(alpn=["h3"], cafile=certs.cafile)


@pytest.fixture
def peer() -> Iterator[AioquicPeer]:
    """aioquic, the independent peer, running in its own thread."""
    peer = AioquicPeer().start()
    yield peer
    peer.stop()


@pytest.fixture
def aioquic_server_config(certs: CertificateSet) -> QuicConfiguration:
    """An aioquic server configuration with the test certificate, ALPN "test"."""
    config = QuicConfiguration(is_client=False, alpn_protocols=["test"])
    config.load_cert_chain(certs.certfile, certs.keyfile)
    return config


@pytest.fixture
def aioquic_client_config(certs: CertificateSet) -> QuicConfiguration:
    """An aioquic client configuration that verifies our test CA."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["test"], server_name="localhost")
    config.load_verify_locations(cafile=str(certs.cafile))
    return config


@pytest.fixture
def aioquic_h3_server(certs: CertificateSet) -> Iterator[AioquicH3Server]:
    """aioquic's HTTP/3 server (tests/aioquic_h3.py's routes) in its own thread, on 127.0.0.1."""
    with AioquicH3Server(certs) as server:
        yield server


@pytest.fixture(scope="session")
def hypercorn_h3_server(certs: CertificateSet) -> Iterator[HypercornH3Server]:
    """hypercorn serving tests/h3_app.py's ASGI app over HTTP/3, in its own thread, on
    127.0.0.1 (one for the session: it keeps no state a test could see)."""
    from .h3_app import app

    with HypercornH3Server(app, certs) as server:
        yield server
