"""Which AES-GCM implementation the build gives picoquic.

picotls' fusion engine (AES-NI, PCLMUL and AVX2 in one pass) is built on x86_64
and registered by picoquic only on a CPU that has those instructions; elsewhere
OpenSSL does AES-GCM.  A build that silently lost fusion would still pass every
interop test, only slower: this pins it.  Interop with other stacks through
each engine is what the rest of the suite shows (aioquic with AES-128-GCM and
AES-256-GCM in test_knobs_aioquic.py, ngtcp2, curl, Chromium).
"""

from __future__ import annotations

import platform
from pathlib import Path

from aiopquic._core import _core

FUSION_CPU_FLAGS = {"aes", "pclmulqdq", "avx2"}


def _cpu_flags() -> set[str]:
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    return flags


def test_aes_gcm_engine_is_fusion_where_the_cpu_has_it() -> None:
    engine = _core.aes_gcm_engine()
    if platform.machine() in ("x86_64", "AMD64") and FUSION_CPU_FLAGS <= _cpu_flags():
        assert engine == "fusion"
    else:
        assert engine == "openssl"
