"""A failed resume never costs a volume: what ``--volumes snapshot`` (and ``--replace`` of a
clone) does to the volumes it replaces, in order, with a fake podman (volumes.py, the resume
part of snapshots.py). The real podman's side is tests/integration/test_volumes.py."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from interrupts import _when_waiting
from test_volume_plans import CloningPodman, archive_with_volume

from warmctl import volumes
from warmctl.catalogue import Catalogue
from warmctl.errors import (
    CheckpointError,
    DiskIOError,
    IntegrityError,
    Interrupted,
    PodmanError,
    TimedOut,
)
from warmctl.output import Progress
from warmctl.podman import RestoreResult, VolumeSettings
from warmctl.refs import Ref
from warmctl.snapshots import ResumeOptions, SnapshotOptions, resume_snapshot, take_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")

NEWER = b"the volume's newer content"
LABELS = {"app": "db"}


class RestoringPodman(CloningPodman):
    """podman's restore as it treats named volumes: without --ignore-volumes it creates each
    volume the configuration names (refusing one that exists) and fills it from the archive,
    before CRIU runs (and may fail: ``fail_restore``)."""

    def restore(self, archive: Path, *, name: str, publish: Sequence[str] = (),
                tcp_established: bool = False, file_locks: bool = False,
                ignore_volumes: bool = False, criu_bin: Path | None = None) -> RestoreResult:
        if not ignore_volumes:
            with tarfile.open(fileobj=io.BytesIO(archive.read_bytes())) as whole:
                config = json.loads(whole.extractfile("config.dump").read())  # type: ignore[union-attr]
            for volume in config["namedVolumes"]:
                if volume["volumeName"] in self.volumes:
                    raise PodmanError(f"volume with name {volume['volumeName']} already exists")
                self.volumes[volume["volumeName"]] = b"from the snapshot"
        return super().restore(archive, name=name, publish=publish,
                               ignore_volumes=ignore_volumes)


def snapshot_then_newer_volume(catalogue: Catalogue, tmp_path: Path) -> RestoringPodman:
    """A snapshot "db" of container db with volume dbdata; then the container is gone and
    the volume holds newer content than the snapshot's."""
    podman = RestoringPodman(tmp_path, volumes={"dbdata": b"at the snapshot"},
                             root=tmp_path / "mounts")
    podman.add("db")
    take_snapshot(catalogue, podman, "db", "db", SnapshotOptions(compress="none"), Progress())
    del podman.containers["db"]
    podman.volumes["dbdata"] = NEWER
    podman.settings["dbdata"] = VolumeSettings(labels=LABELS, options={"o": "uid=5"})
    (podman.root / "dbdata").mkdir(parents=True, exist_ok=True)  # type: ignore[operator]
    os.chmod(podman.root / "dbdata", 0o750)  # type: ignore[operator]
    return podman


def resume_replacing(catalogue: Catalogue, podman: RestoringPodman) -> None:
    resume_snapshot(catalogue, podman, Ref("db"), ResumeOptions(volumes="snapshot"), Progress())


def saved_files(catalogue: Catalogue) -> list[str]:
    directory = catalogue.home / volumes.SAVED_DIR
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def assert_as_it_was(podman: RestoringPodman) -> None:
    assert podman.volumes["dbdata"] == NEWER
    assert podman.settings["dbdata"] == VolumeSettings(labels=LABELS, options={"o": "uid=5"})
    assert (podman.root / "dbdata").stat().st_mode & 0o777 == 0o750  # type: ignore[operator]


def damage_near_the_end(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3000] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_archive_is_found_before_any_volume_is_touched(
        catalogue: Catalogue, tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    damage_near_the_end(catalogue.get(Ref("db")).archive)
    with pytest.raises(IntegrityError) as caught:
        resume_replacing(catalogue, podman)
    assert "does not match the recorded" in caught.value.message
    assert "nothing was removed: volume dbdata is as it was" in caught.value.message
    assert podman.volume_calls == []  # not even exported: the digest came first
    assert_as_it_was(podman)


def test_an_archive_without_the_volumes_content_removes_nothing(
        catalogue: Catalogue, tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    podman.archive = archive_with_volume(tmp_path / "no-tar.tar", with_tar=False)
    podman.add("db2")
    take_snapshot(catalogue, podman, "db2", "db", SnapshotOptions(compress="none"), Progress())
    del podman.containers["db2"]
    with pytest.raises(IntegrityError) as caught:
        resume_snapshot(catalogue, podman, Ref("db"),
                        ResumeOptions(volumes="snapshot", name="db"), Progress())
    assert caught.value.message == ("the snapshot names volume dbdata but its archive holds no "
                                    "volumes/dbdata.tar; nothing was removed: volume dbdata "
                                    "is as it was")
    assert podman.volume_calls == []
    assert_as_it_was(podman)


def test_a_failed_restore_puts_the_volume_back_as_it_was(catalogue: Catalogue,
                                                         tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    podman.fail_restore = "Error: criu failed"
    with pytest.raises(CheckpointError) as caught:
        resume_replacing(catalogue, podman)
    assert "volume dbdata is as it was (put back from its copy)" in caught.value.message
    # Saved before it was removed; podman's volume (the snapshot's) removed before the put-back.
    assert podman.volume_calls == ["export dbdata", "rm dbdata", "rm dbdata",
                                   "create dbdata", "import dbdata"]
    assert_as_it_was(podman)
    assert saved_files(catalogue) == []


def test_a_restore_that_succeeds_deletes_the_saved_copy(catalogue: Catalogue,
                                                        tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    resume_replacing(catalogue, podman)
    assert podman.volumes["dbdata"] == b"from the snapshot"
    assert saved_files(catalogue) == []


def test_ctrl_c_while_the_volume_is_removed_waits_for_it_then_puts_it_back(
        catalogue: Catalogue, tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    remove = podman.remove_volume
    main = threading.main_thread().ident
    assert main is not None
    pressed: list[str] = []

    def remove_while_interrupted(name: str) -> None:
        if not pressed:  # the first removal: the resume's own
            pressed.append(name)
            _when_waiting()
            signal.pthread_kill(main, signal.SIGINT)
        remove(name)

    podman.remove_volume = remove_while_interrupted  # type: ignore[method-assign]
    with pytest.raises(Interrupted) as caught:
        resume_replacing(catalogue, podman)
    assert caught.value.message == ("interrupted; volume dbdata is as it was (put back from "
                                    "its copy)")
    assert "restore db" not in podman.calls  # podman was never asked to restore
    assert_as_it_was(podman)
    assert saved_files(catalogue) == []


def test_a_copy_left_by_a_killed_resume_is_put_back_by_the_next_resume(
        catalogue: Catalogue, tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    plan = volumes.VolumePlan(remove_first=["dbdata"])
    volumes.save_before_removing(catalogue.home, podman, plan, Progress())
    volumes.prepare(podman, plan, Path("unused"), Progress())
    [copy] = plan.saved
    copy.release()  # as kill -9: the files stay, the lock goes
    assert "dbdata" not in podman.volumes
    [settings, tar] = saved_files(catalogue)
    assert tar.startswith("dbdata@") and tar.endswith(".tar") and settings.endswith(".json")
    assert (catalogue.home / volumes.SAVED_DIR / tar).stat().st_mode & 0o777 == 0o600

    said: list[str] = []
    podman.fail_restore = "Error: criu failed"  # what the next resume does matters not here
    with pytest.raises(CheckpointError):
        resume_snapshot(catalogue, podman, Ref("db"), ResumeOptions(name="other"),
                        Progress(), warn=said.append)
    assert [m for m in said if m.startswith("volume dbdata was missing: put back from ")]
    assert_as_it_was(podman)
    assert saved_files(catalogue) == []


def test_a_left_copy_whose_volume_exists_is_named_and_kept(catalogue: Catalogue,
                                                          tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    plan = volumes.VolumePlan(remove_first=["dbdata"])
    volumes.save_before_removing(catalogue.home, podman, plan, Progress())
    plan.saved[0].release()
    said: list[str] = []
    volumes.put_back_left_copies(catalogue.home, podman, said.append)
    [message] = said
    path = plan.saved[0].path
    assert f"{path} holds volume dbdata's content" in message
    assert f"podman volume import dbdata {path}" in message
    assert podman.volumes["dbdata"] == NEWER
    assert len(saved_files(catalogue)) == 2


def test_a_running_resumes_copy_is_left_alone(catalogue: Catalogue, tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    plan = volumes.VolumePlan(remove_first=["dbdata"])
    volumes.save_before_removing(catalogue.home, podman, plan, Progress())
    volumes.prepare(podman, plan, Path("unused"), Progress())  # removed: podman restores next
    said: list[str] = []
    volumes.put_back_left_copies(catalogue.home, podman, said.append)  # another warmctl
    assert said == [] and "dbdata" not in podman.volumes
    volumes.done(plan)
    assert saved_files(catalogue) == []


def test_a_copy_that_cannot_be_saved_removes_nothing(catalogue: Catalogue,
                                                     tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)

    def full_disk(name: str, dest: Path) -> None:
        raise PodmanError("podman volume export dbdata failed: write: no space left on device")

    podman.export_volume = full_disk  # type: ignore[method-assign]
    with pytest.raises(DiskIOError) as caught:
        resume_replacing(catalogue, podman)
    assert "cannot save volume dbdata's content before replacing it" in caught.value.message
    assert "volume dbdata is as it was (nothing was removed)" in caught.value.message
    assert_as_it_was(podman)
    assert saved_files(catalogue) == []


def test_replacing_a_clone_puts_its_volume_back_after_a_failure(catalogue: Catalogue,
                                                                tmp_path: Path) -> None:
    podman = RestoringPodman(tmp_path, volumes={"dbdata": b"live"}, root=tmp_path / "mounts")
    podman.add("db")
    take_snapshot(catalogue, podman, "db", "db", SnapshotOptions(compress="none"),
                  Progress())
    clone = podman.add("copy", running=False)
    podman.volumes["copy-dbdata"] = b"the clone's own"
    podman.users["copy-dbdata"] = [clone.id]
    podman.fail_restore = "Error: criu failed"

    def gone_with_its_container(name_or_id: str, *, force: bool = True) -> Any:
        podman.users.pop("copy-dbdata", None)
        return RestoringPodman.remove_container(podman, name_or_id, force=force)

    podman.remove_container = gone_with_its_container  # type: ignore[method-assign]
    with pytest.raises(CheckpointError) as caught:
        resume_snapshot(catalogue, podman, Ref("db"),
                        ResumeOptions(name="copy", replace=True), Progress())
    assert "volume copy-dbdata is as it was (put back from its copy)" in caught.value.message
    assert podman.volumes["copy-dbdata"] == b"the clone's own"
    assert saved_files(catalogue) == []


def test_a_volume_podman_made_for_a_failed_restore_is_removed(catalogue: Catalogue,
                                                               tmp_path: Path) -> None:
    """Under the source's name, with the volume missing, podman makes it from the snapshot:
    after a failure it goes, so that the next resume finds things as they were (and does not
    ask whether to replace a volume the user never had)."""
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    del podman.volumes["dbdata"]
    podman.fail_restore = "Error: criu failed"
    with pytest.raises(CheckpointError):
        resume_snapshot(catalogue, podman, Ref("db"), ResumeOptions(), Progress())
    assert "dbdata" not in podman.volumes
    assert podman.volume_calls == ["rm dbdata"]
    assert saved_files(catalogue) == []


def test_a_left_copy_is_not_put_back_while_a_running_resume_has_removed_its_volume(
        catalogue: Catalogue, tmp_path: Path) -> None:
    podman = snapshot_then_newer_volume(catalogue, tmp_path)
    older = volumes.VolumePlan(remove_first=["dbdata"])
    volumes.save_before_removing(catalogue.home, podman, older, Progress())
    older.saved[0].release()  # killed long ago
    running = volumes.VolumePlan(remove_first=["dbdata"])
    volumes.save_before_removing(catalogue.home, podman, running, Progress())
    volumes.prepare(podman, running, Path("unused"), Progress())  # podman restores next
    said: list[str] = []
    volumes.put_back_left_copies(catalogue.home, podman, said.append)
    assert said == [] and "dbdata" not in podman.volumes
    assert len(saved_files(catalogue)) == 4


class LatePodman(RestoringPodman):
    """Its restore reaches the point where podman's process would start only once
    ``released`` is set: a time limit passes before podman ever runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.released = threading.Event()

    def restore(self, archive: Path, **options: Any) -> RestoreResult:
        self.released.wait(30)
        return super().restore(archive, **options)


def test_a_time_limit_before_podman_started_puts_the_volume_back(
        catalogue: Catalogue, tmp_path: Path) -> None:
    late = LatePodman(tmp_path, volumes={"dbdata": b"at the snapshot"}, root=tmp_path / "m")
    late.add("db")
    take_snapshot(catalogue, late, "db", "db", SnapshotOptions(compress="none"), Progress())
    del late.containers["db"]
    late.volumes["dbdata"] = NEWER
    try:
        with pytest.raises(TimedOut) as caught:
            resume_snapshot(catalogue, late, Ref("db"),
                            ResumeOptions(volumes="snapshot", time_limit=0.05), Progress())
    finally:
        late.released.set()
    assert "podman had not started it" in caught.value.message
    assert "volume dbdata is as it was (put back from its copy)" in caught.value.message
    assert late.volumes["dbdata"] == NEWER
    assert saved_files(catalogue) == []
