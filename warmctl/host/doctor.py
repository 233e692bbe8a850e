"""warmctl doctor: can this host checkpoint and restore containers, and if not, why not.

One module over 450 lines: each check is a pure function of the facts gathered here (its
parsing beside it), so a check reads best next to the fact it judges; the probe is short.

``gather_facts`` collects everything once (podman info, ``criu --version`` and ``criu check``,
/proc, the containers.conf files, the catalogue directory); every ``check_*`` is a pure function
of those facts, so unit tests drive each check from recorded output. ``probe`` is the end-to-end
test: a real checkpoint and restore of a tiny container. Nothing here prints; the CLI renders
the ``Check`` rows.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from warmctl import criu_config
from warmctl.catalogue import DB_NAME, Catalogue, Snapshot
from warmctl.errors import CheckpointError, IntegrityError, WarmctlError
from warmctl.host import compare as hostcompat
from warmctl.host import facts as host
from warmctl.host.diagnose import RUNC_FIX, USE_RUNC, criu_errors, diagnose, ulimits_fix
from warmctl.lifecycle.criu_logs import keep_criu_log
from warmctl.podman.runner import containers_conf_files
from warmctl.podman.types import HostVersions, Podman
from warmctl.units import format_size

Status = Literal["ok", "warn", "fail"]
OK: Status = "ok"
WARN: Status = "warn"
FAIL: Status = "fail"

# `criu check` took 0.06 s on the project's hosts; the limit keeps doctor under its 2 s budget
# should a kernel make it crawl (then the check is a warning, and --probe gives the answer).
CRIU_CHECK_TIMEOUT = 1.0

# podman gives a root container nofile and nproc limits of 1048576 when containers.conf sets
# none (podman 4's specgen), more than a host without CAP_SYS_RESOURCE may grant.
PODMAN_DEFAULT_ULIMIT = 1048576
PODMAN_DEFAULT_ULIMITS = ("nofile", "nproc")
UNLIMITED = -1
CAP_SYS_RESOURCE = 24  # bit in /proc/self/status CapEff

# Filesystems on which SQLite's file locking cannot be trusted.
_UNSAFE_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "afs", "lustre"})

PROBE_IMAGE = "localhost/warmctl-test/busybox"  # built by scripts/provision-host
# A listening TCP socket: kernels >= 6.16 fail old CRIUs on exactly that.
PROBE_COMMAND = ("httpd", "-f", "-p", "8080", "-h", "/www")
PROBE_REPLY = "warmctl probe ok"  # the /www/index.html provision-host puts in the image


@dataclass(frozen=True)
class Check:
    """One line of doctor's answer. ``fix`` is a one-line remedy for warn and fail."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "fix": self.fix or None}


# --- facts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CriuFacts:
    path: str | None = None  # the criu runc will find, None when there is none
    version: str = ""  # "" when missing or `criu --version` failed
    check_returncode: int | None = None  # None: `criu check` did not run or did not finish
    check_output: str = ""  # its stdout and stderr, or why it did not finish


@dataclass(frozen=True)
class UlimitFacts:
    configured: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (soft, hard)
    source: str = ""  # the containers.conf whose default_ulimits podman uses
    problems: list[str] = field(default_factory=list)  # containers.conf files unreadable
    hard_limits: dict[str, int] = field(default_factory=dict)  # this process's, UNLIMITED
    cap_sys_resource: bool = False


@dataclass(frozen=True)
class CatalogueFacts:
    path: Path
    exists: bool = False
    uid: int = 0
    mode: int = 0o700
    fs_type: str = ""  # of the directory, or of its nearest existing parent
    free_bytes: int = 0
    largest_snapshot: int = 0
    error: str = ""  # why it could not be inspected
    refused: str = ""  # why every command would refuse it (not a catalogue: exit 2)
    unusable: str = ""  # why every command would fail on its database (unreadable: exit 5)
    read_only: bool = False  # on a read-only file system: only commands that read work


@dataclass(frozen=True)
class HostFacts:
    euid: int
    kernel: str
    podman: HostVersions | None  # None when podman is missing or `podman info` failed
    podman_error: str
    criu: CriuFacts
    ulimits: UlimitFacts
    cgroup2_mounted: bool  # with cgroup v1, a cgroup2 mount means hybrid mode
    catalogue: CatalogueFacts
    runc_criu_config: bool = False  # /etc/criu/runc.conf exists (see warmctl/criu_config.py)
    libcriu: bool = True  # the loader finds libcriu.so.2, which crun needs to checkpoint
    # What /sys/fs/cgroup/unified/cgroup.controllers lists: crun refuses hybrid mode only
    # when the cgroup2 hierarchy has controllers.
    cgroup2_controllers: str = ""
    cap_sys_resource: bool | None = True  # None: unknown


def gather_facts(podman: Podman, home: Path, *,
                 environ: Mapping[str, str] | None = None) -> HostFacts:
    """Everything the checks need, read from this host."""
    environ = os.environ if environ is None else environ
    versions: HostVersions | None = None
    podman_error = ""
    try:
        versions = podman.host_versions()
    except WarmctlError as err:
        podman_error = err.message + (f" ({err.hint})" if err.hint else "")
    mountinfo = _read_text(Path("/proc/self/mountinfo"))
    return HostFacts(
        euid=os.geteuid(),
        kernel=host.kernel_release(),
        podman=versions,
        podman_error=podman_error,
        criu=gather_criu_facts(),
        ulimits=gather_ulimit_facts(environ),
        cgroup2_mounted=any(fs == "cgroup2" for _, fs in parse_mountinfo(mountinfo)),
        catalogue=gather_catalogue_facts(home, mountinfo),
        runc_criu_config=criu_config.RUNC_DEFAULT.exists(),
        libcriu=host.libcriu_installed(),
        cgroup2_controllers=_read_text(Path("/sys/fs/cgroup/unified/cgroup.controllers")).strip(),
        cap_sys_resource=host.has_cap_sys_resource(),
    )


def gather_criu_facts() -> CriuFacts:
    path = host.criu_path()
    if path is None:
        return CriuFacts()
    try:
        version = host.criu_version()
    except WarmctlError:  # hung: as unusable as failing
        version = ""
    if not version:
        return CriuFacts(path)
    try:
        result = host.criu_check(timeout=CRIU_CHECK_TIMEOUT)
    except WarmctlError as err:
        return CriuFacts(path, version, None, err.message)
    if result is None:  # criu vanished between the two calls
        return CriuFacts()
    return CriuFacts(path, version, result.returncode, (result.stdout + result.stderr).strip())


def gather_ulimit_facts(environ: Mapping[str, str]) -> UlimitFacts:
    files: list[tuple[str, str]] = []
    problems: list[str] = []
    for path in containers_conf_files(environ):
        try:
            files.append((str(path), path.read_text()))
        except OSError as exc:
            problems.append(f"cannot read {path}: {exc.strerror}")
    configured, source, parse_problems = configured_ulimits(files)
    hard = {}
    for name in sorted(set(PODMAN_DEFAULT_ULIMITS) | configured.keys()):
        # podman's names are getrlimit's without the prefix: nofile is RLIMIT_NOFILE.
        res = getattr(resource, f"RLIMIT_{name.upper()}", None)
        if isinstance(res, int):
            limit = resource.getrlimit(res)[1]
            hard[name] = UNLIMITED if limit == resource.RLIM_INFINITY else limit
    return UlimitFacts(
        configured=configured,
        source=source,
        problems=problems + parse_problems,
        hard_limits=hard,
        cap_sys_resource=has_capability(_read_text(Path("/proc/self/status")), CAP_SYS_RESOURCE),
    )


def gather_catalogue_facts(home: Path, mountinfo: str) -> CatalogueFacts:
    """The catalogue directory, without creating it: doctor changes nothing."""
    existing = home
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if home.is_symlink() and not home.exists():
            Catalogue(home).check_home()  # raises: the link leads nowhere (exit 2)
        vfs = os.statvfs(existing)
        read_only = bool(vfs.f_flag & os.ST_RDONLY)
        fs_type = fs_type_of(existing.resolve(), mountinfo)
        if existing != home:
            return CatalogueFacts(home, fs_type=fs_type, free_bytes=vfs.f_bavail * vfs.f_frsize,
                                  read_only=read_only)
        st = home.stat()
        try:
            entries = Catalogue(home).check_home()
        except WarmctlError as refused:
            return CatalogueFacts(home, exists=True, uid=st.st_uid, fs_type=fs_type,
                                  free_bytes=vfs.f_bavail * vfs.f_frsize,
                                  refused=refused.message)
        return CatalogueFacts(
            home,
            exists=True,
            uid=st.st_uid,
            mode=st.st_mode & 0o7777,
            fs_type=fs_type,
            free_bytes=vfs.f_bavail * vfs.f_frsize,
            largest_snapshot=_largest_file(Catalogue(home).archives_dir),
            unusable=_database_problem(home) if DB_NAME in entries else "",
            read_only=read_only,
        )
    except WarmctlError as refused:
        return CatalogueFacts(home, refused=refused.message)
    except OSError as exc:
        return CatalogueFacts(home, error=f"cannot inspect {exc.filename or home}: {exc.strerror}")


def _database_problem(home: Path) -> str:
    """Why commands would fail on the catalogue's database, read as they read it (opened
    read-only: doctor changes nothing); "" when it reads well."""
    try:
        with Catalogue(home).open(read_only=True) as catalogue:
            if not catalogue.needs_upgrade:  # else the first command brings it up to date
                catalogue.list_snapshots()
    except WarmctlError as err:
        return err.message
    return ""


def _largest_file(directory: Path) -> int:
    """The largest archive, read from the directory: no database, no lock, quick."""
    sizes = [0]
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False):
                    sizes.append(entry.stat(follow_symlinks=False).st_size)
    return max(sizes)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --- parsing (pure) ---------------------------------------------------------------------------


def configured_ulimits(
    files: Sequence[tuple[str, str]],
) -> tuple[dict[str, tuple[int, int]], str, list[str]]:
    """``[containers] default_ulimits`` from (name, text) files, the last that sets it winning.

    Returns the limits by name as (soft, hard) with UNLIMITED for -1, the file that set them,
    and a description of each file or entry that could not be read.
    """
    entries: list[str] = []
    source = ""
    problems: list[str] = []
    for name, text in files:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{name} is not valid TOML: {exc}")
            continue
        value = data.get("containers", {}).get("default_ulimits")
        if isinstance(value, list):
            entries, source = [str(v) for v in value], name
    limits: dict[str, tuple[int, int]] = {}
    for entry in entries:
        parsed = parse_ulimit(entry)
        if parsed is None:
            problems.append(f"{source}: cannot parse default_ulimits entry {entry!r}")
            continue
        limits[parsed[0]] = parsed[1]
    return limits, source, problems


def parse_ulimit(entry: str) -> tuple[str, tuple[int, int]] | None:
    """'nofile=1024:2048' -> ('nofile', (1024, 2048)); 'nproc=4096' sets both; -1: unlimited."""
    name, sep, values = entry.partition("=")
    soft_text, _, hard_text = values.partition(":")
    try:
        soft = int(soft_text)
        hard = int(hard_text) if hard_text else soft
    except ValueError:
        return None
    if not sep or not name.strip():
        return None
    return name.strip().lower(), (max(soft, UNLIMITED), max(hard, UNLIMITED))


def has_capability(proc_status: str, bit: int) -> bool:
    """Whether CapEff in /proc/PID/status text holds capability ``bit``."""
    for line in proc_status.splitlines():
        key, _, value = line.partition(":")
        if key == "CapEff":
            try:
                return bool(int(value.strip(), 16) >> bit & 1)
            except ValueError:
                return False
    return False


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) for each line of /proc/PID/mountinfo, in order."""
    mounts: list[tuple[str, str]] = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields = before.split()
        if not sep or len(fields) < 5 or not after.split():
            continue
        # Spaces and the like in mount points are octal escapes (\040).
        point = fields[4].encode().decode("unicode_escape")
        mounts.append((point, after.split()[0]))
    return mounts


def fs_type_of(path: Path, mountinfo: str) -> str:
    """The filesystem type of the mount holding ``path`` (an absolute, resolved path)."""
    best, best_type = -1, ""
    for point, fs_type in parse_mountinfo(mountinfo):
        inside = path == Path(point) or Path(point) in path.parents
        # Later mounts on the same point hide earlier ones: ">=" keeps the last.
        if inside and len(point) >= best:
            best, best_type = len(point), fs_type
    return best_type


def first_error_line(output: str) -> str:
    """CRIU's first error line, else the last non-empty line of the output."""
    errors = criu_errors(output.splitlines())
    if errors:
        return errors[0]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- checks (pure) ----------------------------------------------------------------------------


def check_root(facts: HostFacts) -> Check:
    if facts.euid == 0:
        return Check("root", OK, "running as root")
    return Check("root", FAIL,
                 f"running as uid {facts.euid}: rootless podman refuses checkpoint/restore",
                 "run warmctl as root (e.g. sudo warmctl ...)")


def check_podman(facts: HostFacts) -> Check:
    if facts.podman is None:
        return Check("podman", FAIL, facts.podman_error or "podman is unusable",
                     "install podman (apt-get install podman) or run scripts/provision-host")
    return Check("podman", OK, f"podman {facts.podman.podman}")


def check_runtime(facts: HostFacts) -> Check | None:
    """The OCI runtime podman uses, and whether it can checkpoint."""
    versions = facts.podman
    if versions is None:
        return None
    detail = versions.runtime_version or versions.runtime
    if versions.runtime == "runc":
        return Check("runtime", OK, f"{detail} (checkpoints with CRIU)")
    if versions.runtime == "crun":
        # crun prints its build features (+CRIU ...) after its version lines.
        features = [w for w in versions.runtime_details.split() if w[:1] in "+-" and len(w) > 1]
        if "+CRIU" in features:
            problem = host.runtime_problem(versions.runtime, versions.runtime_details,
                                           lambda: facts.libcriu)
            if problem is not None:
                return Check("runtime", FAIL, f"{detail}: {problem.problem}", problem.fix)
            return Check("runtime", OK, f"{detail} (built with CRIU, {host.LIBCRIU} installed)")
        if features:
            return Check("runtime", FAIL, f"{detail} was built without CRIU: cannot checkpoint",
                         USE_RUNC)
        return Check("runtime", WARN, f"{detail}: cannot tell whether it was built with CRIU",
                     "run warmctl doctor --probe, or " + USE_RUNC)
    return Check("runtime", FAIL,
                 f"{versions.runtime or 'unknown runtime'}: podman cannot checkpoint with it",
                 USE_RUNC)


def check_cgroups(facts: HostFacts) -> Check | None:
    """crun cannot start containers on cgroup v1 in hybrid mode (HOST-NOTES)."""
    versions = facts.podman
    if versions is None:
        return None
    hybrid = versions.cgroup_version == "v1" and facts.cgroup2_mounted
    detail = (f"cgroup {versions.cgroup_version or 'unknown'}{' (hybrid)' if hybrid else ''}, "
              f"{versions.cgroup_manager or 'unknown'} manager")
    if hybrid and versions.runtime == "crun":
        # crun refuses hybrid mode when the cgroup2 hierarchy has controllers (its source);
        # without, crun 1.21 ran and checkpointed here, and 1.8 refused (HOST-NOTES).
        if facts.cgroup2_controllers or host.version_tuple(_crun_version(versions)) < (1, 21):
            return Check("cgroups", FAIL, f"{detail}: crun cannot start containers here",
                         RUNC_FIX)
        return Check("cgroups", OK, f"{detail}: no controller on cgroup2, so crun runs")
    return Check("cgroups", OK, detail)


def _crun_version(versions: HostVersions) -> str:
    """'crun version 1.21' -> '1.21'."""
    words = versions.runtime_version.split()
    return words[-1] if words else ""


def check_ulimits(facts: HostFacts) -> Check:
    """Whether podman's default container ulimits fit under this process's hard limits.

    Raising a hard limit needs CAP_SYS_RESOURCE; without it the runtime's setrlimit fails with
    EPERM and no container starts.
    """
    u = facts.ulimits
    too_high: list[str] = []
    shown: list[str] = []
    for name in sorted(set(PODMAN_DEFAULT_ULIMITS) | u.configured.keys()):
        if name in u.configured:
            wanted, origin = u.configured[name][1], u.source
        else:
            wanted, origin = PODMAN_DEFAULT_ULIMIT, "podman's default"
        allowed = u.hard_limits.get(name)
        shown.append(f"{name} {_limit(wanted)}"
                     + (f" <= {_limit(allowed)}" if allowed is not None else "")
                     + ("" if name in u.configured else f" ({origin})"))
        if allowed is not None and not u.cap_sys_resource and _exceeds(wanted, allowed):
            too_high.append(f"{name} hard limit {_limit(wanted)} ({origin}) exceeds this "
                            f"host's {_limit(allowed)}")
    notes = "; ".join(u.problems)
    if too_high:
        detail = ", ".join(too_high) + " and there is no CAP_SYS_RESOURCE: containers cannot start"
        fix = ulimits_fix(_fit(u.hard_limits.get("nofile")), _fit(u.hard_limits.get("nproc")))
        return Check("ulimits", FAIL, detail + (f"; {notes}" if notes else ""), fix)
    if u.cap_sys_resource:
        detail = "CAP_SYS_RESOURCE: containers may raise any limit"
    else:
        detail = "container hard limits fit this host's: " + ", ".join(shown)
        if u.configured:
            detail += f" (default_ulimits in {u.source})"
    if notes:
        return Check("ulimits", WARN, f"{detail}; {notes}", "fix the containers.conf named")
    return Check("ulimits", OK, detail)


def _exceeds(wanted: int, allowed: int) -> bool:
    if allowed == UNLIMITED:
        return False
    return wanted == UNLIMITED or wanted > allowed


def _fit(hard: int | None) -> int:
    """A hard limit to suggest: this host's, within podman's default."""
    if hard is None or hard == UNLIMITED:
        return PODMAN_DEFAULT_ULIMIT
    return min(hard, PODMAN_DEFAULT_ULIMIT)


def _limit(value: int) -> str:
    return "unlimited" if value == UNLIMITED else str(value)


def check_criu(facts: HostFacts) -> Check:
    c = facts.criu
    if c.path is None:
        return Check("criu", FAIL, "no criu on PATH: the runtime needs it to checkpoint",
                     host.missing_criu_fix(facts.kernel))
    if not c.version:
        return Check("criu", FAIL, f"{c.path} --version failed: CRIU is unusable",
                     host.missing_criu_fix(facts.kernel))
    where = f"{c.version} ({c.path})"
    if c.check_returncode is None:
        return Check("criu", WARN, f"{where}, criu check did not finish: {c.check_output}",
                     "run `criu check` yourself, or warmctl doctor --probe")
    if c.check_returncode != 0:
        fix = diagnose(c.check_output, criu_version=c.version, kernel=facts.kernel)
        return Check("criu", FAIL,
                     f"{where}, criu check failed: {first_error_line(c.check_output)}",
                     fix or "see the output of `criu check`")
    # "Looks good." or "Looks good but some kernel features are missing ...".
    looks = [line.strip() for line in c.check_output.splitlines() if "Looks good" in line]
    summary = looks[0] if looks else first_error_line(c.check_output)
    return Check("criu", OK, f"{where}, criu check: {summary}")


def check_criu_kernel(facts: HostFacts) -> Check | None:
    """The CRIU/kernel pairs known to fail (host.CRIU_KERNEL_PAIRS)."""
    if not facts.criu.version:
        return None  # check_criu already fails
    advice = host.criu_kernel_advice(facts.criu.version, facts.kernel)
    if advice is not None:
        return Check("criu-kernel", FAIL, advice.problem, advice.fix)
    return Check("criu-kernel", OK,
                 f"CRIU {facts.criu.version} on kernel {facts.kernel}: no known incompatibility")


def check_criu_config(facts: HostFacts) -> Check | None:
    """How warmctl's CRIU options reach CRIU here (warmctl/criu_config.py): skip-in-flight at
    snapshot, tcp-close (unless --tcp-established) and auto-dedup at resume."""
    if facts.podman is None:
        return None
    what = ("snapshot skips connections not yet accepted (skip-in-flight); resume closes "
            "restored connections unless --tcp-established (tcp-close) and restores with "
            "auto-dedup")
    host_file = (f"; {criu_config.RUNC_DEFAULT} is read as well"
                 if facts.runc_criu_config else "")
    runtime = facts.podman.runtime
    if runtime == "crun":
        # crun loads libcriu, and libcriu runs the first criu on PATH as its service: the
        # wrapper's options reached CRIU under crun 1.21 (the Debian 13 test host: clones of
        # snapshots holding connections, which need tcp-close, restored).
        return Check("criu-config", OK, f"{what}: {criu_config.HOW} (crun's libcriu runs it)")
    if runtime != "runc":
        return Check("criu-config", WARN,
                     f"{what}, through the criu that runc or crun's libcriu runs: with "
                     f"{runtime} they may not reach CRIU, and snapshots of serving containers "
                     "can fail", USE_RUNC)
    return Check("criu-config", OK, f"{what}: {criu_config.HOW}{host_file}")


def check_capabilities(facts: HostFacts) -> Check | None:
    """CRIU reads each process's rlimits with prlimit(), which for a process of another user
    needs CAP_SYS_RESOURCE (HOST-NOTES: root in the project's VMs lacks it)."""
    if facts.cap_sys_resource is None or facts.cap_sys_resource:
        return None
    return Check("capability", WARN,
                 "no CAP_SYS_RESOURCE: only containers whose processes all run as root can be "
                 "checkpointed (CRIU cannot read another user's limits: Can't get rlimit)",
                 "run the container's processes as root (podman run --user root), or warmctl "
                 "where root has CAP_SYS_RESOURCE (outside a restricted VM or container)")


def check_catalogue(facts: HostFacts) -> Check:
    cat = facts.catalogue
    if cat.error:
        return Check("catalogue", FAIL, f"{cat.path}: {cat.error}",
                     "choose a catalogue you can read and write with --home or WARMCTL_HOME")
    if cat.refused:
        return Check("catalogue", FAIL, cat.refused,
                     "point --home or WARMCTL_HOME at warmctl's own directory")
    if cat.unusable:
        return Check("catalogue", FAIL, cat.unusable,
                     "remount it read-write" if cat.read_only else
                     "restore catalogue.db from a backup, or move the catalogue aside and "
                     "choose a new one with --home or WARMCTL_HOME")
    if cat.read_only and not cat.exists:
        return Check("catalogue", FAIL,
                     f"{cat.path} does not exist and cannot be made: read-only file system",
                     "choose a writable place with --home or WARMCTL_HOME")
    where = f"{cat.path} ({cat.fs_type or 'unknown filesystem'}, {format_size(cat.free_bytes)} free"
    if cat.largest_snapshot:
        where += f", largest snapshot {format_size(cat.largest_snapshot)}"
    where += ")" if cat.exists else "; not created yet, it will be on first use)"
    problems: list[str] = []
    fixes: list[str] = []
    if cat.read_only:
        problems.append("on a read-only file system: only list, show, verify, resume, push "
                        "and doctor work, every other command exits 6")
        fixes.append("remount it read-write")
    if cat.exists and cat.uid != facts.euid:
        problems.append(f"owned by uid {cat.uid}, not by you (uid {facts.euid})")
        fixes.append(f"chown {facts.euid} {cat.path}")
    if cat.exists and cat.mode != 0o700:
        problems.append(f"mode {cat.mode:04o}, not 0700: archives hold containers' memory")
        fixes.append(f"chmod 700 {cat.path}")
    if cat.fs_type in _UNSAFE_FS or cat.fs_type.startswith("fuse"):
        problems.append(f"on {cat.fs_type}, where SQLite's locking is not safe")
        fixes.append("put the catalogue on a local disk (--home or WARMCTL_HOME)")
    if cat.largest_snapshot > cat.free_bytes:
        problems.append("less free space than the largest snapshot")
        fixes.append("free space, or remove old snapshots (warmctl rm)")
    if problems:
        return Check("catalogue", WARN, f"{where}: {'; '.join(problems)}", "; ".join(fixes))
    return Check("catalogue", OK, where)


def run_checks(facts: HostFacts) -> list[Check]:
    """Every check, in the order a reader fixes things."""
    checks = (check_root, check_podman, check_runtime, check_cgroups, check_ulimits, check_criu,
              check_criu_kernel, check_criu_config, check_capabilities, check_catalogue)
    results = [check(facts) for check in checks]
    return [result for result in results if result is not None]


def snapshot_checks(facts: HostFacts, snapshot: Snapshot, image_id: str | None) -> list[Check]:
    """``--snapshot REF``: the host that recorded it against this one (warmctl.host.compare).
    Differences warn: they do not stop this host from checkpointing."""
    here = hostcompat.this_host(facts.podman, facts.criu.version)
    return [Check(f"host-{c.aspect}", OK if c.same else WARN, f"{snapshot.ref}: {c.detail}",
                  c.fix)
            for c in hostcompat.compare(snapshot, here, image_id)]


def host_access_check(catalogue: Catalogue, snapshot: Snapshot) -> Check:
    """``--snapshot REF``: the host access its container asks for (spec_policy.py); a warning
    for a pulled snapshot, which resume refuses without --allow-host-access."""
    from warmctl import spec_policy
    from warmctl.lifecycle.verify import from_registry

    try:
        with catalogue.hold_archive(snapshot) as held:
            access = spec_policy.archive_host_access(held.path)
    except IntegrityError as err:
        return Check("access", WARN, f"{snapshot.ref}: cannot read its spec: {err.message}",
                     f"warmctl verify {snapshot.ref}")
    if not access:
        return Check("access", OK, f"{snapshot.ref}: asks for no host access")
    detail = f"{snapshot.ref} asks for host access: {'; '.join(access)}"
    if from_registry(snapshot):
        return Check("access", WARN, detail,
                     "resume refuses it unless given --allow-host-access")
    return Check("access", OK, detail)


def can_checkpoint(checks: Sequence[Check]) -> bool:
    """Warnings do not stop checkpointing; failures do."""
    return all(check.status != FAIL for check in checks)


# --- probe ------------------------------------------------------------------------------------


# The probe's image is missing: the probe did not run, which says nothing about this host.
PROBE_IMAGE_CHECK = "probe-image"


def probe(podman: Podman, open_catalogue: Callable[[], Catalogue], image: str | None = None,
          *, clock: Callable[[], float] = time.monotonic) -> Check:
    """Run a tiny container, checkpoint --export it into the catalogue's tmp/, remove it,
    restore --import it, and check that it runs (and, for the test image, answers)."""
    if image is not None:
        if not podman.image_exists(image):
            return Check(PROBE_IMAGE_CHECK, FAIL, f"image {image} is not on this host",
                         "podman load (or podman import) it, or pass another --probe-image")
        command: tuple[str, ...] = ()  # its own default command
    elif podman.image_exists(PROBE_IMAGE):
        image, command = PROBE_IMAGE, PROBE_COMMAND
    else:
        return Check(PROBE_IMAGE_CHECK, FAIL,
                     f"no image to probe with ({PROBE_IMAGE} is not here)",
                     "pass --probe-image IMAGE: a local image whose default command keeps running")
    try:
        catalogue = open_catalogue()
    except WarmctlError as err:
        return Check("probe", FAIL, f"cannot open the catalogue: {err.message}", err.hint or "")
    name = f"warmctl-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    started = clock()
    try:
        with catalogue.new_temp_file() as temp:
            podman.run_detached(image, name=name, command=command)
            _require_running(podman, name, "right after it started")
            try:
                podman.checkpoint(name, temp.path)
            except CheckpointError as err:
                keep_criu_log(catalogue, err, "probe-dump")
                raise
            size = temp.path.stat().st_size
            podman.remove_container(name)
            try:
                podman.restore(temp.path, name=name)
            except CheckpointError as err:
                keep_criu_log(catalogue, err, "probe-restore")
                raise
            _require_running(podman, name, "after its restore")
            if command == PROBE_COMMAND:
                _require_answer(podman, name)
    except WarmctlError as err:
        return Check("probe", FAIL, err.message, err.hint or "")
    except OSError as exc:
        return Check("probe", FAIL, f"probe archive: {exc.strerror}",
                     "check the catalogue directory")
    finally:
        with contextlib.suppress(WarmctlError):
            podman.remove_container(name)
    return Check("probe", OK,
                 f"{image}: checkpoint --export, rm, restore --import"
                 f"{' and an HTTP answer' if command == PROBE_COMMAND else ''} in "
                 f"{clock() - started:.1f}s ({format_size(size)} archive)")


def _require_running(podman: Podman, name: str, when: str) -> None:
    info = podman.inspect_container(name)
    if info is None or not info.running:
        state = info.state if info is not None else "gone"
        raise WarmctlError(f"the probe container is {state} {when}",
                           hint="pass --probe-image with an image whose default command "
                                "keeps running")


def _require_answer(podman: Podman, name: str, attempts: int = 20) -> None:
    """The restored httpd must answer on its restored listening socket."""
    argv = ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]
    for _ in range(attempts):
        if PROBE_REPLY in podman.exec(name, argv, timeout=10).stdout:
            return
        time.sleep(0.1)
    raise WarmctlError("the restored probe container does not answer on its port")
