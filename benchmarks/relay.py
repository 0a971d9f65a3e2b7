"""A delaying UDP relay in its own process, for run.py --rtt-ms: the seeded relay
of tests/lossy_relay.py with a one-way delay and no impairment, between one
client at a time and one server.

    python benchmarks/relay.py --upstream-port 4433 --rtt-ms 20

prints ``{"event": "listening", "port": N}`` and forwards until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lossy_relay import Impairment, LossyRelay  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream-port", type=int, required=True, help="the server's port")
    parser.add_argument("--upstream-host", default="127.0.0.1", help="the server's address")
    parser.add_argument("--rtt-ms", type=float, required=True, help="round-trip time added (half each way)")
    args = parser.parse_args()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    impairment = Impairment(delay=args.rtt_ms / 2000)
    with LossyRelay((args.upstream_host, args.upstream_port), impairment) as relay:
        print(json.dumps({"event": "listening", "port": relay.port}), flush=True)
        while not stop.wait(1.0):
            if relay.error is not None:
                print(f"relay failed: {relay.error!r}", file=sys.stderr)
                return 1
        print(json.dumps({"event": "stopped", "to_server": str(relay.to_server_stats),
                          "to_client": str(relay.to_client_stats)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
