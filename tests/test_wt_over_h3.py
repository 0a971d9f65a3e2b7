"""The WebTransport core driven over the sans-I/O HTTP/3 core, as a driver will: no network.

Shows what the H3 layer already provides (extended CONNECT, DATA carrying
capsules, SETTINGS passed through, datagram quarter stream ids) and how
WebTransport streams are told apart from HTTP/3 ones before H3Protocol sees
them.
"""

from __future__ import annotations

from aiopquic.h3._events import DataReceived, HeadersReceived, SettingsReceived
from aiopquic.h3._protocol import H3Protocol, H3Settings
from aiopquic.webtransport._capsules import CapsuleReader, CloseSession, MaxData
from aiopquic.webtransport._dialects import (
    Dialect,
    client_dialect,
    client_settings,
    flow_control_enabled,
    is_webtransport_request,
    parse_connect,
    request_headers,
    response_headers,
    server_settings,
    validate_peer_settings,
)
from aiopquic.webtransport._streams import OtherStream, StreamHeaderReader, SessionStreamHeader, bidi_stream_header

SESSION = 0  # the CONNECT goes on the client's first bidirectional stream
CLIENT_UNI, SERVER_UNI = (2, 6, 10), (3, 7, 11)  # control, QPACK encoder, QPACK decoder


def webtransport_pair() -> tuple[H3Protocol, H3Protocol, list[object], list[object]]:
    """Client and server H3 cores with WebTransport SETTINGS, their critical streams exchanged."""
    client = H3Protocol(is_client=True, settings=H3Settings(h3_datagram=True, extra=client_settings()))
    server = H3Protocol(
        is_client=False, settings=H3Settings(enable_connect_protocol=True, h3_datagram=True, extra=server_settings())
    )
    client_events: list[object] = []
    server_events: list[object] = []
    for h3, peer, events, stream_ids in ((client, server, server_events, CLIENT_UNI), (server, client, client_events, SERVER_UNI)):
        starts = (h3.control_stream_data(), h3.encoder_stream_data(), h3.decoder_stream_data())
        for stream_id, data in zip(stream_ids, starts):
            events += peer.receive_uni_data(stream_id, data, False)
    return client, server, client_events, server_events


def test_a_session_over_the_h3_core_end_to_end() -> None:
    client, server, client_events, server_events = webtransport_pair()
    # both sides see each other's SETTINGS and agree on the newest dialect
    (server_seen,) = [e for e in client_events if isinstance(e, SettingsReceived)]
    assert validate_peer_settings(server_seen.settings, is_client=True) is None
    dialect = client_dialect(server_seen.settings)
    assert dialect is Dialect.DRAFT15

    # the client's CONNECT, and the server's answer
    connect = request_headers(dialect, authority="localhost:4433", path="/echo", origin="https://localhost")
    wire = client.encode_headers(SESSION, connect)
    server.receive_uni_data(CLIENT_UNI[1], client.take_encoder_data(), False)
    (headers,) = server.receive_request_data(SESSION, wire, False)
    assert isinstance(headers, HeadersReceived) and is_webtransport_request(headers.headers)
    assert server.peer_settings is not None
    request = parse_connect(headers.headers, server.peer_settings)
    assert (request.dialect, request.path, request.origin) == (Dialect.DRAFT15, "/echo", "https://localhost")
    assert flow_control_enabled(request.dialect, server.settings.extra, server.peer_settings)

    response = server.encode_headers(SESSION, response_headers(request.dialect))
    client.receive_uni_data(SERVER_UNI[1], server.take_encoder_data(), False)
    assert client.receive_request_data(SESSION, response, False) == [HeadersReceived(SESSION, [(b":status", b"200")], False)]

    # capsules travel as DATA on the CONNECT stream, both ways
    capsules = MaxData(1 << 21).encode() + CloseSession(9, "bye").encode()
    data = client.receive_request_data(SESSION, server.data_frame_header(len(capsules)) + capsules, False)
    reader = CapsuleReader()
    for event in data:
        assert isinstance(event, DataReceived)
        reader.append(event.data)
    assert list(reader.capsules()) == [MaxData(1 << 21), CloseSession(9, "bye")]

    # a client bidi stream: the driver reads its header before H3Protocol could see it
    stream = StreamHeaderReader(unidirectional=False)
    assert stream.feed(bidi_stream_header(SESSION) + b"ping") == SessionStreamHeader(SESSION, b"ping")
    # an ordinary request stream goes to H3Protocol untouched
    other = StreamHeaderReader(unidirectional=False)
    get = client.encode_headers(4, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"h"), (b":path", b"/")])
    routed = other.feed(get, fin=True)
    assert isinstance(routed, OtherStream) and routed.data == get
    server.receive_uni_data(CLIENT_UNI[1], client.take_encoder_data(), False)
    (request_headers_event,) = server.receive_request_data(4, routed.data, True)
    assert isinstance(request_headers_event, HeadersReceived) and request_headers_event.stream_ended

    # datagrams carry the quarter stream id of the CONNECT stream
    assert H3Protocol.decode_datagram(H3Protocol.encode_datagram(SESSION, b"tick")) == (SESSION, b"tick")
    (client_seen,) = server_events
    assert isinstance(client_seen, SettingsReceived)
    assert validate_peer_settings(client_seen.settings, is_client=False) is None
    assert client_seen.settings[0x2C7CF000] == 1  # the draft client names its draft, as draft-16 asks
