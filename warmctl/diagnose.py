"""Known failures of podman and CRIU, recognised by their text and mapped to a one-line fix.

``diagnose`` reads what podman printed and, for checkpoint/restore, CRIU's log. Each cause was
seen for real (../shared/HOST-NOTES.md) or is named in podman's or CRIU's source and release
notes. The CRIU/kernel pairs come from ``warmctl.host.CRIU_KERNEL_PAIRS``, as doctor's do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from warmctl.host import (
    CRIU_KERNEL_PAIRS,
    LIBCRIU_FIX,
    criu_kernel_advice,
    install_criu_fix,
    missing_criu_fix,
)

USE_RUNC = ('install runc (apt-get install runc) and set [engine] runtime = "runc" in a '
            "drop-in under /etc/containers/containers.conf.d/")
RUNC_FIX = f"crun cannot run on cgroup v1 in hybrid mode: {USE_RUNC}"
ROOT_FIX = "run warmctl as root: podman's checkpoint/restore refuses rootless containers"

_CRIU_ERROR = re.compile(r"\bError \(")


def ulimits_fix(nofile_hard: int = 1024, nproc_hard: int = 4096) -> str:
    """The containers.conf drop-in that lets containers start: limits within the host's hard
    limits (HOST-NOTES' 1024 and 4096 when those are not known)."""
    nofile = f"{min(1024, nofile_hard)}:{nofile_hard}"
    nproc = f"{min(4096, nproc_hard)}:{nproc_hard}"
    return ("container ulimits above this host's hard limits cannot be set: lower podman's "
            "defaults in /etc/containers/containers.conf.d/50-ulimits.conf with [containers] "
            f'default_ulimits = ["nofile={nofile}", "nproc={nproc}"]')


class _Cause(NamedTuple):
    pattern: re.Pattern[str]
    # The fix, given the CRIU version and kernel release when the caller knows them ("").
    fix: Callable[[str, str], str]


def _criu_upgrade(criu_min: str, symptom: str) -> Callable[[str, str], str]:
    """The fix for a CRIU too old for the kernel: ``criu_min``, unless this CRIU on this
    kernel needs a newer release still (3.17 on 6.18 needs 4.2, not the vDSO's 4.1)."""

    def fix(criu: str, kernel: str) -> str:
        advice = criu_kernel_advice(criu, kernel)
        if advice is not None:
            return f"{advice.problem}: {advice.fix}"
        return f"{symptom}: {install_criu_fix(criu_min)}"

    return fix


def _pair_upgrade(breaks: str) -> Callable[[str, str], str]:
    pair = next(p for p in CRIU_KERNEL_PAIRS if p.breaks == breaks)
    return _criu_upgrade(pair.criu_min, f"CRIU < {pair.criu_min} cannot checkpoint on kernel "
                                        f">= {pair.kernel_min} ({breaks})")


def _criu_missing_or_old(criu: str, kernel: str) -> str:
    advice = criu_kernel_advice(criu, kernel)
    return f"{advice.problem}: {advice.fix}" if advice is not None else missing_criu_fix(kernel)


def _fixed(text: str) -> Callable[[str, str], str]:
    return lambda _criu, _kernel: text


# First match wins: CRIU's own causes before podman's generic wording.
_CAUSES: tuple[_Cause, ...] = (
    # podman asks CRIU its version over RPC; runc runs `criu` from PATH.
    _Cause(re.compile(r"requires at least CRIU|CRIU binary not found|"
                      r"\"criu\": executable file not found", re.I), _criu_missing_or_old),
    _Cause(re.compile(r"Unexpected rt vDSO area bounds", re.I), _pair_upgrade("vDSO")),
    _Cause(re.compile(r"Can't get \d+:16 opt|SO_PASS(?:CRED|SEC)", re.I),
           _pair_upgrade("socket options")),
    # Kernels with the do_change_type() security change (backported to stable series, so not
    # a kernel-version pair) refuse CRIU < 4.1.1's way of restoring mount propagation.
    _Cause(re.compile(r"mnt-v2: Failed to make mount", re.I),
           _criu_upgrade("4.1.1", "CRIU < 4.1.1 cannot restore mounts on this kernel")),
    _Cause(re.compile(r"Connected TCP socket|consider using --tcp-established", re.I), _fixed(
        "the container has established TCP connections: retry with --tcp-established")),
    _Cause(re.compile(r"(?:setrlimit|error setting rlimit).*operation not permitted", re.I),
           _fixed(ulimits_fix())),
    _Cause(re.compile(r"cgroups in hybrid mode not supported", re.I), _fixed(RUNC_FIX)),
    # crun (1.21 seen) without libcriu: "could not load `libcriu.so.2`".
    _Cause(re.compile(r"could not load \W?libcriu", re.I), _fixed(LIBCRIU_FIX)),
    _Cause(re.compile(r"does not support checkpoint", re.I),
           _fixed(f"this OCI runtime cannot checkpoint: {USE_RUNC}")),
    _Cause(re.compile(r"address already in use|port is already allocated", re.I), _fixed(
        "the port is taken by another container or program: free it, or publish another "
        "with --publish")),
    _Cause(re.compile(r"name \"?[^\"\s]*\"? is already in use", re.I), _fixed(
        "the container name is taken: choose another, or remove the container holding it "
        "(resume --replace does)")),
    # restore --import of an archive whose image is not here makes podman try a registry.
    _Cause(re.compile(r"image not known|no such image|initializing source docker://", re.I),
           _fixed("the container's image must exist on this host: podman load (or podman "
                  "import) it, then retry")),
    _Cause(re.compile(r"rootless|requires root|must be run as root", re.I), _fixed(ROOT_FIX)),
)


def criu_errors(lines: Iterable[str]) -> list[str]:
    """CRIU's 'Error (file:line): ...' lines, in order, without timestamp and place."""
    found: list[str] = []
    for line in lines:
        if _CRIU_ERROR.search(line):
            _, _, message = line.partition("): ")
            found.append((message or line).strip())
    return found


def diagnose(stderr: str, criu_log_text: str = "", *, criu_version: str = "",
             kernel: str = "") -> str | None:
    """A one-line fix for a known failure in podman's stderr or CRIU's log, else None.

    ``criu_version`` and ``kernel``, when known, make a CRIU-upgrade fix name the release this
    host needs rather than the one that fixes only the symptom seen.
    """
    for text in (criu_log_text, stderr):
        for cause in _CAUSES:
            if text and cause.pattern.search(text):
                return cause.fix(criu_version, kernel)
    return None
