"""Events the sans-I/O HTTP/3 core returns, each naming the stream it concerns."""

from __future__ import annotations

from dataclasses import dataclass

from ._headers import Headers


@dataclass(frozen=True, slots=True)
class HeadersReceived:
    """A request's or final response's header section (validated)."""

    stream_id: int
    headers: Headers
    stream_ended: bool


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Body bytes; ``stream_ended`` is set with the last (possibly empty) piece."""

    stream_id: int
    data: bytes
    stream_ended: bool


@dataclass(frozen=True, slots=True)
class TrailersReceived:
    """The trailer section; the message ends with it."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class StreamError:
    """The message on this stream is malformed: reset it with ``error_code``.

    ``http_status`` is set when a server should answer with that status instead
    (431 for a header section over our limit).
    """

    stream_id: int
    error_code: int
    reason: str
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class SettingsReceived:
    """The peer's SETTINGS (every identifier, known or not)."""

    settings: dict[int, int]


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer is shutting down: requests on streams >= ``stream_id`` were not processed."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class UnknownStream:
    """A peer's unidirectional stream of a type HTTP/3 does not speak: stop
    reading it, or hand it to an extension (WebTransport's type 0x54) with
    ``data``, the bytes that followed the type in the same read."""

    stream_id: int
    stream_type: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A frame of a type HTTP/3 does not know, on a request stream whose owner
    asked for that type (:meth:`H3Protocol.keep_frames`); other unknown frames
    are skipped."""

    stream_id: int
    frame_type: int
    payload: bytes


H3Event = (
    HeadersReceived
    | DataReceived
    | TrailersReceived
    | StreamError
    | SettingsReceived
    | GoAwayReceived
    | UnknownStream
    | FrameReceived
)
