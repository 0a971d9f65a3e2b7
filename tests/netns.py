"""Two network namespaces joined by a veth pair, for tests that need the kernel
between client and server (tests/test_kernel_blackout.py).  Needs root and
iproute2 (``ip``, ``tc``); tools/run.sh installs iproute2 where it is missing.

    with VethPair() as net:
        thread = NetnsThread(net.server_ns, some_async_function, "trio").start()

Namespace and interface names carry the process id and a random tag, so that
concurrent runs do not collide; both namespaces (and with them the veth pair)
are deleted on exit, whatever happened.  The addresses (192.0.2.0/24,
documentation only) exist inside the two namespaces and nowhere else.

A thread's network namespace is its own (``setns`` applies to the calling
thread only) and is inherited by the threads it creates, so a
:class:`NetnsThread` runs an event loop, and everything it starts (anyio's
worker threads, aiopquic's network thread and its socket), inside a namespace
while the rest of the process stays where it was.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
SERVER_ADDRESS = "192.0.2.1"
CLIENT_ADDRESS = "192.0.2.2"


def unavailable() -> str:
    """Why namespaces cannot be made here ("" when they can): only for a
    developer's unprivileged run; CI and tools/run.sh run as root."""
    return "" if os.geteuid() == 0 else "making network namespaces needs root (CI runs the suite as root)"


def missing_tools() -> list[str]:
    """iproute2's commands that are not installed (tools/run.sh installs them)."""
    return [tool for tool in ("ip", "tc") if shutil.which(tool) is None]


def run(*command: str) -> None:
    """Run an ``ip`` / ``tc`` command; raise with its output if it fails."""
    proc = subprocess.run(command, capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {proc.stderr.strip() or proc.returncode}")


class VethPair:
    """Namespaces ``server_ns`` and ``client_ns``; interface ``server_if`` (with
    :data:`SERVER_ADDRESS`) in the first, ``client_if`` (:data:`CLIENT_ADDRESS`)
    in the second, joined by a veth pair, both up, no qdisc."""

    def __init__(self) -> None:
        tag = f"aq{os.getpid() % 100000}{secrets.token_hex(2)}"  # interface names: 15 chars at most
        self.server_ns, self.client_ns = f"{tag}-srv", f"{tag}-cli"
        self.server_if, self.client_if = f"{tag}s", f"{tag}c"

    def __enter__(self) -> VethPair:
        try:
            run("ip", "netns", "add", self.server_ns)
            run("ip", "netns", "add", self.client_ns)
            run("ip", "link", "add", self.server_if, "netns", self.server_ns,
                "type", "veth", "peer", "name", self.client_if, "netns", self.client_ns)
            for ns, interface, address in ((self.server_ns, self.server_if, SERVER_ADDRESS),
                                           (self.client_ns, self.client_if, CLIENT_ADDRESS)):
                run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", interface)
                run("ip", "-n", ns, "link", "set", interface, "up")
                run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete both namespaces (the veth pair goes with them)."""
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def set_link(self, side: str, up: bool) -> None:
        """Take the ``"server"`` or ``"client"`` interface down (that side's sends
        fail with ENETUNREACH, nothing arrives on either) or bring it back."""
        ns, interface = (self.server_ns, self.server_if) if side == "server" else (self.client_ns, self.client_if)
        run("ip", "-n", ns, "link", "set", interface, "up" if up else "down")

    def set_drop_all(self, drop: bool) -> None:
        """Put on both interfaces a qdisc that drops every packet it is given (a
        FIFO of length 0; sendmsg still succeeds), or remove it."""
        for ns, interface in ((self.server_ns, self.server_if), (self.client_ns, self.client_if)):
            if drop:
                run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", interface, "root", "pfifo", "limit", "0")
            else:
                run("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", interface, "root")


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({name}): {os.strerror(errno)}")
    finally:
        os.close(fd)


class NetnsThread(Generic[T]):
    """``function()`` on its own event loop (``backend``), in a thread of its own
    inside network namespace ``ns``.  :meth:`result` joins it (bounded) and
    returns what the function returned, or raises what it raised."""

    def __init__(self, ns: str, function: Callable[[], Awaitable[T]], backend: str) -> None:
        self._ns = ns
        self._function = function
        self._backend = backend
        self._result: T | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"netns {ns}", daemon=True)

    def start(self) -> NetnsThread[T]:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            enter_netns(self._ns)
            self._result = anyio.run(self._function, backend=self._backend)
        except BaseException as exc:  # reported by result()
            self._failure = exc

    def result(self, timeout: float) -> T:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self._thread.name} still running after {timeout} s")
        if self._failure is not None:
            raise self._failure
        return self._result  # type: ignore[return-value]
