"""What a snapshot's container may do to the host that resumes it, read from its spec.dump.

A snapshot carries the OCI spec podman creates the restored container from. For a snapshot
from a registry that spec was written by whoever pushed it, so on resume:

- annotations that steer CRIU or the runtime (``org.criu.config`` names a CRIU configuration
  file for root's CRIU; ``run.oci.*`` steer crun; ``org.systemd.property.*`` set systemd unit
  properties through runc) are dropped before podman sees the spec: only podman's informative
  ones are kept (``KEPT_ANNOTATIONS``), and warmctl's own are set afresh afterwards
  (criu_config.py);
- the host access the spec asks for (``host_access``: privileged, host namespaces, host paths
  bind-mounted, devices, capabilities beyond podman's default set, OCI hooks, which run
  programs on the host), and what config.dump asks beyond it (an exit command, pid files
  outside podman's run root, a host directory as root file system, this host's secrets, host
  mounts podman manages), is refused unless the user allows it (``resume
  --allow-host-access``).

Go's encoding/json, which reads the spec in podman and runc, matches field names without regard
to case; a spec whose objects hold two keys that differ only in case (or twice the same key)
could therefore mean one thing here and another there, and is refused (``UnclearSpec``).
Lookups here fold case as Go does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from warmctl import archive
from warmctl.errors import HostError, IntegrityError

# Annotations podman writes that only describe the container; nothing reads them to decide.
KEPT_ANNOTATIONS = ("io.container.manager", "io.kubernetes.cri-o.Created",
                    "io.kubernetes.cri-o.TTY", "org.opencontainers.image.stopSignal")
KEPT_PREFIXES = ("io.podman.annotations.",)

# containers.conf's default_capabilities: what every podman container gets.
DEFAULT_CAPABILITIES = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID",
    "CAP_SYS_CHROOT",
})
# The namespaces podman gives a container of its own; one missing is the host's.
PRIVATE_NAMESPACES = ("pid", "network", "ipc", "uts", "mount")
# podman's own bind mounts: files of the container in its storage, at the destinations podman
# removes from an imported spec and makes afresh (libpod's setupContainer), and the container's
# named volumes (which podman refuses to import over existing ones). Anything else is a path
# of the host.
_USERDATA = re.compile(r"/(?:var/lib|run)/containers/storage/overlay-containers/[0-9a-f]{64}/"
                       r"userdata(?:/[A-Za-z0-9_.-]+)?")
_PODMAN_DESTINATIONS = ("/dev/shm", "/etc/resolv.conf", "/etc/hostname", "/etc/hosts",
                        "/run/.containerenv", "/run/secrets")
_VOLUME = re.compile(r"/var/lib/containers/storage/volumes/([A-Za-z0-9][A-Za-z0-9_.-]*)/_data")
_RUN_ROOT = "/run/containers/storage/"  # podman resets pid files under it on import
_PODMAN_NETNS = re.compile(r"/run/netns/netns-[0-9a-f-]+")


class UnclearSpec(IntegrityError):
    """A spec.dump that Go and Python would read differently (exit 5)."""


def parse(data: bytes, what: str = "spec.dump") -> dict[str, Any]:
    """A JSON object, refusing keys that Go's decoder would take for one another."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            folded = key.casefold()
            if folded in seen:
                raise UnclearSpec(f"the snapshot's {what} has the key {key!r} twice (as Go "
                                  "reads it, ignoring case): refused")
            seen.add(folded)
        return dict(items)

    try:
        value = json.loads(data, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:
        raise UnclearSpec(f"the snapshot's {what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise UnclearSpec(f"the snapshot's {what} is not a JSON object")
    return value


def _get(obj: Any, name: str) -> Any:
    """``obj[name]`` as Go finds a struct field: ignoring case."""
    if not isinstance(obj, dict):
        return None
    folded = name.casefold()
    return next((value for key, value in obj.items() if key.casefold() == folded), None)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def host_access(spec: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    """What the spec (and podman's config.dump) asks of the host, one phrase each; empty for
    a container of podman's defaults."""
    found: list[str] = []
    privileged = _get(config, "privileged") is True or _get(
        _get(spec, "annotations"), "io.podman.annotations.privileged") == "TRUE"
    if privileged:
        found.append("privileged")
    linux = _get(spec, "linux")
    namespaces = {_get(ns, "type"): _get(ns, "path") for ns in _list(_get(linux, "namespaces"))}
    for kind in PRIVATE_NAMESPACES:
        if kind not in namespaces:
            found.append(f"host {kind} namespace")
        elif namespaces[kind] and not (kind == "network"
                                       and _PODMAN_NETNS.fullmatch(str(namespaces[kind]))):
            found.append(f"{kind} namespace {namespaces[kind]}")
    volumes = {(str(_get(v, "volumeName")), str(_get(v, "dest")))
               for v in _list(_get(config, "namedVolumes"))}
    for mount in _list(_get(spec, "mounts")):
        options = [str(o) for o in _list(_get(mount, "options"))]
        if _get(mount, "type") == "bind" or {"bind", "rbind"} & set(options):
            source, destination = str(_get(mount, "source")), _get(mount, "destination")
            volume = _VOLUME.fullmatch(source)
            own = (_USERDATA.fullmatch(source) and destination in _PODMAN_DESTINATIONS) or (
                volume is not None and (volume.group(1), destination) in volumes)
            if not own or ".." in source.split("/"):
                found.append(f"host path {source} at {destination}")
    for device in _list(_get(linux, "devices")):
        found.append(f"device {_get(device, 'path')}")
    for rule in _list(_get(_get(linux, "resources"), "devices")):
        if _get(rule, "allow") is True:
            major, minor = _get(rule, "major"), _get(rule, "minor")
            numbers = f"{'*' if major is None else major}:{'*' if minor is None else minor}"
            found.append(f"device access {_get(rule, 'type') or 'a'} {numbers} "
                         f"{_get(rule, 'access') or 'rwm'}")
    capabilities = _get(_get(spec, "process"), "capabilities")
    granted: set[str] = set()
    for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        granted.update(str(c) for c in _list(_get(capabilities, kind)))
    added = sorted(granted - DEFAULT_CAPABILITIES)
    if added:
        found.append(f"capabilities {', '.join(added)}")
    hooks = _get(spec, "hooks")
    if isinstance(hooks, dict):
        kinds = sorted(kind for kind, value in hooks.items() if value)
        if kinds:
            found.append(f"OCI hooks run on the host ({', '.join(kinds)})")
    return found + _config_access(config or {})


def _config_access(config: dict[str, Any]) -> list[str]:
    """What podman's config.dump asks of the host, beyond the spec: podman creates the
    container from it, keeping most fields (libpod's RestoreContainer)."""
    found: list[str] = []
    if _get(config, "exitCommand"):  # conmon runs it on the host when the container exits
        found.append(f"exit command {' '.join(map(str, _list(_get(config, 'exitCommand'))))}")
    for field in ("conmonPidFile", "pid_file"):
        path = _get(config, field)
        if path and not (str(path).startswith(_RUN_ROOT) and ".." not in str(path).split("/")):
            found.append(f"pid file written to {path}")
    if _get(config, "rootfs"):
        found.append(f"host directory {_get(config, 'rootfs')} as its root file system")
    secrets = [str(_get(s, "name")) for s in _list(_get(config, "secrets"))]
    if secrets:
        found.append(f"this host's podman secrets {', '.join(secrets)}")
    for path in _list(_get(config, "mounts")):
        if not _USERDATA.fullmatch(str(path)):
            found.append(f"host mount {path} handled by podman")
    if _get(config, "mountAllDevices") is True:
        found.append("every host device")
    if _get(config, "sdnotifySocket"):
        found.append(f"notify socket {_get(config, 'sdnotifySocket')}")
    return found


def steering_annotations(spec: dict[str, Any]) -> list[str]:
    annotations = _get(spec, "annotations")
    return sorted(key for key in annotations if not _kept(key)) \
        if isinstance(annotations, dict) else []


def _kept(key: str) -> bool:
    return key in KEPT_ANNOTATIONS or key.startswith(KEPT_PREFIXES)


def confine(config_dump: bytes, spec_dump: bytes) -> bytes:
    """spec.dump without the annotations that could steer CRIU or the runtime (for a
    snapshot from a registry; feed.py gives podman this). UnclearSpec when it cannot be
    read as podman would read it."""
    spec = parse(spec_dump)
    name = next((key for key in spec if key.casefold() == "annotations"), None)
    if name is None:
        return spec_dump
    annotations = spec.pop(name)
    if isinstance(annotations, dict):
        spec["annotations"] = {k: v for k, v in annotations.items() if _kept(k)}
    return json.dumps(spec).encode()


# --- reading a snapshot's --------------------------------------------------------------------

SEARCH_LIMIT = 64 * 1024 * 1024  # podman writes config.dump and spec.dump first


def archive_host_access(path: Path) -> list[str]:
    """host_access() of an archive's spec.dump and config.dump, read from the tar stream."""
    files = archive.configuration_files(path, within=SEARCH_LIMIT)
    if files is None:
        raise IntegrityError(f"{path} has no config.dump and spec.dump at its start: not an "
                             "archive podman wrote")
    return host_access(parse(files[1]), parse(files[0], "config.dump"))


def refuse_host_access(snapshot_ref: str, access: list[str]) -> None:
    """resume of a snapshot from a registry: exit 6 naming each access it asks for."""
    if access:
        raise HostError(f"{snapshot_ref} came from a registry and asks for host access: "
                        f"{'; '.join(access)}",
                        hint="resume it with --allow-host-access if you trust it with that")
