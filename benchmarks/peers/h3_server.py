"""HTTP/3 benchmark server: benchmarks/h3_app.py's ASGI app served by hypercorn
(HTTP/3 through aioquic, asyncio) or by aiopquic's ``h3.serve_h3`` (asyncio or trio).

    python benchmarks/peers/h3_server.py --server hypercorn --certs DIR
    python benchmarks/peers/h3_server.py --server aiopquic --backend trio --certs DIR

Prints ``{"event": "listening", "port": N}`` once it serves, runs until SIGTERM or
SIGINT, then prints ``{"event": "stopped", "peak_rss_kib": ...}``. ``DIR`` holds
``cert.pem`` and ``key.pem``. Exit code 3 with a message on stderr when
``aiopquic.h3`` does not exist (yet).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import emit, peak_rss_kib  # noqa: E402
from benchmarks.h3_app import app  # noqa: E402

NO_H3 = 3


def run_hypercorn(args: argparse.Namespace) -> None:
    import asyncio

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.host, args.port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind((args.host, 0))  # hypercorn insists on a TCP listener too
    port = udp.getsockname()[1]

    config = Config()
    config.certfile = str(Path(args.certs) / "cert.pem")
    config.keyfile = str(Path(args.certs) / "key.pem")
    config.quic_bind = [f"fd://{udp.detach()}"]
    config.bind = [f"fd://{tcp.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.bench")
    config.graceful_timeout = 1.0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.call_soon(emit, {"event": "listening", "port": port})
        await serve(app, config, shutdown_trigger=stop.wait)

    asyncio.run(main())


def run_aiopquic(args: argparse.Namespace) -> None:
    if importlib.util.find_spec("aiopquic.h3") is None:
        print("aiopquic.h3 is missing: this aiopquic has no HTTP/3 server yet", file=sys.stderr)
        sys.exit(NO_H3)
    import anyio

    import aiopquic
    from aiopquic import h3

    config = aiopquic.QuicConfig(
        alpn=["h3"],
        certfile=str(Path(args.certs) / "cert.pem"),
        keyfile=str(Path(args.certs) / "key.pem"),
        max_streams_bidi=args.max_streams,
    )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            listener = await tg.start(h3.serve_h3, app, args.host, args.port, config)
            emit({"event": "listening", "port": listener.port})
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

    anyio.run(main, backend=args.backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("hypercorn", "aiopquic"), required=True)
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="aiopquic only")
    parser.add_argument("--certs", required=True, help="directory with cert.pem and key.pem")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-streams", type=int, default=128,
                        help="aiopquic: concurrent bidi streams a client may open (aioquic's default: 128)")
    args = parser.parse_args()
    if args.server == "hypercorn":
        run_hypercorn(args)
    else:
        run_aiopquic(args)
    emit({"event": "stopped", "peak_rss_kib": peak_rss_kib()})


if __name__ == "__main__":
    main()
