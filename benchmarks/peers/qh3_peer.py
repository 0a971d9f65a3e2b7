"""qh3 benchmark peer (asyncio): ``server`` or ``client WORKLOAD``.

    python benchmarks/peers/qh3_peer.py server --certs DIR
    python benchmarks/peers/qh3_peer.py client rr --certs DIR --port N

qh3 is aioquic's fork with a Rust core and aioquic's API: this runs
``aioquic_peer.py`` on it (the same protocol, command line and JSON output;
its docstring lists where qh3 differs).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.peers import quic_library

quic_library.use("qh3")

from benchmarks.peers.aioquic_peer import main  # noqa: E402

if __name__ == "__main__":
    main()
