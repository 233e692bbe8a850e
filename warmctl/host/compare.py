"""Will a snapshot restore here? The host that recorded it against this one.

A checkpoint is a process's memory. It restores where the CPU offers every feature the process
may have chosen at start-up (glibc, JITs and many libraries pick AVX2 or AVX-512 code paths
once: without them the restored process dies of an illegal instruction, or CRIU refuses), the
kernel restores what CRIU asks for, and the image, podman, runtime and CRIU match well enough.
On the recording host that is a given; for a snapshot pulled from a registry, or recorded on a
host of another name, ``resume`` compares first and warns, or with ``--strict`` refuses (exit
6), and ``doctor --snapshot REF`` shows the whole comparison.

The CPU is recorded at snapshot time (``extra["cpu"]``: the architecture and the sorted
/proc/cpuinfo flags), in ``extra`` rather than ``host`` so that ``list --json`` stays lean.
Flags this host has and the recording host lacked do no harm; only missing ones count.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmctl.catalogue import Snapshot
from warmctl.errors import HostError
from warmctl.host import facts as host
from warmctl.host import podman_info as hostcache
from warmctl.podman import HostVersions, Podman

_SHOWN_FLAGS = 8  # missing flags named in one line; the rest are counted


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of /proc/cpuinfo text: x86's ``flags``, arm64's ``Features``.
    Every CPU of a machine lists the same; the first line is enough."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return frozenset()


def cpu_record() -> dict[str, str]:
    """What a snapshot records about the CPU it was taken on."""
    return {"arch": os.uname().machine, "flags": " ".join(sorted(cpu_flags()))}


@dataclass(frozen=True)
class HostProfile:
    """This host, in the terms a snapshot records."""

    podman: str
    runtime: str
    runtime_version: str
    criu: str
    kernel: str
    hostname: str
    arch: str
    cpu_flags: frozenset[str]


def this_host(versions: HostVersions | None, criu: str) -> HostProfile:
    """This host's profile from facts already gathered (podman info, criu --version)."""
    return HostProfile(
        podman=versions.podman if versions else "",
        runtime=versions.runtime if versions else "",
        runtime_version=versions.runtime_version if versions else "",
        criu=criu,
        kernel=host.kernel_release(),
        hostname=host.hostname(),
        arch=os.uname().machine,
        cpu_flags=cpu_flags(),
    )


@dataclass(frozen=True)
class Comparison:
    """One aspect of the recording host against this one."""

    aspect: str  # cpu, kernel, criu, podman, runtime, image
    same: bool
    detail: str
    fix: str = ""


def needs_comparison(snapshot: Snapshot, hostname: str | None = None) -> bool:
    """Pulled snapshots, and those recorded under another host name."""
    recorded = snapshot.host.get("hostname", "")
    here = host.hostname() if hostname is None else hostname
    return "pulled" in snapshot.extra or (recorded != "" and recorded != here)


def compare(snapshot: Snapshot, here: HostProfile, image_id: str | None) -> list[Comparison]:
    """Every aspect, in the order that matters most; ``image_id`` is the id of the snapshot's
    image on this host, None when it is not here."""
    recorded = snapshot.host
    where = recorded.get("hostname") or "the recording host"
    return [
        compare_cpu(snapshot.extra.get("cpu"), here, where),
        _compare_version("kernel", "kernel", recorded.get("kernel", ""), here.kernel, where,
                         "run the recording host's kernel, or try without --strict"),
        _compare_version("criu", "CRIU", recorded.get("criu", ""), here.criu, where,
                         f"install CRIU {recorded.get('criu', '')} here"),
        _compare_version("podman", "podman", recorded.get("podman", ""), here.podman, where,
                         f"install podman {recorded.get('podman', '')} here"),
        _compare_version("runtime", "runtime", _runtime(recorded.get("runtime", ""),
                                                        recorded.get("runtime_version", "")),
                         _runtime(here.runtime, here.runtime_version), where,
                         "configure the recording host's OCI runtime in containers.conf"),
        compare_image(snapshot.image_name, snapshot.image_id, image_id, where),
    ]


def compare_cpu(recorded: Any, here: HostProfile, where: str) -> Comparison:
    if not isinstance(recorded, Mapping) or not isinstance(recorded.get("flags"), str):
        return Comparison("cpu", True, "not recorded (snapshot from an older warmctl)")
    arch = recorded.get("arch", "")
    if arch and here.arch and arch != here.arch:
        return Comparison("cpu", False, f"recorded on {arch} ({where}), this host is {here.arch}",
                          "a checkpoint restores only on the architecture it was taken on")
    wanted = set(recorded["flags"].split())
    missing = sorted(wanted - here.cpu_flags)
    if not missing:
        return Comparison("cpu", True,
                          f"all {len(wanted)} CPU flags of {where} are here")
    shown = " ".join(missing[:_SHOWN_FLAGS])
    more = f" and {len(missing) - _SHOWN_FLAGS} more" if len(missing) > _SHOWN_FLAGS else ""
    return Comparison(
        "cpu", False,
        f"this CPU lacks {len(missing)} flag(s) {where} had: {shown}{more}; the process may "
        "crash or CRIU refuse",
        "resume on a host with those CPU features, or snapshot on the oldest CPU of the fleet",
    )


def _runtime(name: str, version: str) -> str:
    return version or name


def _compare_version(aspect: str, label: str, recorded: str, here: str, where: str,
                     fix: str) -> Comparison:
    if not recorded:
        return Comparison(aspect, True, f"{label}: not recorded")
    if recorded == here:
        return Comparison(aspect, True, f"{label} {recorded} here as on {where}")
    return Comparison(aspect, False,
                      f"{label} {here or 'unknown'} here, {recorded} on {where}", fix)


def compare_image(name: str, recorded_id: str, here_id: str | None, where: str) -> Comparison:
    if here_id is None:
        return Comparison("image", False, f"image {name} is not on this host",
                          f"podman pull (or podman load) {name} first")
    if not recorded_id or here_id == recorded_id:
        return Comparison("image", True, f"image {name} is {here_id[:12]} here as on {where}")
    return Comparison(
        "image", False,
        f"image {name} is {here_id[:12]} here, {recorded_id[:12]} on {where}: the container's "
        "files may not match its memory",
        f"give this host the recording host's image {recorded_id[:12]}",
    )


def compare_with_this_host(snapshot: Snapshot, podman: Podman, criu: str) -> list[Comparison]:
    """Asks podman for its versions (cached, see hostcache) and the image's id."""
    here = this_host(hostcache.host_versions(podman), criu)
    return compare(snapshot, here, podman.image_id(snapshot.image_name))


def check_before_resume(snapshot: Snapshot, podman: Podman, criu: str, *, strict: bool,
                        warn: Callable[[str], None]) -> None:
    """Warn about each difference, or with ``strict`` refuse when there is any."""
    differences = [c for c in compare_with_this_host(snapshot, podman, criu) if not c.same]
    if not differences:
        return
    if strict:
        recorded = snapshot.host.get("hostname") or "another host"
        raise HostError(
            f"{snapshot.ref} was recorded on {recorded}, which differs from this host: "
            + "; ".join(c.detail for c in differences),
            hint=f"see warmctl doctor --snapshot {snapshot.ref}; without --strict, resume "
                 "tries anyway",
        )
    for difference in differences:
        warn(f"{snapshot.ref}: {difference.detail}")
