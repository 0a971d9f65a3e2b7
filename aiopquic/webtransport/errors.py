"""Exceptions raised by WebTransport sessions."""

from __future__ import annotations

from ..quic.errors import ConnectionClosed, QuicError

__all__ = ["SessionClosed", "SessionRejected"]


class SessionClosed(ConnectionClosed):
    """The session is closed: by CLOSE_WEBTRANSPORT_SESSION (``error_code`` and
    ``reason`` are the application's), by its CONNECT stream ending, or by its
    connection closing. ``by_peer`` says who closed it.

    A :class:`~aiopquic.ConnectionClosed`, so also an ``anyio.BrokenResourceError``.
    """

    def copy(self) -> SessionClosed:
        """A new exception saying the same (each raise gets its own traceback)."""
        return SessionClosed(str(self), error_code=self.error_code, reason=self.reason, by_peer=self.by_peer)


class SessionRejected(QuicError):
    """The server answered the CONNECT with ``status`` instead of accepting the session."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
