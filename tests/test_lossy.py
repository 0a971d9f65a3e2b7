"""Transfers through an impaired network (issue 12): loss, bursts, reordering,
duplication, a bottleneck with a queue, a blackout.  Each case moves verified
bytes through tests/lossy_relay.py with a fixed seed and must finish: a stall
shows as a timeout, a corruption as a wrong digest.  The long version (16 MiB,
every congestion control, both directions, 3 s blackout) is benchmarks/lossy.py.

Before picoquic patch 0020, a newreno or cubic upload stalled here until the
idle timeout (the last packets of a flight lost, no PTO ever sent).
"""

from __future__ import annotations

import pytest

from aiopquic import QuicConfig

from .lossy_relay import Impairment
from .lossy_transfer import configs, transfer

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024

#: name -> (impairment, blackout seconds, size).  RTT 10 ms unless said, so that
#: loss-bound newreno still moves a MiB in a couple of seconds.
CONDITIONS: dict[str, tuple[Impairment, float, int]] = {
    "loss5": (Impairment(delay=0.005, loss=0.05), 0.0, 1 * MIB),
    "loss10": (Impairment(delay=0.002, loss=0.10), 0.0, MIB // 2),
    "bursty": (Impairment(delay=0.005, burst_enter=0.01, burst_leave=0.3), 0.0, 2 * MIB),
    "reorder_dup": (Impairment(delay=0.005, reorder=0.25, jitter=0.010, duplicate=0.05), 0.0, 2 * MIB),
    "bottleneck": (Impairment(delay=0.010, rate=4e6, queue=256 * 1024), 0.0, 2 * MIB),
    "blackout": (Impairment(delay=0.005), 2.0, 2 * MIB),
}

CASES = [
    pytest.param(condition, cc, direction, id=f"{condition}-{cc}-{direction}")
    for condition in CONDITIONS
    for cc in ("newreno", "cubic", "bbr")
    for direction in ("up", "down")
    # Every condition with the default newreno both ways; cubic and bbr one way each.
    if cc == "newreno" or (direction == "up") == (cc == "cubic")
]


@pytest.mark.parametrize(("condition", "cc", "direction"), CASES)
async def test_transfer_completes(
    server_config: QuicConfig, client_config: QuicConfig, condition: str, cc: str, direction: str
) -> None:
    impairment, blackout, size = CONDITIONS[condition]
    server, client = configs(server_config, client_config, cc, idle_timeout=30.0)
    await transfer(
        server, client, direction=direction, size=size, impairment=impairment,
        seed=12, timeout=25.0, blackout=blackout,
    )
