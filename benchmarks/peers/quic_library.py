"""Which library ``aioquic_peer.py`` drives: aioquic, or qh3 (its fork with a
Rust core and the same API), chosen by ``qh3_peer.py`` before it imports the peer."""

NAME = "aioquic"


def use(name: str) -> None:
    """Drive ``name`` ("aioquic" or "qh3"); call before importing aioquic_peer."""
    global NAME
    if name not in ("aioquic", "qh3"):
        raise ValueError(f"no benchmark peer for {name!r}")
    NAME = name
