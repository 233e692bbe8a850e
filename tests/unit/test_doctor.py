"""doctor's checks, the failure diagnoses and the CRIU preflight, driven by recorded output.

The files under data/ were recorded on a project host (kernel 6.18.44, podman 4.3.1, runc):
CRIU 3.17.1 (Debian 12's) run from an unpacked .deb for `criu check` and for a real
`podman container checkpoint`, and a fake criu reporting 3.17. Nothing here needs root or
podman: podman is a fake subclass of the adapter's ABC.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fakes import FakePodman

from warmctl import criu_config, snapshots
from warmctl.catalogue import Catalogue, SnapshotRecord
from warmctl.cli.main import main
from warmctl.errors import CheckpointError, ExitCode, HostError, PodmanError
from warmctl.host import doctor
from warmctl.host import facts as host
from warmctl.host.diagnose import criu_errors, diagnose, ulimits_fix
from warmctl.host.doctor import (
    FAIL,
    OK,
    WARN,
    CatalogueFacts,
    Check,
    CriuFacts,
    HostFacts,
    UlimitFacts,
)
from warmctl.output import Output, Progress
from warmctl.podman import (
    CommandResult,
    HostVersions,
    Podman,
    PodmanCLI,
    containers_conf_files,
)
from warmctl.refs import Ref

DATA = Path(__file__).parent / "data"
KERNEL = "6.18.44-fc-v509"
CRIU_317_CHECK = (DATA / "criu-3.17-check-kernel-6.18.txt").read_text()
CRIU_317_DUMP_LOG = DATA / "criu-3.17-dump-kernel-6.18.log"
PODMAN_317_STDERR = (DATA / "podman-checkpoint-criu-3.17.stderr").read_text()
PODMAN_FAKE_317_STDERR = (DATA / "podman-checkpoint-fake-criu-3.17.stderr").read_text()

RUNC_VERSIONS = HostVersions(
    podman="4.3.1", runtime="runc", runtime_version="runc version 1.1.5+ds1", kernel=KERNEL,
    hostname="vm", cgroup_manager="cgroupfs", cgroup_version="v1",
    runtime_details="runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev",
)
# Debian 12's crun, as `crun --version` prints it: built without CRIU.
CRUN_DEBIAN = ("crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\n"
               "rundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF "
               "+YAJL")
CRUN_VERSIONS = replace(RUNC_VERSIONS, runtime="crun", runtime_version="crun version 1.8.1",
                        runtime_details=CRUN_DEBIAN)
# From this host's /proc/self/status: every capability but CAP_SYS_RESOURCE (bit 24).
STATUS_NO_SYS_RESOURCE = "Name:\tcat\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\n"
STATUS_ALL_CAPS = "Name:\tcat\nCapEff:\t000001ffffffffff\n"
MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
35 27 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 27 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 27 0:40 / /srv/nfs rw,relatime - nfs4 server:/export rw,vers=4.2
41 27 0:41 / /home/a\\040b rw,relatime - fuse.sshfs host:/ rw
42 40 0:42 / /srv/nfs rw,relatime - tmpfs tmpfs rw
"""


def facts(**changes: object) -> HostFacts:
    """The provisioned host's facts, as doctor gathers them there; tests change one thing."""
    base = HostFacts(
        euid=0,
        kernel=KERNEL,
        podman=RUNC_VERSIONS,
        podman_error="",
        criu=CriuFacts("/usr/local/sbin/criu", "4.2.1", 0, "Looks good."),
        ulimits=UlimitFacts(
            configured={"nofile": (1024, 20000), "nproc": (4096, 4096)},
            source="/etc/containers/containers.conf.d/50-warmctl.conf",
            hard_limits={"nofile": 20000, "nproc": 96365},
        ),
        cgroup2_mounted=True,
        catalogue=CatalogueFacts(Path("/root/.local/share/warmctl"), exists=True, uid=0,
                                 mode=0o700, fs_type="ext4", free_bytes=70 << 30,
                                 largest_snapshot=1 << 30),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def probe_host(*, images: set[str] | None = None, exec_stdout: str = doctor.PROBE_REPLY,
               exits_at_once: bool = False) -> FakePodman:
    """podman with the probe image, whose probe container answers as it should."""
    return FakePodman(images={doctor.PROBE_IMAGE} if images is None else images,
                      exec_stdout=exec_stdout, exits_at_once=exits_at_once)


def write_criu(bin_dir: Path, body: str) -> Path:
    """A fake criu script, to put first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    criu = bin_dir / "criu"
    criu.write_text(f"#!/bin/sh\n{body}\n")
    criu.chmod(0o755)
    return criu


# --- the CRIU/kernel table --------------------------------------------------------------------


@pytest.mark.parametrize(("criu", "kernel", "breaks", "needed"), [
    ("3.17.1", KERNEL, "vDSO, socket options", "4.2"),
    ("3.17", "6.16.0", "vDSO, socket options", "4.2"),
    ("4.1.1", KERNEL, "socket options", "4.2"),
    ("4.0", "6.13.2", "vDSO", "4.1"),
    ("4.1", "6.15.9", None, None),
    ("3.17", "6.12.40", None, None),
    ("4.2.1", KERNEL, None, None),
    ("", KERNEL, None, None),
])
def test_criu_kernel_advice_names_what_breaks_and_the_release_that_fixes_all(
    criu: str, kernel: str, breaks: str | None, needed: str | None
) -> None:
    advice = host.criu_kernel_advice(criu, kernel)
    if breaks is None:
        assert advice is None
        return
    assert advice is not None
    assert advice.problem == f"CRIU {criu} cannot checkpoint on kernel {kernel} ({breaks})"
    assert advice.fix == f"install CRIU >= {needed} (scripts/provision-host does)"


@pytest.mark.parametrize(("kernel", "fix"), [
    (KERNEL, "install CRIU >= 4.2 (scripts/provision-host does)"),
    ("6.14.1", "install CRIU >= 4.1 (scripts/provision-host does)"),
    ("6.1.0-18-amd64", "install CRIU (apt-get install criu, or scripts/provision-host)"),
])
def test_missing_criu_fix_names_the_release_this_kernel_needs(kernel: str, fix: str) -> None:
    assert host.missing_criu_fix(kernel) == fix


# --- diagnoses ------------------------------------------------------------------------------

RLIMIT_CRUN = "Error: OCI runtime error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted"
RLIMIT_RUNC = ("Error: OCI runtime error: runc: runc create failed: unable to start container "
               "process: error during container init: error setting rlimit type 7: operation "
               "not permitted")


@pytest.mark.parametrize(("stderr", "log", "expected"), [
    ("", CRIU_317_CHECK, "CRIU < 4.1 cannot checkpoint on kernel >= 6.13 (vDSO): "
                         "install CRIU >= 4.1"),
    ("", "(00.010817) Error (criu/sk-inet.c:211): sockets: Can't get 1:16 opt: Operation not "
         "supported", "(socket options): install CRIU >= 4.2"),
    ("", "Error (criu/mount-v2.c:903): mnt-v2: Failed to make mount 526 slave: Operation not "
         "permitted", "install CRIU >= 4.1.1"),
    ("", "Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using "
         "--tcp-established option.", "--no-tcp-established refuses them"),
    (RLIMIT_CRUN, "", 'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]'),
    (RLIMIT_RUNC, "", "containers.conf.d/50-ulimits.conf"),
    ("Error: OCI runtime error: crun: cgroups in hybrid mode not supported, drop all "
     "controllers from cgroupv2", "", 'runtime = "runc"'),
    ("Error: configured runtime does not support checkpoint/restore", "", 'runtime = "runc"'),
    ("Error: rootlessport listen tcp 127.0.0.1:8080: bind: address already in use", "",
     "the port is taken"),
    ('Error: creating container storage: the container name "mc" is already in use by 1e2f. '
     "You have to remove that container to be able to reuse that name: that name is already "
     "in use", "", "the container name is taken"),
    # Recorded: restore --import of a checkpoint whose image was removed from this host.
    ('Error: initializing source docker://localhost/wdoc-tmpimg:latest: pinging container '
     'registry localhost: Get "https://localhost/v2/": dial tcp 127.0.0.1:443: connect: '
     "connection refused", "", "image must exist on this host: podman load"),
    ("Error: localhost/foo: image not known", "", "podman load (or podman import)"),
    ("Error: checkpointing a container requires root", "", "run warmctl as root"),
    (PODMAN_FAKE_317_STDERR, "", "install CRIU (apt-get install criu"),
    ('runc checkpoint failed: exec: "criu": executable file not found in $PATH', "",
     "install CRIU"),
    # Recorded in the Debian 13 test host: crun 1.21 with libcriu.so.2 moved aside.
    ("Error: `/usr/bin/crun checkpoint --image-path /var/lib/containers/storage/overlay-"
     "containers/d525/userdata/checkpoint ...` failed: exit status 1\n"
     "could not load `libcriu.so.2`", "", "apt-get install libcriu2"),
])
def test_diagnose_maps_each_known_failure_to_its_fix(stderr: str, log: str,
                                                     expected: str) -> None:
    hint = diagnose(stderr, log)
    assert hint is not None and expected in hint
    assert "\n" not in hint


def test_diagnose_names_the_release_this_host_needs_when_told_its_versions() -> None:
    # The vDSO symptom alone is fixed by 4.1, but 3.17 on 6.18 also breaks on sockets.
    hint = diagnose("", CRIU_317_CHECK, criu_version="3.17.1", kernel=KERNEL)
    assert hint == (f"CRIU 3.17.1 cannot checkpoint on kernel {KERNEL} (vDSO, socket options): "
                    "install CRIU >= 4.2 (scripts/provision-host does)")
    hint = diagnose(PODMAN_FAKE_317_STDERR, criu_version="3.17", kernel=KERNEL)
    assert hint is not None and "install CRIU >= 4.2" in hint


def test_diagnose_prefers_criu_log_over_podman_stderr_and_knows_unknowns() -> None:
    hint = diagnose("Error: bind: address already in use", CRIU_317_CHECK)
    assert hint is not None and "vDSO" in hint
    assert diagnose(PODMAN_317_STDERR) is None  # runc's own words name no cause
    assert diagnose("Error: something new") is None


def test_ulimits_fix_stays_within_the_hosts_hard_limits() -> None:
    assert 'default_ulimits = ["nofile=1024:20000", "nproc=512:512"]' in ulimits_fix(20000, 512)


def test_criu_errors_are_read_from_a_recorded_dump_log() -> None:
    errors = criu_errors(CRIU_317_DUMP_LOG.read_text().splitlines())
    assert errors == [
        "vdso: Unexpected rt vDSO area bounds",
        "vdso: Failed to fill self vdso symtable",
        "kerndat_vdso_fill_symtable failed when initializing kerndat.",
    ]


# --- failures explained where they happen -----------------------------------------------------


def test_podman_errors_carry_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = PodmanCLI(program="podman")
    monkeypatch.setattr(cli, "_run", lambda *args, **kw: CommandResult(
        ["podman", *args], 126, "", RLIMIT_CRUN))
    with pytest.raises(PodmanError) as caught:
        cli.run_detached("localhost/x", name="x")
    assert caught.value.hint is not None and "default_ulimits" in caught.value.hint
    assert "setrlimit" in caught.value.message

    monkeypatch.setattr(cli, "_run", lambda *args, **kw: CommandResult(
        ["podman", *args], 125, "", PODMAN_317_STDERR))
    with pytest.raises(CheckpointError) as checkpoint:
        cli.checkpoint("c", Path("/nonexistent/x.tar"))
    assert checkpoint.value.criu_log is not None
    assert checkpoint.value.criu_log.name == "dump.log"


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path / "home").open()


@pytest.fixture
def criu_317(monkeypatch: pytest.MonkeyPatch) -> None:
    """This host, as far as warmctl can tell, runs CRIU 3.17.1 on kernel 6.18."""
    monkeypatch.setattr(host, "criu_path", lambda: "/usr/sbin/criu")
    monkeypatch.setattr(host, "criu_version", lambda: "3.17.1")
    monkeypatch.setattr(host, "kernel_release", lambda: KERNEL)


@pytest.mark.usefixtures("criu_317")
def test_a_failed_checkpoint_keeps_criu_log_names_its_error_and_the_fix(
    catalogue: Catalogue,
) -> None:
    err = CheckpointError("checkpoint of c failed: exit status 1", stderr=PODMAN_317_STDERR,
                          criu_log=CRIU_317_DUMP_LOG)
    snapshots.keep_criu_log(catalogue, err, "c-dump")
    kept = list(catalogue.logs_dir.iterdir())
    assert len(kept) == 1 and kept[0].name.endswith("-c-dump.log")
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert err.criu_log == kept[0]
    assert err.message == ("checkpoint of c failed: exit status 1; CRIU: vdso: Unexpected rt "
                           f"vDSO area bounds; log: {kept[0]}")
    assert err.hint is not None and err.hint.endswith("install CRIU >= 4.2 "
                                                      "(scripts/provision-host does)")


@pytest.mark.usefixtures("criu_317")
def test_a_failure_without_criu_log_still_gets_the_fix(catalogue: Catalogue) -> None:
    err = CheckpointError("checkpoint of c failed", stderr=PODMAN_FAKE_317_STDERR)
    snapshots.keep_criu_log(catalogue, err, "c-dump")
    assert err.hint is not None and "install CRIU >= 4.2" in err.hint
    assert list(catalogue.logs_dir.iterdir()) == []


# --- the preflight ----------------------------------------------------------------------------


def test_preflight_refuses_a_criu_too_old_for_the_kernel(criu_317: None) -> None:
    with pytest.raises(HostError) as caught:
        snapshots.require_usable_criu()
    assert caught.value.exit_code == ExitCode.ENVIRONMENT
    assert caught.value.message == (f"CRIU 3.17.1 cannot checkpoint on kernel {KERNEL} "
                                    "(vDSO, socket options)")
    assert caught.value.hint == "install CRIU >= 4.2 (scripts/provision-host does)"


def test_preflight_refuses_a_missing_or_broken_criu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "kernel_release", lambda: KERNEL)
    monkeypatch.setattr(host, "criu_path", lambda: None)
    with pytest.raises(HostError, match="CRIU is not installed") as missing:
        snapshots.require_usable_criu()
    assert missing.value.hint == "install CRIU >= 4.2 (scripts/provision-host does)"
    monkeypatch.setattr(host, "criu_path", lambda: "/usr/sbin/criu")
    monkeypatch.setattr(host, "criu_version", lambda: "")
    with pytest.raises(HostError, match="--version failed"):
        snapshots.require_usable_criu()
    monkeypatch.setattr(host, "criu_version", lambda: "4.2.1")
    assert snapshots.require_usable_criu() == "4.2.1"


@pytest.mark.usefixtures("criu_317")
def test_snapshot_and_resume_stop_before_touching_a_container(catalogue: Catalogue) -> None:
    podman = FakePodman()
    podman.add("c")
    with pytest.raises(HostError, match="cannot checkpoint on kernel"):
        snapshots.take_snapshot(catalogue, podman, "c", "c", snapshots.SnapshotOptions(),
                                Progress())
    assert podman.calls == []
    assert catalogue.list_snapshots() == []

    with catalogue.new_temp_file() as temp:
        temp.path.write_bytes(b"archive")
        catalogue.publish(temp, SnapshotRecord("c", "c", "c", "img", "i", "zstd"), sha256="0")
    with pytest.raises(HostError, match="cannot checkpoint on kernel"):
        snapshots.resume_snapshot(catalogue, podman, Ref("c", None), snapshots.ResumeOptions(),
                                  Progress())
    assert podman.calls == []


# --- gathering facts --------------------------------------------------------------------------


def test_criu_facts_from_a_working_criu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_criu(tmp_path / "bin", 'case "$1" in --version) echo "Version: 4.2.1";; '
                                 'check) echo "Looks good.";; esac')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert doctor.gather_criu_facts() == CriuFacts(str(tmp_path / "bin" / "criu"), "4.2.1", 0,
                                                   "Looks good.")


def test_criu_facts_from_a_recorded_failing_check(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_criu(tmp_path / "bin", 'case "$1" in --version) echo "Version: 3.17.1";; '
                                 f'check) cat "{DATA / "criu-3.17-check-kernel-6.18.txt"}" >&2; '
                                 "exit 1;; esac")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    criu = doctor.gather_criu_facts()
    assert (criu.version, criu.check_returncode) == ("3.17.1", 1)
    assert criu.check_output == CRIU_317_CHECK.strip()


def test_a_slow_criu_check_is_cut_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_criu(tmp_path / "bin", 'case "$1" in --version) echo "Version: 4.2.1";; '
                                 "check) exec sleep 5;; esac")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setattr(doctor, "CRIU_CHECK_TIMEOUT", 0.2)
    criu = doctor.gather_criu_facts()
    assert criu.check_returncode is None and "did not finish" in criu.check_output
    check = doctor.check_criu(facts(criu=criu))
    assert check.status == WARN


def test_criu_facts_without_criu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "criu_path", lambda: None)
    assert doctor.gather_criu_facts() == CriuFacts()


def test_gather_facts_reports_an_unusable_podman(tmp_path: Path) -> None:
    gathered = doctor.gather_facts(FakePodman(versions=None), tmp_path / "home", environ={})
    assert gathered.podman is None
    assert gathered.podman_error == "podman not found on PATH (install podman)"
    assert gathered.euid == os.geteuid()
    checks = {c.name: c for c in doctor.run_checks(gathered)}
    assert checks["podman"].status == FAIL
    assert "runtime" not in checks and "cgroups" not in checks


def test_containers_conf_files_in_podmans_order(tmp_path: Path) -> None:
    share, etc = tmp_path / "share", tmp_path / "etc"
    (etc / "containers.conf.d").mkdir(parents=True)
    share.mkdir()
    for path in (share / "containers.conf", etc / "containers.conf",
                 etc / "containers.conf.d" / "90-b.conf", etc / "containers.conf.d" / "10-a.conf",
                 etc / "containers.conf.d" / "README"):
        path.write_text("")
    assert containers_conf_files({}, share=share, etc=etc) == [
        share / "containers.conf", etc / "containers.conf",
        etc / "containers.conf.d" / "10-a.conf", etc / "containers.conf.d" / "90-b.conf",
    ]
    only = tmp_path / "mine.conf"
    assert containers_conf_files({"CONTAINERS_CONF": str(only)}, share=share,
                                 etc=etc) == [only]


def test_configured_ulimits_last_file_that_sets_them_wins() -> None:
    files = [
        ("/usr/share/containers/containers.conf", "[containers]\n#default_ulimits = []\n"),
        ("a.conf", '[containers]\ndefault_ulimits = ["nofile=1048576:1048576"]\n'),
        ("b.conf", '[containers]\ndefault_ulimits = ["nofile=1024:20000", "nproc=4096"]\n'),
        ("c.conf", '[engine]\nruntime = "runc"\n'),
        ("d.conf", "[containers\n"),
    ]
    limits, source, problems = doctor.configured_ulimits(files)
    assert limits == {"nofile": (1024, 20000), "nproc": (4096, 4096)}
    assert source == "b.conf"
    assert len(problems) == 1 and problems[0].startswith("d.conf is not valid TOML")


@pytest.mark.parametrize(("entry", "parsed"), [
    ("nofile=1024:2048", ("nofile", (1024, 2048))),
    ("NPROC=4096", ("nproc", (4096, 4096))),
    ("memlock=-1:-1", ("memlock", (doctor.UNLIMITED, doctor.UNLIMITED))),
    ("nofile", None),
    ("nofile=lots", None),
    ("=1:2", None),
])
def test_parse_ulimit(entry: str, parsed: tuple[str, tuple[int, int]] | None) -> None:
    assert doctor.parse_ulimit(entry) == parsed


def test_ulimit_facts_read_the_configured_files_and_this_process(tmp_path: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:2048", "core=0:0"]\n')
    u = doctor.gather_ulimit_facts({"CONTAINERS_CONF": str(conf)})
    assert u.configured == {"nofile": (1024, 2048), "core": (0, 0)}
    assert u.source == str(conf)
    assert set(u.hard_limits) == {"nofile", "nproc", "core"}
    missing = doctor.gather_ulimit_facts({"CONTAINERS_CONF": str(tmp_path / "none.conf")})
    assert missing.problems and "cannot read" in missing.problems[0]


@pytest.mark.parametrize(("status", "has"), [
    (STATUS_NO_SYS_RESOURCE, False), (STATUS_ALL_CAPS, True), ("Name:\tx\n", False),
])
def test_cap_sys_resource_from_proc_status(status: str, has: bool) -> None:
    assert doctor.has_capability(status, doctor.CAP_SYS_RESOURCE) is has


@pytest.mark.parametrize(("path", "fs_type"), [
    ("/root/.local/share/warmctl", "ext4"),
    ("/srv/nfs/warmctl", "tmpfs"),  # the tmpfs mounted over the NFS export hides it
    ("/home/a b/warmctl", "fuse.sshfs"),
    ("/sys/fs/cgroup/unified", "cgroup2"),
])
def test_fs_type_from_mountinfo(path: str, fs_type: str) -> None:
    assert doctor.fs_type_of(Path(path), MOUNTINFO) == fs_type


def test_catalogue_facts_of_a_catalogue_not_yet_created(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    cat = doctor.gather_catalogue_facts(home, doctor._read_text(Path("/proc/self/mountinfo")))
    assert not cat.exists and cat.free_bytes > 0 and not cat.error
    assert not home.exists()  # doctor creates nothing


def test_catalogue_facts_of_an_existing_catalogue(catalogue: Catalogue) -> None:
    (catalogue.archives_dir / "a@1.tar").write_bytes(b"x" * 3000)
    (catalogue.archives_dir / "a@2.tar").write_bytes(b"x" * 1000)
    os.chmod(catalogue.home, 0o755)
    cat = doctor.gather_catalogue_facts(catalogue.home, MOUNTINFO)
    assert cat.exists and cat.uid == os.geteuid() and cat.mode == 0o755
    assert cat.largest_snapshot == 3000 and not cat.refused


def test_a_directory_that_is_not_a_catalogue_fails_the_catalogue_check(tmp_path: Path) -> None:
    """Every command refuses such a --home (exit 2, nothing swept): doctor says so too."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "important.txt").write_text("keep me")
    cat = doctor.gather_catalogue_facts(tmp_path, MOUNTINFO)
    assert "is not a warmctl catalogue" in cat.refused
    check = doctor.check_catalogue(facts(catalogue=cat))
    assert check.status == doctor.FAIL and "not a warmctl catalogue" in check.detail
    assert (tmp_path / "tmp" / "important.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]  # doctor created nothing


# --- checks ---------------------------------------------------------------------------------


def test_the_provisioned_host_passes_every_check() -> None:
    checks = doctor.run_checks(facts())
    assert [c.name for c in checks] == ["root", "podman", "runtime", "cgroups", "ulimits",
                                        "criu", "criu-kernel", "criu-config", "catalogue"]
    assert all(c.status == OK and not c.fix for c in checks), checks
    assert doctor.can_checkpoint(checks)
    by_name = {c.name: c for c in checks}
    assert by_name["criu"].detail == "4.2.1 (/usr/local/sbin/criu), criu check: Looks good."
    assert by_name["cgroups"].detail == "cgroup v1 (hybrid), cgroupfs manager"
    assert "nofile 20000 <= 20000, nproc 4096 <= 96365" in by_name["ulimits"].detail


def test_not_root_fails() -> None:
    check = doctor.check_root(facts(euid=1000))
    assert check.status == FAIL and "uid 1000" in check.detail and "root" in check.fix


def test_podman_missing_fails() -> None:
    check = doctor.check_podman(facts(podman=None, podman_error="podman not found on PATH"))
    assert check == Check("podman", FAIL, "podman not found on PATH",
                          "install podman (apt-get install podman) or run scripts/provision-host")
    assert doctor.check_runtime(facts(podman=None)) is None
    assert doctor.check_cgroups(facts(podman=None)) is None


@pytest.mark.parametrize(("versions", "status", "words"), [
    (RUNC_VERSIONS, OK, "checkpoints with CRIU"),
    (replace(CRUN_VERSIONS, runtime_details=CRUN_DEBIAN + " +CRIU"), OK, "built with CRIU"),
    (CRUN_VERSIONS, FAIL, "built without CRIU"),
    (replace(CRUN_VERSIONS, runtime_details="crun version 0.9"), WARN, "cannot tell"),
    (replace(RUNC_VERSIONS, runtime="runsc", runtime_version="runsc version 2024"), FAIL,
     "podman cannot checkpoint with it"),
])
def test_runtime_can_or_cannot_checkpoint(versions: HostVersions, status: str,
                                          words: str) -> None:
    check = doctor.check_runtime(facts(podman=versions))
    assert check is not None and check.status == status and words in check.detail
    assert (check.fix == "") == (status == OK)


def test_criu_config_says_how_the_connection_options_reach_criu() -> None:
    check = doctor.check_criu_config(facts())
    assert check is not None and check.status == OK
    for option in ("skip-in-flight", "tcp-close", "auto-dedup", "CRIU_CONFIG_FILE"):
        assert option in check.detail
    assert "is read as well" not in check.detail
    kept = doctor.check_criu_config(facts(runc_criu_config=True))
    assert kept is not None and kept.status == OK
    assert f"{criu_config.RUNC_DEFAULT} is read as well" in kept.detail
    crun = doctor.check_criu_config(facts(podman=CRUN_VERSIONS))
    assert crun is not None and crun.status == OK and "crun's libcriu runs it" in crun.detail
    kata = doctor.check_criu_config(facts(podman=replace(RUNC_VERSIONS,
                                                          runtime="kata-runtime")))
    assert kata is not None and kata.status == WARN and "may not reach CRIU" in kata.detail
    assert doctor.check_criu_config(facts(podman=None)) is None


def test_capabilities_warn_without_cap_sys_resource() -> None:
    assert doctor.check_capabilities(facts()) is None
    assert doctor.check_capabilities(facts(cap_sys_resource=None)) is None
    check = doctor.check_capabilities(facts(cap_sys_resource=False))
    assert check is not None and check.status == WARN and "run as root" in check.detail
    # The project's VMs: root without bit 24.
    assert host.has_cap_sys_resource("CapEff:\t000001fffeffffff\n") is False
    assert host.has_cap_sys_resource("CapEff:\t000001ffffffffff\n") is True
    assert host.has_cap_sys_resource("Name: x\n") is None


# Debian 13's crun, as the test host's `crun --version` printed it.
CRUN_121 = replace(CRUN_VERSIONS, runtime_version="crun version 1.21",
                   runtime_details=CRUN_DEBIAN.replace("1.8.1", "1.21").replace(
                       "+EBPF", "+EBPF +CRIU"))


@pytest.mark.parametrize(("versions", "cgroup2", "controllers", "status"), [
    (CRUN_VERSIONS, True, "", FAIL),  # crun 1.8 refused hybrid mode on a project machine
    (CRUN_121, True, "", OK),  # 1.21 ran there (the Debian 13 test host)
    (CRUN_121, True, "memory pids", FAIL),  # crun's own condition
    (CRUN_VERSIONS, False, "", OK),  # pure v1
    (replace(CRUN_VERSIONS, cgroup_version="v2"), True, "", OK),
    (RUNC_VERSIONS, True, "memory", OK),
])
def test_crun_on_hybrid_cgroups_fails(versions: HostVersions, cgroup2: bool, controllers: str,
                                      status: str) -> None:
    check = doctor.check_cgroups(facts(podman=versions, cgroup2_mounted=cgroup2,
                                       cgroup2_controllers=controllers))
    assert check is not None and check.status == status
    if status == FAIL:
        assert 'runtime = "runc"' in check.fix


def test_podmans_default_ulimits_fail_without_cap_sys_resource() -> None:
    u = UlimitFacts(hard_limits={"nofile": 20000, "nproc": 96365})
    check = doctor.check_ulimits(facts(ulimits=u))
    assert check.status == FAIL
    assert "nofile hard limit 1048576 (podman's default) exceeds this host's 20000" in check.detail
    assert 'default_ulimits = ["nofile=1024:20000", "nproc=4096:96365"]' in check.fix
    assert doctor.check_ulimits(facts(ulimits=replace(u, cap_sys_resource=True))).status == OK


@pytest.mark.parametrize(("configured", "hard", "status"), [
    ({"nofile": (1024, 1024)}, {"nofile": 1024, "nproc": doctor.UNLIMITED}, OK),
    ({"nofile": (1024, doctor.UNLIMITED)}, {"nofile": 4096, "nproc": doctor.UNLIMITED}, FAIL),
    ({"core": (0, doctor.UNLIMITED)}, {"core": doctor.UNLIMITED, "nofile": 1 << 20,
                                       "nproc": 1 << 22}, OK),
    ({"nproc": (4096, 8192)}, {"nofile": 1 << 20, "nproc": 4096}, FAIL),
])
def test_configured_ulimits_against_hard_limits(
    configured: dict[str, tuple[int, int]], hard: dict[str, int], status: str
) -> None:
    u = UlimitFacts(configured=configured, source="x.conf", hard_limits=hard)
    assert doctor.check_ulimits(facts(ulimits=u)).status == status


def test_unreadable_containers_conf_warns() -> None:
    u = replace(facts().ulimits, problems=["x.conf is not valid TOML: bad"])
    check = doctor.check_ulimits(facts(ulimits=u))
    assert check.status == WARN and "x.conf is not valid TOML" in check.detail


def test_criu_missing_or_unusable_fails_with_the_release_to_install() -> None:
    missing = doctor.check_criu(facts(criu=CriuFacts()))
    assert missing.status == FAIL and missing.fix.startswith("install CRIU >= 4.2")
    broken = doctor.check_criu(facts(criu=CriuFacts("/usr/sbin/criu")))
    assert broken.status == FAIL and "--version failed" in broken.detail
    assert doctor.check_criu_kernel(facts(criu=CriuFacts())) is None


def test_a_failing_criu_check_is_explained() -> None:
    check = doctor.check_criu(facts(criu=CriuFacts("/usr/sbin/criu", "3.17.1", 1,
                                                   CRIU_317_CHECK)))
    assert check.status == FAIL
    assert check.detail == ("3.17.1 (/usr/sbin/criu), criu check failed: vdso: Unexpected rt "
                            "vDSO area bounds")
    assert check.fix.endswith("install CRIU >= 4.2 (scripts/provision-host does)")
    unknown = doctor.check_criu(facts(criu=CriuFacts("/c", "4.2.1", 1, "Error (x.c:1): odd")))
    assert unknown.status == FAIL and unknown.fix == "see the output of `criu check`"


def test_criu_check_with_missing_features_is_ok() -> None:
    output = ("Warn  (criu/cr-check.c:1230): Dirty tracking is OFF.\nLooks good but some kernel "
              "features are missing\nwhich, depending on your process tree, may cause\ndump "
              "or restore failure.")
    check = doctor.check_criu(facts(criu=CriuFacts("/c", "4.2.1", 0, output)))
    assert check.status == OK
    assert check.detail.endswith("criu check: Looks good but some kernel features are missing")


def test_criu_too_old_for_the_kernel_fails() -> None:
    check = doctor.check_criu_kernel(facts(criu=CriuFacts("/c", "4.1.1", 0, "Looks good.")))
    assert check == Check("criu-kernel", FAIL,
                          f"CRIU 4.1.1 cannot checkpoint on kernel {KERNEL} (socket options)",
                          "install CRIU >= 4.2 (scripts/provision-host does)")


@pytest.mark.parametrize(("changes", "status", "words"), [
    ({}, OK, "(ext4, 70 GiB free, largest snapshot 1 GiB)"),
    ({"exists": False, "largest_snapshot": 0}, OK, "not created yet"),
    ({"mode": 0o755}, WARN, "chmod 700"),
    ({"uid": 1000}, WARN, "chown 0"),
    ({"fs_type": "nfs4"}, WARN, "SQLite's locking is not safe"),
    ({"fs_type": "fuse.sshfs"}, WARN, "local disk"),
    ({"free_bytes": 1 << 29}, WARN, "less free space than the largest snapshot"),
    ({"error": "cannot inspect /x: Permission denied"}, FAIL, "Permission denied"),
])
def test_catalogue_directory(changes: dict[str, Any], status: str, words: str) -> None:
    check = doctor.check_catalogue(facts(catalogue=replace(facts().catalogue, **changes)))
    assert check.status == status
    assert words in check.detail + " " + check.fix


def test_warnings_do_not_stop_checkpointing() -> None:
    assert doctor.can_checkpoint([Check("a", OK, ""), Check("b", WARN, "", "x")])
    assert not doctor.can_checkpoint([Check("a", OK, ""), Check("b", FAIL, "", "x")])
    assert Check("b", WARN, "d").to_dict() == {"name": "b", "status": "warn", "detail": "d",
                                               "fix": None}


# --- probe ------------------------------------------------------------------------------------


def test_probe_checkpoints_and_restores_the_test_image(catalogue: Catalogue) -> None:
    podman = probe_host()
    check = doctor.probe(podman, lambda: catalogue)
    assert check.status == OK, check
    assert check.detail.startswith(f"{doctor.PROBE_IMAGE}: checkpoint --export, rm, restore "
                                   "--import and an HTTP answer")
    name = podman.calls[1].split()[1]  # exec NAME COMMAND...
    assert podman.calls[0] == f"run {doctor.PROBE_IMAGE} {' '.join(doctor.PROBE_COMMAND)}"
    assert f"checkpoint {name} compress=zstd" in podman.calls
    assert f"restore {name}" in podman.calls
    assert podman.containers == {}
    assert list(catalogue.tmp_dir.iterdir()) == []


def test_probe_with_a_given_image_runs_its_default_command(catalogue: Catalogue) -> None:
    podman = probe_host(images={"localhost/mine"})
    check = doctor.probe(podman, lambda: catalogue, "localhost/mine")
    assert check.status == OK and podman.calls[0] == "run localhost/mine"
    assert not any(call.startswith("exec") for call in podman.calls)


@pytest.mark.usefixtures("criu_317")
def test_probe_failure_keeps_criu_log_and_names_the_fix(catalogue: Catalogue) -> None:
    podman = probe_host()
    podman.fail_checkpoint = CheckpointError("checkpoint of p failed: exit status 1",
                                              stderr=PODMAN_317_STDERR,
                                              criu_log=CRIU_317_DUMP_LOG)
    check = doctor.probe(podman, lambda: catalogue)
    assert check.status == FAIL
    assert "CRIU: vdso: Unexpected rt vDSO area bounds; log: " in check.detail
    assert check.fix.endswith("install CRIU >= 4.2 (scripts/provision-host does)")
    assert len(list(catalogue.logs_dir.iterdir())) == 1
    assert podman.containers == {}


def test_probe_without_an_image_says_which_to_pass(catalogue: Catalogue) -> None:
    check = doctor.probe(probe_host(images=set()), lambda: catalogue)
    assert check.status == FAIL and "--probe-image" in check.fix
    check = doctor.probe(probe_host(), lambda: catalogue, "localhost/absent")
    assert check.status == FAIL and "not on this host" in check.detail


def test_probe_container_that_does_not_stay_up(catalogue: Catalogue) -> None:
    podman = probe_host(exits_at_once=True)
    check = doctor.probe(podman, lambda: catalogue)
    assert check.status == FAIL and "exited right after it started" in check.detail
    assert podman.containers == {}


def test_probe_container_that_does_not_answer_after_restore(
    catalogue: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("warmctl.host.doctor.time.sleep", lambda _seconds: None)
    podman = probe_host(exec_stdout="")
    check = doctor.probe(podman, lambda: catalogue)
    assert check.status == FAIL and "does not answer" in check.detail


# --- the command ------------------------------------------------------------------------------


def run_doctor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
               tmp_path: Path, gathered: HostFacts, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(doctor, "gather_facts", lambda podman, home: gathered)
    monkeypatch.setenv("NO_COLOR", "1")
    code = main(["--home", str(tmp_path / "home"), "doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_doctor_json_on_a_good_host(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_doctor(monkeypatch, capsys, tmp_path, facts(), "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]][:2] == ["root", "podman"]
    assert set(data["checks"][0]) == {"name", "status", "detail", "fix"}
    assert not (tmp_path / "home").exists()  # without --probe, nothing is created


def test_doctor_exits_6_and_names_the_fix(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    bad = facts(criu=CriuFacts("/usr/sbin/criu", "3.17.1", 1, CRIU_317_CHECK))
    code, out, err = run_doctor(monkeypatch, capsys, tmp_path, bad)
    assert code == ExitCode.ENVIRONMENT
    lines = out.splitlines()
    assert lines[0] == "ok    root          running as root"
    assert (f"fail  criu-kernel   CRIU 3.17.1 cannot checkpoint on kernel {KERNEL} (vDSO, socket "
            "options) -> fix: install CRIU >= 4.2 (scripts/provision-host does)") in lines
    assert err.startswith("warmctl: error: checkpointing cannot work here: criu, criu-kernel "
                          "failed (")
    assert "install CRIU >= 4.2" in err and err.count("\n") == 1


def test_doctor_quiet_prints_only_problems(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    mixed = facts(catalogue=replace(facts().catalogue, mode=0o755))
    code, out, _ = run_doctor(monkeypatch, capsys, tmp_path, mixed, "-q")
    assert code == 0
    assert out.splitlines() == [
        "warn  catalogue   /root/.local/share/warmctl (ext4, 70 GiB free, largest snapshot "
        "1 GiB): mode 0755, not 0700: archives hold containers' memory -> fix: chmod 700 "
        "/root/.local/share/warmctl"
    ]


def test_doctor_probe_image_implies_probe(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    seen: list[str | None] = []

    def fake_probe(podman: Podman, open_catalogue: object, image: str | None) -> Check:
        seen.append(image)
        return Check("probe", FAIL, "restore failed", "do something")

    monkeypatch.setattr(doctor, "probe", fake_probe)
    code, out, _ = run_doctor(monkeypatch, capsys, tmp_path, facts(), "--probe-image", "img")
    assert code == ExitCode.ENVIRONMENT and seen == ["img"]
    assert out.splitlines()[-1] == "fail  probe         restore failed -> fix: do something"


def test_status_lines_are_not_read_as_markup(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    Output().statuses([("fail", "cgroups", '[engine] runtime = "runc"'), ("ok", "a", "[b]")])
    assert capsys.readouterr().out == ('fail  cgroups   [engine] runtime = "runc"\n'
                                       "ok    a         [b]\n")


def test_crun_without_libcriu_fails_with_the_package_to_install() -> None:
    check = doctor.check_runtime(facts(podman=CRUN_121, libcriu=False))
    assert check is not None and check.status == FAIL
    assert "libcriu.so.2" in check.detail and "apt-get install libcriu2" in check.fix
    with_it = doctor.check_runtime(facts(podman=CRUN_121, libcriu=True))
    assert with_it is not None and with_it.status == OK and "libcriu.so.2" in with_it.detail
