"""Which CRIU releases can checkpoint on which kernels: pure knowledge, no I/O.

doctor, the snapshot/resume preflight (through host.py) and the failure hints (diagnose.py)
all read it; it imports nothing of warmctl's, so diagnose can use it without an import cycle.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class CriuKernelPair(NamedTuple):
    """A CRIU release line that cannot checkpoint on kernels from ``kernel_min`` on."""

    kernel_min: str
    criu_min: str  # the first CRIU release that works there
    breaks: str  # what breaks, in a word or two


# Measured on the project's hosts (../shared/HOST-NOTES.md) and named in CRIU's release notes.
# The one place these pairs live: doctor, the snapshot/resume preflight and the failure hints
# all read it.
CRIU_KERNEL_PAIRS: tuple[CriuKernelPair, ...] = (
    CriuKernelPair("6.13", "4.1", "vDSO"),
    CriuKernelPair("6.16", "4.2", "socket options"),
)


def install_criu_fix(criu_min: str) -> str:
    return f"install CRIU >= {criu_min} (scripts/provision-host does)"


def missing_criu_fix(kernel: str) -> str:
    """How to get a CRIU that works on this kernel."""
    needed = [p.criu_min for p in CRIU_KERNEL_PAIRS
              if version_tuple(kernel) >= version_tuple(p.kernel_min)]
    if needed:
        return install_criu_fix(max(needed, key=version_tuple))
    return "install CRIU (apt-get install criu, or scripts/provision-host)"


class CriuKernelAdvice(NamedTuple):
    problem: str  # e.g. "CRIU 3.17 cannot checkpoint on kernel 6.18.44 (vDSO, socket options)"
    fix: str


def criu_kernel_advice(criu: str, kernel: str) -> CriuKernelAdvice | None:
    """What is wrong with this CRIU on this kernel, by CRIU_KERNEL_PAIRS, or None.

    Unknown versions ("") give None: the caller reports a missing or unusable CRIU itself.
    """
    criu_v, kernel_v = version_tuple(criu), version_tuple(kernel)
    if not criu_v or not kernel_v:
        return None
    failing = [
        pair for pair in CRIU_KERNEL_PAIRS
        if kernel_v >= version_tuple(pair.kernel_min) and criu_v < version_tuple(pair.criu_min)
    ]
    if not failing:
        return None
    # One upgrade fixes them all: the newest release any of them needs.
    needed = max((pair.criu_min for pair in failing), key=version_tuple)
    breaks = ", ".join(pair.breaks for pair in failing)
    return CriuKernelAdvice(
        f"CRIU {criu} cannot checkpoint on kernel {kernel} ({breaks})",
        install_criu_fix(needed),
    )


def version_tuple(version: str) -> tuple[int, ...]:
    """'4.2.1' -> (4, 2, 1); '6.18.44-fc-v509' -> (6, 18, 44). Non-numeric parts end it."""
    parts: list[int] = []
    for piece in re.split(r"[.\-+~]", version):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


# crun does not run the criu program itself: it loads libcriu at run time (`could not load
# libcriu.so.2` without it), and libcriu then runs the criu program on PATH, so with Debian
# 13's libcriu2 4.1.1 the CRIU that dumps is still the newest on PATH (measured in the Debian 13
# test host, docs/testhosts.md). Debian packages it as a Recommends of crun, which
# --no-install-recommends and debootstrap leave out.
LIBCRIU = "libcriu.so.2"
LIBCRIU_FIX = ("install libcriu (apt-get install libcriu2): crun loads it to checkpoint and "
               "restore, and it runs the criu on PATH")
