"""Known failures of podman and CRIU, recognised by their text and mapped to a one-line fix.

``diagnose`` reads what podman printed and, for checkpoint/restore, CRIU's log. Each cause was
seen for real (../shared/HOST-NOTES.md) or is named in podman's or CRIU's source and release
notes. The CRIU/kernel pairs come from ``warmctl.host.facts.CRIU_KERNEL_PAIRS``, as doctor's do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from warmctl.host.criu_kernel import (
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
    # The fix, given what matched and the CRIU version and kernel release when the caller
    # knows them ("").
    fix: Callable[[re.Match[str], str, str], str]


def _criu_upgrade(criu_min: str, symptom: str) -> Callable[[re.Match[str], str, str], str]:
    """The fix for a CRIU too old for the kernel: ``criu_min``, unless this CRIU on this
    kernel needs a newer release still (3.17 on 6.18 needs 4.2, not the vDSO's 4.1)."""

    def fix(_match: re.Match[str], criu: str, kernel: str) -> str:
        advice = criu_kernel_advice(criu, kernel)
        if advice is not None:
            return f"{advice.problem}: {advice.fix}"
        return f"{symptom}: {install_criu_fix(criu_min)}"

    return fix


def _pair_upgrade(breaks: str) -> Callable[[re.Match[str], str, str], str]:
    pair = next(p for p in CRIU_KERNEL_PAIRS if p.breaks == breaks)
    return _criu_upgrade(pair.criu_min, f"CRIU < {pair.criu_min} cannot checkpoint on kernel "
                                        f">= {pair.kernel_min} ({breaks})")


def _criu_missing_or_old(_match: re.Match[str], criu: str, kernel: str) -> str:
    advice = criu_kernel_advice(criu, kernel)
    return f"{advice.problem}: {advice.fix}" if advice is not None else missing_criu_fix(kernel)


def _fixed(text: str) -> Callable[[re.Match[str], str, str], str]:
    return lambda _match, _criu, _kernel: text


def device_name(kind: str, major: int, minor: int, sys_dev: Path = Path("/sys/dev")) -> str:
    """/dev/NAME of a character ("chr") or block device by its numbers, as the kernel names
    it in /sys/dev; "" when unknown."""
    directory = "char" if kind == "chr" else "block"
    try:
        uevent = (sys_dev / directory / f"{major}:{minor}" / "uevent").read_text()
    except OSError:
        return ""
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key == "DEVNAME" and value:
            return f"/dev/{value}"
    return ""


def _device_fix(match: re.Match[str], _criu: str, _kernel: str) -> str:
    kind, major, minor = match.group(1), int(match.group(2)), int(match.group(3))
    name = device_name(kind, major, minor)
    device = f"{name} ({kind} {major}:{minor})" if name else f"the device {kind} {major}:{minor}"
    return (f"a process in the container holds {device} open, which CRIU cannot checkpoint: "
            "close it (or stop the process using it) before the snapshot, or run the service "
            "without the device")


# What reaches CRIU at snapshot and resume, named in the fixes below (criu_config.py).
_CONNECTIONS_DOC = "see warmctl doctor's criu-config line"


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
    _Cause(re.compile(r"Can't dump file \d+ of that type \[\d+\] \((chr|blk) (\d+):(\d+)\)"),
           _device_fix),
    # Restore: the snapshot has connections and CRIU got neither tcp-close nor
    # --tcp-established (warmctl's configuration did not reach it).
    _Cause(re.compile(r"Connected TCP socket in image", re.I), _fixed(
        "the snapshot holds established TCP connections and CRIU was not told to close them "
        f"({_CONNECTIONS_DOC}); resume --tcp-established keeps them, for the very container "
        "at its own address only")),
    # Dump: only without --tcp-established, which is warmctl's default.
    _Cause(re.compile(r"Connected TCP socket|consider using --tcp-established", re.I), _fixed(
        "the container has established TCP connections and --no-tcp-established refuses "
        "them: snapshot without it to checkpoint them")),
    _Cause(re.compile(r"In-flight connection", re.I), _fixed(
        "a client connection was not yet accepted and CRIU was not told to skip it "
        f"({_CONNECTIONS_DOC}): retry, or snapshot without --no-tcp-established")),
    _Cause(re.compile(r"External socket is used|Can't dump half of stream unix connection|"
                      r"unix: .*external", re.I), _fixed(
        "a process in the container is connected to a unix socket outside it (a bind-mounted "
        "socket such as /dev/log or a daemon's): podman cannot checkpoint that; close the "
        "connection or stop mounting the socket")),
    # CRIU reads each process's rlimits with prlimit(), which for another user's process
    # needs CAP_SYS_RESOURCE (HOST-NOTES: root in the project's VMs lacks it).
    _Cause(re.compile(r"Can't get rlimit \d+: Operation not permitted", re.I), _fixed(
        "a process in the container runs as a user other than root, and this root lacks "
        "CAP_SYS_RESOURCE, which CRIU needs to read its limits: run the container's processes "
        "as root (e.g. podman run --user root, memcached -u root) or checkpoint on a host "
        "whose root has CAP_SYS_RESOURCE (warmctl doctor says)")),
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


# Error lines CRIU logs on every run on some hosts that are not why a dump or restore failed:
# without CAP_SYS_RESOURCE, CRIU cannot raise its own open-files limit (HOST-NOTES).
_BENIGN_CRIU_ERRORS = (
    re.compile(r"rlimit: Can't setup RLIMIT_NOFILE for self"),
)


def criu_errors(lines: Iterable[str]) -> list[str]:
    """CRIU's 'Error (file:line): ...' lines, in order, without timestamp and place, and
    without the known benign ones: the first is the fatal error, the rest its consequences
    ('Dump files (pid: N) failed', 'Dumping FAILED.')."""
    found: list[str] = []
    for line in lines:
        if _CRIU_ERROR.search(line):
            _, _, message = line.partition("): ")
            message = (message or line).strip()
            if not any(p.search(message) for p in _BENIGN_CRIU_ERRORS):
                found.append(message)
    return found


_PODMAN_WARNING = re.compile(r"level=warning|^WARN\[", re.I)
# podman quotes the runtime's whole command line (image and work paths, container id: 600
# characters) in its error: `/usr/bin/runc checkpoint --image-path ... ID` failed: ...
_RUNTIME_COMMAND = re.compile(
    r"[`\"](?:\S*/)?(runc|crun|kata-runtime|runsc)\s+(\w[\w-]*)[^`\"]*[`\"]")


def without_warnings(stderr: str) -> str:
    """podman's stderr without its warning lines, which are never the error (HOST-NOTES: a
    host can print a net_cls warning on every podman command)."""
    return "\n".join(line for line in stderr.splitlines()
                     if not _PODMAN_WARNING.search(line))


def shorten_runtime_command(line: str) -> str:
    """'`/usr/bin/runc checkpoint --image-path ... ID` failed: exit status 1' ->
    'runc checkpoint failed: exit status 1'."""
    return _RUNTIME_COMMAND.sub(lambda m: f"{m.group(1)} {m.group(2)}", line)


def diagnose(stderr: str, criu_log_text: str = "", *, criu_version: str = "",
             kernel: str = "") -> str | None:
    """A one-line fix for a known failure in podman's stderr or CRIU's log, else None.

    ``criu_version`` and ``kernel``, when known, make a CRIU-upgrade fix name the release this
    host needs rather than the one that fixes only the symptom seen.
    """
    for text in (criu_log_text, without_warnings(stderr)):
        for cause in _CAUSES:
            match = cause.pattern.search(text) if text else None
            if match:
                return cause.fix(match, criu_version, kernel)
    return None
