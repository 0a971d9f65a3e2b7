"""Command-line tools: ``python -m aiopquic demo`` (more to come)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aiopquic``."""
    parser = argparse.ArgumentParser(prog="python -m aiopquic", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="server + client on loopback, printing what happens")
    demo.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    demo.add_argument("--verbose", "-v", action="store_true", help="log aiopquic's debug messages")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command == "demo":
        from .demo import run

        return run(args.backend)
    return 2
