"""Facts about this host that do not come from podman: CRIU's version, the kernel, root."""

from __future__ import annotations

import os
import re
import shutil

from warmctl.podman import podman_environment, run_subprocess

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


def kernel_release() -> str:
    return os.uname().release


def hostname() -> str:
    return os.uname().nodename


def is_root() -> bool:
    return os.geteuid() == 0


def version_tuple(version: str) -> tuple[int, ...]:
    """'4.2.1' -> (4, 2, 1); '6.18.44-fc-v509' -> (6, 18, 44). Non-numeric parts end it."""
    parts: list[int] = []
    for piece in re.split(r"[.\-+~]", version):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)
