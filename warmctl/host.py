"""Facts about this host that do not come from podman: CRIU's version, the kernel, root."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from warmctl.podman import CommandResult, podman_environment, run_subprocess

_VERSION_RE = re.compile(r"Version:\s*([0-9][0-9.]*)")


def criu_path() -> str | None:
    """The criu that runc will find: the first on podman's PATH."""
    return shutil.which("criu", path=podman_environment()["PATH"])


def criu_version() -> str:
    """CRIU's version as ``criu --version`` prints it, or "" when there is no usable criu."""
    path = criu_path()
    if path is None:
        return ""
    result = run_subprocess([path, "--version"], timeout=10, env=podman_environment())
    match = _VERSION_RE.search(result.stdout)
    return match.group(1) if match and result.returncode == 0 else ""


def criu_check(timeout: float) -> CommandResult | None:
    """``criu check`` (CRIU's own test of the kernel's features), or None without a criu.

    Raises PodmanError when it does not finish within ``timeout`` seconds.
    """
    path = criu_path()
    if path is None:
        return None
    return run_subprocess([path, "check"], timeout=timeout, env=podman_environment())


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


# crun does not run the criu program itself: it loads libcriu at run time (`could not load
# libcriu.so.2` without it), and libcriu then runs the criu program on PATH, so with Debian
# 13's libcriu2 4.1.1 the CRIU that dumps is still the newest on PATH (measured in the Debian 13
# test host, docs/testhosts.md). Debian packages it as a Recommends of crun, which
# --no-install-recommends and debootstrap leave out.
LIBCRIU = "libcriu.so.2"
LIBCRIU_FIX = ("install libcriu (apt-get install libcriu2): crun loads it to checkpoint and "
               "restore, and it runs the criu on PATH")
_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                 "/usr/lib64", "/usr/lib", "/lib64", "/lib", "/usr/local/lib")


def libcriu_installed(ld_cache: Path = Path("/etc/ld.so.cache")) -> bool:
    """Whether the dynamic loader finds libcriu.so.2: in its cache (ldconfig's, which names
    each library it indexed) or in a usual library directory."""
    try:
        if LIBCRIU.encode() in ld_cache.read_bytes():
            return True
    except OSError:
        pass
    return any(Path(d, LIBCRIU).exists() for d in _LIBRARY_DIRS)


def runtime_problem(runtime: str, runtime_details: str,
                    libcriu: Callable[[], bool] | None = None) -> CriuKernelAdvice | None:
    """Why podman's OCI runtime cannot checkpoint here, when that is known without trying:
    crun built without CRIU, or crun without libcriu. None for runc and unknown builds."""
    if runtime != "crun":
        return None
    features = runtime_details.split()
    if "-CRIU" in features:
        return CriuKernelAdvice("crun was built without CRIU: it cannot checkpoint",
                                "use runc: " + _USE_RUNC_SHORT)
    if "+CRIU" in features and not (libcriu or libcriu_installed)():
        return CriuKernelAdvice(f"crun needs {LIBCRIU} to checkpoint and it is not installed",
                                LIBCRIU_FIX)
    return None


_USE_RUNC_SHORT = ('apt-get install runc and set [engine] runtime = "runc" in '
                   "/etc/containers/containers.conf.d/")


def kernel_release() -> str:
    return os.uname().release


def hostname() -> str:
    return os.uname().nodename


def version_tuple(version: str) -> tuple[int, ...]:
    """'4.2.1' -> (4, 2, 1); '6.18.44-fc-v509' -> (6, 18, 44). Non-numeric parts end it."""
    parts: list[int] = []
    for piece in re.split(r"[.\-+~]", version):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)
