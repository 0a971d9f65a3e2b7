"""The compiled core: picoquic in its own network thread (see ``_core.pyx``)."""

from ._core import (
    ERROR_START_FAILED,
    EV_CLOSE_SENT,
    EV_CLOSED,
    EV_DGRAM,
    EV_EARLY,
    EV_NEW,
    EV_READY,
    EV_RESET,
    EV_RX,
    EV_STOP,
    EV_TX,
    ConnHandle,
    Endpoint,
    SessionCache,
    StreamHandle,
    TrustStore,
)

__all__ = [
    "ERROR_START_FAILED",
    "EV_CLOSE_SENT",
    "EV_CLOSED",
    "EV_DGRAM",
    "EV_EARLY",
    "EV_NEW",
    "EV_READY",
    "EV_RESET",
    "EV_RX",
    "EV_STOP",
    "EV_TX",
    "ConnHandle",
    "Endpoint",
    "SessionCache",
    "StreamHandle",
    "TrustStore",
]
