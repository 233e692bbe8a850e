"""Facts about this host that do not come from podman: CRIU's version, the kernel, root."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from warmctl.errors import HostError
from warmctl.host.criu_kernel import (
    CRIU_KERNEL_PAIRS,
    LIBCRIU,
    LIBCRIU_FIX,
    CriuKernelAdvice,
    CriuKernelPair,
    criu_kernel_advice,
    install_criu_fix,
    missing_criu_fix,
    version_tuple,
)
from warmctl.podman import CommandResult, podman_environment, run_subprocess

# The CRIU/kernel knowledge lives in criu_kernel.py (diagnose reads it without importing this
# module, which runs programs through podman.py); these names stay importable from here.
__all__ = [
    "CAP_SYS_RESOURCE", "CRIU_KERNEL_PAIRS", "LIBCRIU", "LIBCRIU_FIX", "NOT_ROOT_FIX",
    "CriuKernelAdvice",
    "CriuKernelPair", "criu_check", "criu_kernel_advice", "criu_path", "criu_version",
    "effective_capabilities", "has_cap_sys_resource", "hostname", "install_criu_fix",
    "kernel_release", "libcriu_installed", "missing_criu_fix", "require_root",
    "runtime_problem", "version_tuple",
]

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


def kernel_release() -> str:
    return os.uname().release


def hostname() -> str:
    return os.uname().nodename


# CAP_SYS_RESOURCE's bit in /proc/PID/status's CapEff (linux/capability.h).
CAP_SYS_RESOURCE = 24


def effective_capabilities(status: str | None = None) -> int | None:
    """This process's effective capability mask (CapEff in /proc/self/status), None when
    unknown."""
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return None
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            try:
                return int(value.strip(), 16)
            except ValueError:
                return None
    return None


def has_cap_sys_resource(status: str | None = None) -> bool | None:
    """Whether this process has CAP_SYS_RESOURCE, which CRIU needs to read the rlimits of a
    process of another user (prlimit): without it only containers whose processes all run as
    root can be checkpointed. None when unknown."""
    mask = effective_capabilities(status)
    return None if mask is None else bool(mask >> CAP_SYS_RESOURCE & 1)


NOT_ROOT_FIX = "run warmctl as root (e.g. sudo warmctl ...)"


def require_root(euid: int | None = None) -> None:
    """Exit 6 before podman is asked anything: podman's checkpoint and restore need root, and
    a rootless podman has a store of its own, where the container would be 'not found'."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise HostError(f"running as uid {euid}: podman checkpoints and restores containers "
                        "only as root", hint=NOT_ROOT_FIX)


_LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
                 "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib64", "/lib",
                 "/usr/local/lib")


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

