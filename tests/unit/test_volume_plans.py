"""warmctl.volumes: the cgroup freezer, what an archive's volumes are, and clone plans."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from fakes import FakePodman, plain_archive_bytes

from warmctl import archive, volumes
from warmctl.catalogue import Catalogue
from warmctl.errors import (
    CheckpointError,
    ConflictError,
    ExitCode,
    HostError,
    IntegrityError,
    NotFoundError,
    PodmanConflictError,
    UsageError,
)
from warmctl.output import Progress
from warmctl.podman import (
    CheckpointResult,
    ContainerInfo,
    Mount,
    RestoreResult,
    VolumeSettings,
)
from warmctl.refs import Ref
from warmctl.snapshots import ResumeOptions, SnapshotOptions, resume_snapshot, take_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")

# --- the freezer ------------------------------------------------------------------------------


def fake_proc(tmp_path: Path, cgroup_lines: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cgroup").write_text(cgroup_lines)
    return proc


def test_freezer_v1_freezes_and_thaws_once(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    state = root / "freezer" / "libpod_parent" / "libpod-abc" / "freezer.state"
    state.parent.mkdir(parents=True)
    state.write_text("THAWED\n")
    proc = fake_proc(tmp_path, "6:freezer:/libpod_parent/libpod-abc\n0::/\n")
    freezer = volumes.Freezer.of_process(42, proc=proc, cgroup_root=root)
    assert (freezer.control, freezer.version) == (state, 1)
    freezer.freeze()
    assert state.read_text() == "FROZEN"
    freezer.thaw()
    assert state.read_text() == "THAWED"
    state.write_text("FROZEN")  # a second thaw must not write: the freeze is over
    freezer.thaw()
    assert state.read_text() == "FROZEN"
    assert freezer.frozen_seconds >= 0


def test_freezer_v2_uses_cgroup_freeze(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    group = root / "machine" / "libpod-abc"
    group.mkdir(parents=True)
    (group / "cgroup.freeze").write_text("0")
    (group / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    proc = fake_proc(tmp_path, "0::/machine/libpod-abc\n")
    freezer = volumes.Freezer.of_process(42, proc=proc, cgroup_root=root)
    assert freezer.version == 2
    freezer.freeze()
    assert (group / "cgroup.freeze").read_text() == "1"
    freezer.thaw()
    assert (group / "cgroup.freeze").read_text() == "0"


def test_no_freezer_is_an_environment_error(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, "0::/gone\n")
    with pytest.raises(HostError) as caught:
        volumes.Freezer.of_process(42, proc=proc, cgroup_root=tmp_path / "cgroup")
    assert caught.value.exit_code == ExitCode.ENVIRONMENT
    assert "without --leave-running" in (caught.value.hint or "")


def test_a_stopping_snapshot_or_a_container_without_volumes_is_not_frozen() -> None:
    bound = ContainerInfo("id1", "web", "img", "iid", "running", False, pid=999999,
                          mounts=[Mount("bind", "", "/srv/web", "/web")])
    with volumes.captured_at_one_instant(bound, leave_running=True,
                                         progress=Progress()) as capture:
        pass  # pid 999999 has no cgroup: a freeze would have failed
    assert capture.record() == {"volumes": {
        "named": [], "bind_mounts": [{"source": "/srv/web", "destination": "/web"}]}}
    assert volumes.bind_mount_warnings(capture.record()) == [
        "bind mount /srv/web -> /web is a host path: its content is not in the snapshot"]
    named = ContainerInfo("id1", "db", "img", "iid", "running", False, pid=999999,
                          mounts=[Mount("volume", "dbdata", "/var/lib/x", "/data")])
    with volumes.captured_at_one_instant(named, leave_running=False,
                                         progress=Progress()) as capture:
        pass
    assert capture.record()["volumes"]["capture"] == "stopped"


# --- archives with volumes --------------------------------------------------------------------


def archive_with_volume(path: Path, *, volume: str = "dbdata", content: bytes = b"1\n2\n",
                        with_tar: bool = True) -> Path:
    """The real busybox checkpoint, its configuration naming a volume at /data and a bind
    mount at /shared, with volumes/VOLUME.tar holding ``content`` as ./log."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(plain_archive_bytes())) as source, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as copy:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == archive.CONFIG:
                config = json.loads(data or b"{}")
                config["namedVolumes"] = [{"volumeName": volume, "dest": "/data",
                                           "options": ["rw"]}]
                config["userVolumes"] = ["/data", "/shared"]
                data = json.dumps(config).encode()
            elif member.name == archive.SPEC:
                spec = json.loads(data or b"{}")
                spec["mounts"] = [*spec.get("mounts", []),
                                  {"destination": "/data", "type": "bind",
                                   "source": f"/var/lib/containers/storage/volumes/{volume}/_data"},
                                  {"destination": "/shared", "type": "bind", "source": "/srv/x"}]
                data = json.dumps(spec).encode()
            if data is None:
                copy.addfile(member)
            else:
                member.size = len(data)
                copy.addfile(member, io.BytesIO(data))
        if with_tar:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as volume_tar:
                info = tarfile.TarInfo("./log")
                info.size = len(content)
                volume_tar.addfile(info, io.BytesIO(content))
            header = tarfile.TarInfo(f"volumes/{volume}.tar")
            header.size = len(inner.getvalue())
            copy.addfile(header, io.BytesIO(inner.getvalue()))
    path.write_bytes(out.getvalue())
    return path


def test_summary_lists_volumes_with_sizes_and_bind_mounts(tmp_path: Path) -> None:
    summary = archive.summarize(archive_with_volume(tmp_path / "a.tar"))
    [volume] = summary.volumes
    assert volume["name"] == "dbdata" and volume["destination"] == "/data"
    assert volume["bytes"] > 0
    assert summary.bind_mounts == [{"source": "/srv/x", "destination": "/shared"}]
    without = archive.summarize(archive_with_volume(tmp_path / "b.tar", with_tar=False))
    assert without.volumes[0]["bytes"] is None


@dataclass
class VolumePodman(FakePodman):
    """FakePodman with volumes: name -> content imported, and their users. ``root``: a
    directory whose subdirectories stand for the volumes' mountpoints (when given)."""

    volumes: dict[str, bytes] = field(default_factory=dict)
    users: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, VolumeSettings] = field(default_factory=dict)
    root: Path | None = None
    volume_calls: list[str] = field(default_factory=list)

    def _mountpoint(self, name: str) -> Path:
        if self.root is None:
            return Path(f"/vols/{name}/_data")
        mountpoint = self.root / name
        mountpoint.mkdir(parents=True, exist_ok=True)
        return mountpoint

    def volume_mountpoint(self, name: str) -> Path | None:
        return self._mountpoint(name) if name in self.volumes else None

    def volume_users(self, name: str) -> list[str]:
        return self.users.get(name, [])

    def volume_settings(self, name: str) -> VolumeSettings | None:
        if name not in self.volumes:
            return None
        return self.settings.get(name, VolumeSettings())

    def create_volume(self, name: str, settings: VolumeSettings | None = None) -> Path:
        self.volume_calls.append(f"create {name}")
        if name in self.volumes:
            raise PodmanConflictError(f"volume {name} already exists")
        self.volumes[name] = b""
        if settings is not None:
            self.settings[name] = settings
        return self._mountpoint(name)

    def export_volume(self, name: str, dest: Path) -> None:
        self.volume_calls.append(f"export {name}")
        dest.write_bytes(self.volumes[name])

    def import_volume(self, name: str, tar: IO[bytes]) -> None:
        self.volume_calls.append(f"import {name}")
        self.volumes[name] = tar.read()

    def remove_volume(self, name: str) -> None:
        self.volume_calls.append(f"rm {name}")
        self.volumes.pop(name, None)


def plan(podman: VolumePodman, source: Path, target: str, mode: str | None = None,
         replacing: ContainerInfo | None = None) -> volumes.VolumePlan:
    return volumes.plan_for_restore(podman, source, target=target, source_container="db",
                                    mode=mode, replacing=replacing)


def test_a_clone_gets_new_volumes_filled_from_the_archive(tmp_path: Path) -> None:
    source = archive_with_volume(tmp_path / "a.tar", content=b"1\n2\n3\n")
    podman = VolumePodman(volumes={"dbdata": b"live"})
    made = plan(podman, source, "clone")
    assert [(u.archived, u.volume, u.content) for u in made.uses] == [
        ("dbdata", "clone-dbdata", "snapshot")]
    assert made.ignore_volumes and made.renames
    volumes.prepare(podman, made, source, Progress())
    with tarfile.open(fileobj=io.BytesIO(podman.volumes["clone-dbdata"])) as filled:
        assert filled.extractfile("./log").read() == b"1\n2\n3\n"  # type: ignore[union-attr]
    assert podman.volumes["dbdata"] == b"live"  # the source's, untouched

    config, spec = archive.configuration_files(source, within=1 << 26) or (b"", b"")
    config2, spec2 = made.edit_dumps(config, spec)
    assert json.loads(config2)["namedVolumes"][0]["volumeName"] == "clone-dbdata"
    mounts = {m["destination"]: m["source"] for m in json.loads(spec2)["mounts"]}
    assert mounts["/data"] == "/vols/clone-dbdata/_data"
    assert mounts["/shared"] == "/srv/x"

    volumes.undo(podman, made)
    assert "clone-dbdata" not in podman.volumes


def test_a_clone_refuses_a_volume_name_in_use(tmp_path: Path) -> None:
    source = archive_with_volume(tmp_path / "a.tar")
    podman = VolumePodman(volumes={"clone-dbdata": b""})
    with pytest.raises(ConflictError, match="volume clone-dbdata"):
        plan(podman, source, "clone")


def test_archive_without_the_volumes_content_is_an_integrity_error(tmp_path: Path) -> None:
    source = archive_with_volume(tmp_path / "a.tar", with_tar=False)
    podman = VolumePodman()
    made = plan(podman, source, "clone")
    with pytest.raises(IntegrityError, match=r"no volumes/dbdata\.tar"):
        volumes.prepare(podman, made, source, Progress())


def test_in_place_with_an_existing_volume_asks_for_a_choice(tmp_path: Path) -> None:
    source = archive_with_volume(tmp_path / "a.tar")
    podman = VolumePodman(volumes={"dbdata": b"now"})
    with pytest.raises(ConflictError) as caught:
        plan(podman, source, "db")
    assert caught.value.exit_code == ExitCode.CONFLICT
    assert "--volumes snapshot" in (caught.value.hint or "")
    assert "--volumes shared" in (caught.value.hint or "")

    shared = plan(podman, source, "db", "shared")
    assert shared.ignore_volumes and not shared.renames
    assert shared.uses[0].content == "current"

    restored = plan(podman, source, "db", "snapshot")
    assert restored.remove_first == ["dbdata"] and not restored.ignore_volumes
    volumes.save_before_removing(tmp_path, podman, restored, Progress())
    volumes.prepare(podman, restored, source, Progress())
    assert "dbdata" not in podman.volumes  # podman recreates it from the archive


def test_in_place_without_the_volume_lets_podman_restore_it(tmp_path: Path) -> None:
    made = plan(VolumePodman(), archive_with_volume(tmp_path / "a.tar"), "db")
    assert not (made.ignore_volumes or made.create or made.remove_first)


def test_snapshot_content_refuses_a_volume_another_container_uses(tmp_path: Path) -> None:
    source = archive_with_volume(tmp_path / "a.tar")
    podman = VolumePodman(volumes={"dbdata": b""}, users={"dbdata": ["other123", "db999"]})
    replaced = ContainerInfo("db999full", "db", "img", "iid", "exited", False)
    with pytest.raises(ConflictError, match="in use by container other123"):
        plan(podman, source, "db", "snapshot", replacing=replaced)
    podman.users["dbdata"] = ["db999"]
    assert plan(podman, source, "db", "snapshot", replacing=replaced).remove_first == ["dbdata"]


def test_shared_needs_the_volume(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        plan(VolumePodman(), archive_with_volume(tmp_path / "a.tar"), "clone", "shared")


def test_archive_without_volumes_needs_no_plan() -> None:
    from fakes import REAL_ARCHIVE

    made = volumes.plan_for_restore(VolumePodman(), REAL_ARCHIVE, target="other",
                                    source_container="x", mode="new", replacing=None)
    assert made.uses == [] and not made.ignore_volumes


# --- through resume -------------------------------------------------------------------------


class CloningPodman(VolumePodman):
    """Checkpoints write an archive with a volume; restores note what podman would see."""

    def __init__(self, tmp_path: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.archive = archive_with_volume(tmp_path / "with-volume.tar")
        self.restores: list[tuple[bool, list[str], dict[str, str]]] = []

    def checkpoint(self, container: str, export_to: Path, **options: Any) -> CheckpointResult:
        result = super().checkpoint(container, export_to, **options)
        export_to.write_bytes(self.archive.read_bytes())
        return result

    def restore(self, archive: Path, *, name: str, publish: Sequence[str] = (),
                tcp_established: bool = False, file_locks: bool = False,
                ignore_volumes: bool = False, criu_bin: Path | None = None) -> RestoreResult:
        with tarfile.open(fileobj=io.BytesIO(archive.read_bytes())) as first_read:
            config = json.loads(first_read.extractfile("config.dump").read())  # type: ignore[union-attr]
            spec = json.loads(first_read.extractfile("spec.dump").read())  # type: ignore[union-attr]
        self.restores.append((ignore_volumes,
                              [v["volumeName"] for v in config["namedVolumes"]],
                              {m["destination"]: m["source"] for m in spec["mounts"]}))
        # The feed answers each open anew: podman's own reads come next.
        return super().restore(archive, name=name, publish=publish)


def test_resume_under_another_name_clones_the_volumes(catalogue: Catalogue,
                                                      tmp_path: Path) -> None:
    podman = CloningPodman(tmp_path, volumes={"dbdata": b"live"})
    podman.add("db")
    take_snapshot(catalogue, podman, "db", "db", SnapshotOptions(compress="none"), Progress())
    resumed = resume_snapshot(catalogue, podman, Ref("db"), ResumeOptions(name="copy"),
                              Progress())
    assert resumed.volumes == [{"snapshot_volume": "dbdata", "volume": "copy-dbdata",
                                "destination": "/data", "content": "snapshot"}]
    ignore_volumes, named, mounts = podman.restores[0]
    assert ignore_volumes and named == ["copy-dbdata"]
    assert mounts["/data"] == "/vols/copy-dbdata/_data"
    assert podman.volumes["dbdata"] == b"live"
    assert podman.volumes["copy-dbdata"]  # filled from volumes/dbdata.tar

    podman.fail_restore = "Error: criu failed"
    with pytest.raises(CheckpointError):
        resume_snapshot(catalogue, podman, Ref("db"), ResumeOptions(name="other"), Progress())
    assert "other-dbdata" not in podman.volumes  # a failed restore leaves no volume behind


def test_replacing_an_earlier_clone_replaces_its_volume_too(tmp_path: Path) -> None:
    source = archive_with_volume(tmp_path / "a.tar")
    podman = VolumePodman(volumes={"clone-dbdata": b"old"},
                          users={"clone-dbdata": ["clone999full"]})
    earlier = ContainerInfo("clone999full", "clone", "img", "iid", "running", False)
    made = plan(podman, source, "clone", replacing=earlier)
    assert made.remove_first == ["clone-dbdata"]
    volumes.save_before_removing(tmp_path, podman, made, Progress())
    volumes.prepare(podman, made, source, Progress())
    assert podman.volumes["clone-dbdata"] != b"old"
    podman.users["clone-dbdata"] = ["clone999full", "someone-else"]
    with pytest.raises(ConflictError):
        plan(podman, source, "clone", replacing=earlier)


def test_the_guard_thaws_when_warmctl_is_gone(tmp_path: Path) -> None:
    state = tmp_path / "freezer.state"
    state.write_text("FROZEN")
    subprocess.run([sys.executable, "-c", volumes._GUARD_SCRIPT, str(state), "THAWED"],
                   input="", text=True, check=True, timeout=30)  # the pipe closed unannounced
    assert state.read_text() == "THAWED"
    state.write_text("FROZEN")
    subprocess.run([sys.executable, "-c", volumes._GUARD_SCRIPT, str(state), "THAWED"],
                   input="thawed", text=True, check=True, timeout=30)
    assert state.read_text() == "FROZEN"  # warmctl thawed (and then someone else froze it)


def test_guarded_freeze_ends_thawed(tmp_path: Path) -> None:
    state = tmp_path / "freezer.state"
    state.write_text("THAWED")
    freezer = volumes.Freezer(state, 1)
    with freezer.guarded():
        freezer.freeze()
        assert state.read_text() == "FROZEN"
    assert state.read_text() == "THAWED"


def test_an_unknown_volumes_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--volumes must be one of new, shared, snapshot"):
        ResumeOptions(volumes="bogus")
