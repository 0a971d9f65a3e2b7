"""pywebtransport 0.8 (draft-13 with session flow control, on aioquic) against
our WebTransport server and client, on asyncio and trio: bidi echo, uni
streams, datagrams, close codes both ways (tests/pywebtransport_peer.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from aiopquic import QuicConfig
from aiopquic import webtransport as wt
from aiopquic.cli.certs import CertificateSet

from .helpers import read_all, run_blocking
from .pywebtransport_peer import INITIAL_MAX_DATA, PywebtransportServer, pywebtransport_session
from .test_wt_session import echo_app, wt_server

pytestmark = pytest.mark.anyio


@pytest.fixture
def pywebtransport_server(certs: CertificateSet) -> Iterator[PywebtransportServer]:
    """pywebtransport's server in its own thread, on 127.0.0.1."""
    with PywebtransportServer(certs.certfile, certs.keyfile) as server:
        yield server


async def test_pywebtransport_client_against_our_server(h3_server_config: QuicConfig, certs: CertificateSet) -> None:
    seen: dict[str, Any] = {}
    payload = bytes(range(256)) * 2048  # 512 KiB: more than pywebtransport's initial grant to us
    with anyio.fail_after(30):
        async with wt_server(echo_app(seen), h3_server_config) as port:
            report = await run_blocking(pywebtransport_session, port, "/echo", cafile=certs.cafile, payload=payload,
                                        close_code=42, close_reason="bye from pywebtransport")
            with anyio.fail_after(5):
                while "closed" not in seen:
                    await anyio.sleep(0.01)
    assert report.bidi_echo == payload
    assert report.uni_echo == b"one way"
    assert report.datagram_echo == b"tick"
    assert seen["origin"] == "https://pywebtransport.test"
    session = seen["session"]
    assert session.dialect is wt.Dialect.DRAFT13 and session.flow_control
    # the echo went out within pywebtransport's grants, which it raised as it read
    assert session._core.flow.send_max_data > INITIAL_MAX_DATA
    assert session._core.flow.sent == len(payload) + len(b"one way")
    closed = seen["closed"]
    assert (closed.error_code, closed.reason, closed.by_peer) == (42, "bye from pywebtransport", True)


async def test_our_client_against_pywebtransport_server(
    pywebtransport_server: PywebtransportServer, h3_client_config: QuicConfig
) -> None:
    payload = bytes(range(256)) * 2048
    url = f"https://127.0.0.1:{pywebtransport_server.port}/echo"
    with anyio.fail_after(30):
        async with wt.open_webtransport_session(url, config=h3_client_config, headers=[("origin", "https://aiopquic.test")]) as session:
            assert session.dialect is wt.Dialect.DRAFT13 and session.flow_control
            stream = await session.open_stream()
            await stream.send(payload, eof=True)  # beyond its initial grant: waits for WT_MAX_DATA
            assert await read_all(stream) == payload
            uni = await session.open_uni_stream()
            await uni.send(b"one way", eof=True)
            back = await session.accept_stream()
            assert isinstance(back, wt.WebTransportReceiveStream)
            assert await read_all(back) == b"one way"
            await session.send_datagram(b"tick")
            assert await session.receive_datagram() == b"tick"
            assert session._core.flow.send_max_data > INITIAL_MAX_DATA
            session.close(42, "bye from aiopquic")
        assert await anyio.to_thread.run_sync(pywebtransport_server.seen.closed.wait, 10)
    assert pywebtransport_server.seen.origins == ["https://aiopquic.test"]
    assert pywebtransport_server.seen.closes == [(42, "bye from aiopquic")]


async def test_pywebtransport_server_closes_with_a_code(
    pywebtransport_server: PywebtransportServer, h3_client_config: QuicConfig
) -> None:
    url = f"https://127.0.0.1:{pywebtransport_server.port}/close"
    with anyio.fail_after(30):
        session = await wt.open_webtransport_session(url, config=h3_client_config)  # the awaitable form
        async with session:
            stream = await session.open_stream()
            await stream.send(b"last words", eof=True)
            await session.wait_closed()
            with pytest.raises(wt.SessionClosed) as info:
                await session.open_stream()
    assert (info.value.error_code, info.value.reason, info.value.by_peer) == (77, "closed by pywebtransport", True)
    assert pywebtransport_server.seen.last_words == b"last words"
