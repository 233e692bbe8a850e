"""The recording host against this one: what counts as a difference, how resume warns or
refuses, and doctor's rows."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes import REAL_ARCHIVE, FakePodman

from warmctl.archive import sha256_file
from warmctl.catalogue import Catalogue, Snapshot, SnapshotRecord
from warmctl.errors import ExitCode, HostError
from warmctl.host import compare as hostcompat
from warmctl.host import doctor
from warmctl.host import facts as host
from warmctl.host.compare import HostProfile, compare, needs_comparison, parse_cpu_flags
from warmctl.output import Progress
from warmctl.refs import Ref
from warmctl.snapshots import ResumeOptions, resume_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse2 avx avx2 avx512f
processor\t: 1
flags\t\t: fpu vme sse2 avx avx2 avx512f
"""
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd aes crc32\n"

RECORDED_HOST = {"podman": "4.3.1", "runtime": "runc", "runtime_version": "runc 1.1.5",
                 "criu": "4.2.1", "kernel": "6.18.44", "hostname": "warm-1"}
HERE = HostProfile(podman="4.3.1", runtime="runc", runtime_version="runc 1.1.5", criu="4.2.1",
                   kernel="6.18.44", hostname="cold-7", arch="x86_64",
                   cpu_flags=frozenset({"fpu", "vme", "sse2", "avx", "avx2", "avx512f", "new"}))


def make_snapshot(**changes: object) -> Snapshot:
    snap = Snapshot(
        name="mc", generation=1, created=datetime.now(UTC),
        archive_path="/x", size_bytes=1, sha256="0" * 64, compression="zstd",
        container_name="mc", container_id="cid", image_name="localhost/img:latest",
        image_id="iid", ports=[], labels={}, host=dict(RECORDED_HOST), criu_stats={},
        extra={"cpu": {"arch": "x86_64", "flags": "avx avx2 avx512f fpu sse2 vme"},
               "pulled": {"source": "r/mc"}},
    )
    return dataclasses.replace(snap, **changes)  # type: ignore[arg-type]


def differences(snapshot: Snapshot, here: HostProfile = HERE,
                image_id: str | None = "iid") -> dict[str, str]:
    return {c.aspect: c.detail for c in compare(snapshot, here, image_id) if not c.same}


def test_parse_cpu_flags() -> None:
    assert parse_cpu_flags(X86_CPUINFO) == {"fpu", "vme", "sse2", "avx", "avx2", "avx512f"}
    assert parse_cpu_flags(ARM_CPUINFO) == {"fp", "asimd", "aes", "crc32"}
    assert parse_cpu_flags("nothing here") == frozenset()


def test_cpu_record_is_sorted_flags_of_this_machine() -> None:
    record = hostcompat.cpu_record()
    flags = record["flags"].split()
    assert flags == sorted(flags) and record["arch"]


def test_same_host_in_all_that_matters() -> None:
    # Extra flags here, and another host name, are no difference.
    assert differences(make_snapshot()) == {}
    rows = compare(make_snapshot(), HERE, "iid")
    assert [c.aspect for c in rows] == ["cpu", "kernel", "criu", "podman", "runtime", "image"]
    assert rows[0].detail == "all 6 CPU flags of warm-1 are here"


def test_missing_cpu_flags_are_named() -> None:
    here = dataclasses.replace(HERE, cpu_flags=frozenset({"fpu", "vme", "sse2", "avx"}))
    found = differences(make_snapshot(), here)
    assert list(found) == ["cpu"]
    assert "lacks 2 flag(s) warm-1 had: avx2 avx512f" in found["cpu"]


def test_many_missing_flags_are_counted() -> None:
    recorded = {"arch": "x86_64", "flags": " ".join(f"f{i:02}" for i in range(20))}
    found = differences(make_snapshot(extra={"cpu": recorded}))
    assert "lacks 20 flag(s)" in found["cpu"] and "and 12 more" in found["cpu"]


def test_other_architecture() -> None:
    found = differences(make_snapshot(), dataclasses.replace(HERE, arch="aarch64"))
    assert found["cpu"] == "recorded on x86_64 (warm-1), this host is aarch64"


def test_versions_kernel_and_image() -> None:
    here = dataclasses.replace(HERE, kernel="6.1.0-18-amd64", criu="4.1", podman="4.9.3",
                               runtime="crun", runtime_version="crun 1.14")
    found = differences(make_snapshot(), here, image_id="other-id")
    assert found["kernel"] == "kernel 6.1.0-18-amd64 here, 6.18.44 on warm-1"
    assert found["criu"] == "CRIU 4.1 here, 4.2.1 on warm-1"
    assert found["podman"] == "podman 4.9.3 here, 4.3.1 on warm-1"
    assert found["runtime"] == "runtime crun 1.14 here, runc 1.1.5 on warm-1"
    assert found["image"].startswith("image localhost/img:latest is other-id here, iid on")
    assert differences(make_snapshot(), HERE, image_id=None)["image"] \
        == "image localhost/img:latest is not on this host"


def test_snapshots_of_older_warmctl_have_no_cpu_record() -> None:
    rows = compare(make_snapshot(extra={}), HERE, "iid")
    assert rows[0].same and "not recorded" in rows[0].detail


def test_which_snapshots_are_compared() -> None:
    assert needs_comparison(make_snapshot(), "warm-1")  # pulled
    local = make_snapshot(extra={})
    assert not needs_comparison(local, "warm-1")
    assert needs_comparison(local, "cold-7")  # recorded under another host name
    assert not needs_comparison(make_snapshot(extra={}, host={}), "cold-7")


# --- resume -----------------------------------------------------------------------------------


def publish_foreign(catalogue: Catalogue, tmp_path: Path, *, kernel: str) -> None:
    """A snapshot as pull records it: from host warm-1, whose kernel was ``kernel``."""
    temp = catalogue.new_temp_file()
    temp.path.write_bytes(REAL_ARCHIVE.read_bytes())
    host = {**RECORDED_HOST, "kernel": kernel, "criu": "4.2.1"}
    record = SnapshotRecord(
        name="mc", container_name="mc", container_id="cid", image_name="localhost/img:latest",
        image_id="iid", compression="zstd", host=host,
        extra={"cpu": hostcompat.cpu_record(), "pulled": {"source": "r/mc"}})
    catalogue.publish(temp, record, sha256=sha256_file(temp.path))


def test_resume_warns_about_each_difference(
    catalogue: Catalogue, fake_podman: FakePodman, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "kernel_release", lambda: "6.18.44")
    publish_foreign(catalogue, tmp_path, kernel="5.10.0")
    warnings: list[str] = []
    assert resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(), Progress(),
                           warn=warnings.append).container == "mc"
    # FakePodman reports podman 4.3.1 and runc 1.1.5 as the record says; only the kernel.
    assert warnings == ["mc@1: kernel 6.18.44 here, 5.10.0 on warm-1"]


def test_resume_strict_refuses_a_differing_host(
    catalogue: Catalogue, fake_podman: FakePodman, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "kernel_release", lambda: "6.18.44")
    publish_foreign(catalogue, tmp_path, kernel="5.10.0")
    with pytest.raises(HostError) as err:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(strict=True),
                        Progress())
    assert err.value.exit_code == ExitCode.ENVIRONMENT
    assert "mc@1 was recorded on warm-1, which differs from this host: kernel" \
        in err.value.message
    assert not any(call.startswith("restore") for call in fake_podman.calls)


def test_resume_strict_passes_a_matching_host(
    catalogue: Catalogue, fake_podman: FakePodman, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "kernel_release", lambda: "6.18.44")
    publish_foreign(catalogue, tmp_path, kernel="6.18.44")
    assert resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(strict=True),
                           Progress()).container == "mc"


def test_doctor_rows_for_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "kernel_release", lambda: "6.18.44")
    facts = doctor.HostFacts(
        euid=0, kernel="6.18.44", podman=FakePodman().host_versions(), podman_error="",
        criu=doctor.CriuFacts("/usr/sbin/criu", "4.1"), ulimits=doctor.UlimitFacts(),
        cgroup2_mounted=False, catalogue=doctor.CatalogueFacts(Path("/x")),
    )
    rows = {c.name: c for c in doctor.snapshot_checks(facts, make_snapshot(), "iid")}
    assert list(rows) == ["host-cpu", "host-kernel", "host-criu", "host-podman",
                          "host-runtime", "host-image"]
    assert rows["host-criu"].status == doctor.WARN
    assert rows["host-criu"].detail == "mc@1: CRIU 4.1 here, 4.2.1 on warm-1"
    assert rows["host-criu"].fix == "install CRIU 4.2.1 here"
    assert rows["host-kernel"].status == doctor.OK
    assert doctor.can_checkpoint(list(rows.values()))  # differences warn, never fail
