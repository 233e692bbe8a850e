"""snapshot and resume logic against a fake podman: what is recorded, when podman is called,
what is left behind on failure."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakePodman, plain_archive_bytes, tar_member_names

from warmctl.archive import detect_compression
from warmctl.catalogue import Catalogue
from warmctl.errors import (
    CheckpointError,
    ConflictError,
    DiskIOError,
    ExitCode,
    HostError,
    IntegrityError,
    NotFoundError,
    WarmctlError,
)
from warmctl.host import facts as host
from warmctl.output import Progress
from warmctl.podman import CheckpointResult, HostVersions
from warmctl.refs import Ref
from warmctl.snapshots import (
    ResumeOptions,
    SnapshotOptions,
    parse_labels,
    resume_snapshot,
    take_snapshot,
)

pytestmark = pytest.mark.usefixtures("usable_criu")


def snap(cat: Catalogue, podman: FakePodman, container: str = "mc", name: str = "mc",
         **options: object) -> str:
    return take_snapshot(cat, podman, container, name, SnapshotOptions(**options),  # type: ignore[arg-type]
                         Progress()).ref


def test_zstd_snapshot_is_compressed_by_warmctl(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc", ports=["127.0.0.1:11211:11211/tcp"])
    assert snap(catalogue, fake_podman, labels={"tier": "cache"}) == "mc@1"
    assert fake_podman.calls[-1] == "checkpoint id0001 compress=none"
    record = catalogue.get(Ref("mc"))
    assert detect_compression(record.archive) == "zstd"
    assert record.extra["plain_bytes"] == len(plain_archive_bytes())
    assert record.labels == {"tier": "cache"}
    assert record.ports == ["127.0.0.1:11211:11211/tcp"]
    assert record.host["criu"] == "4.2.1" and record.criu_stats["frozen_time"] == 1000
    assert list(catalogue.tmp_dir.iterdir()) == []


class CheckpointWatchingPodman(FakePodman):
    """A podman whose checkpoint notes whether `podman info` ran alongside it."""

    def __init__(self) -> None:
        super().__init__()
        self.info_calls = 0
        self.info_called = threading.Event()
        self.info_beside_checkpoint = False

    def host_versions(self) -> HostVersions:
        self.info_calls += 1
        self.info_called.set()
        return super().host_versions()

    def checkpoint(self, container: str, export_to: Path, **options: Any) -> CheckpointResult:
        # A `podman info` started with the checkpoint would come now; it must not.
        self.info_called.clear()
        self.info_beside_checkpoint = self.info_called.wait(timeout=0.3)
        return super().checkpoint(container, export_to, **options)


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_podman_info_does_not_run_alongside_the_checkpoint(
    catalogue: Catalogue, compress: str
) -> None:
    podman = CheckpointWatchingPodman()
    podman.add("mc")
    snap(catalogue, podman, compress=compress)
    assert podman.info_calls == 1 and not podman.info_beside_checkpoint
    assert catalogue.get(Ref("mc")).host["podman"] == "4.3.1"


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_resume_hands_podman_the_plain_tar(
    catalogue: Catalogue, fake_podman: FakePodman, compress: str
) -> None:
    fake_podman.add("mc")
    snap(catalogue, fake_podman, compress=compress, leave_running=True)
    resumed = resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"),
                              Progress())
    assert resumed.container == "copy" and resumed.criu_stats == {"restore_time": 10}
    assert fake_podman.restored_from == [plain_archive_bytes()]
    assert list(catalogue.tmp_dir.iterdir()) == []


def test_generations_and_a_missing_or_stopped_container(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc")
    assert [snap(catalogue, fake_podman, leave_running=True) for _ in range(2)] == \
        ["mc@1", "mc@2"]
    with pytest.raises(NotFoundError):
        snap(catalogue, fake_podman, container="nope")
    fake_podman.add("stopped", running=False)
    with pytest.raises(WarmctlError, match="not running") as info:
        snap(catalogue, fake_podman, container="stopped", name="s")
    assert info.value.exit_code == ExitCode.FAILURE


def test_failed_checkpoint_records_nothing(catalogue: Catalogue, fake_podman: FakePodman) -> None:
    fake_podman.add("mc")
    fake_podman.fail_checkpoint = "Error: criu failed: type NOTIFY errno 0"
    with pytest.raises(CheckpointError) as info:
        snap(catalogue, fake_podman)
    assert info.value.exit_code == ExitCode.PODMAN_FAILED
    assert catalogue.list_snapshots() == []
    assert list(catalogue.tmp_dir.iterdir()) == []
    assert list(catalogue.archives_dir.iterdir()) == []



class DyingOnFailurePodman(FakePodman):
    """A failed --leave-running checkpoint after which the container is found exited: CRIU
    interrupted each process's system call, and one that does not restart it ends (trixie's
    busybox sleep, measured: exit 0 right after CRIU gave up on /dev/kvm)."""

    def checkpoint(self, container: str, export_to: Path, **options: Any) -> CheckpointResult:
        info = self.inspect_container(container)
        assert info is not None
        self.containers[info.name] = dataclasses.replace(info, state="exited")
        raise CheckpointError("criu failed", stderr="Error: criu failed: type NOTIFY errno 0")


def test_a_failed_leave_running_checkpoint_says_when_the_container_is_left_exited(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc")
    fake_podman.fail_checkpoint = "Error: criu failed: type NOTIFY errno 0"
    with pytest.raises(CheckpointError) as kept:
        snap(catalogue, fake_podman, leave_running=True)
    assert "podman left" not in kept.value.message  # it still runs: nothing to add

    dying = DyingOnFailurePodman()
    dying.add("mc")
    with pytest.raises(CheckpointError) as stopped:
        snap(catalogue, dying, leave_running=True)
    assert "podman left the container exited, not running" in stopped.value.message
    assert stopped.value.hint is not None and "podman start mc" in stopped.value.hint
    assert catalogue.list_snapshots() == []


CRUN_WITH_CRIU = HostVersions("5.4.2", "crun", "crun version 1.21", "6.18.0", "testhost",
                              runtime_details="crun version 1.21\n+SYSTEMD +CAP +CRIU +YAJL")


def test_crun_without_libcriu_is_refused_before_the_container_is_touched(
        catalogue: Catalogue, fake_podman: FakePodman, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "libcriu_installed", lambda: False)
    fake_podman.add("mc")
    fake_podman.versions = CRUN_WITH_CRIU
    with pytest.raises(HostError) as info:
        snap(catalogue, fake_podman)
    assert info.value.exit_code == ExitCode.ENVIRONMENT
    assert "libcriu.so.2" in info.value.message and "libcriu2" in (info.value.hint or "")
    assert fake_podman.containers["mc"].running
    assert catalogue.list_snapshots() == []
    # With libcriu, crun checkpoints (as it did in the Debian 13 test host).
    monkeypatch.setattr(host, "libcriu_installed", lambda: True)
    assert snap(catalogue, fake_podman) == "mc@1"


def test_a_source_holding_an_unrecorded_checkpoint_is_refused_naming_how_to_bring_it_back(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    # Such a checkpoint is what a stopping snapshot whose export failed leaves: the memory may
    # be in podman's storage only, and `podman start` or --replace would lose it.
    fake_podman.add("looper")
    snap(catalogue, fake_podman, container="looper", name="looper")  # stops it
    with pytest.raises(ConflictError) as info:
        resume_snapshot(catalogue, fake_podman, Ref("looper"), ResumeOptions(), Progress())
    assert "its memory may be in podman's storage only" in info.value.message
    assert info.value.hint is not None
    assert info.value.hint.startswith("bring it back warm with: podman container restore "
                                      "looper, then record it with: warmctl snapshot looper")


def test_a_stopped_source_whose_checkpoint_storage_does_not_show_is_replaced_only_when_asked(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    """Without the checkpoint in podman's storage to compare (this fake keeps none), resume
    cannot tell the checkpoint is the snapshot's: the container is not its to remove."""
    source = fake_podman.add("looper")
    snap(catalogue, fake_podman, container="looper", name="looper")  # stops it
    with pytest.raises(ConflictError, match="no snapshot in the catalogue recorded"):
        resume_snapshot(catalogue, fake_podman, Ref("looper"), ResumeOptions(), Progress())
    assert fake_podman.containers["looper"].id == source.id
    assert resume_snapshot(catalogue, fake_podman, Ref("looper"), ResumeOptions(replace=True),
                           Progress()).container == "looper"
    assert f"rm {source.id}" in fake_podman.calls
    restored = fake_podman.inspect_container("looper")
    assert restored is not None and restored.running and restored.id != source.id


def test_resume_refuses_a_name_held_by_another_container(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc")
    snap(catalogue, fake_podman, leave_running=True)
    with pytest.raises(ConflictError) as info:  # the running source holds the name
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(), Progress())
    assert info.value.exit_code == ExitCode.CONFLICT
    assert not any(call.startswith(("rm", "restore")) for call in fake_podman.calls)
    resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(replace=True), Progress())
    assert fake_podman.calls[-2:] == ["rm id0001", "restore mc"]


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_corrupt_archive_is_never_restored(
    catalogue: Catalogue, fake_podman: FakePodman, compress: str
) -> None:
    fake_podman.add("mc")
    snap(catalogue, fake_podman, leave_running=True, compress=compress)
    archive = catalogue.get(Ref("mc")).archive
    data = bytearray(archive.read_bytes())
    data[-100] ^= 0x01  # past the configuration: podman gets to read the archive
    archive.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="x"), Progress())
    assert info.value.exit_code == ExitCode.INTEGRITY
    # podman got a stream that no tar reader accepts, and nothing is left of its attempt.
    [imported] = fake_podman.restored_from
    assert len(imported) % 512 == 256
    assert "x" not in fake_podman.containers
    assert list(catalogue.tmp_dir.iterdir()) == []


def test_corrupt_archive_does_not_cost_the_container_it_would_replace(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc")
    snap(catalogue, fake_podman, leave_running=True)
    archive = catalogue.get(Ref("mc")).archive
    data = bytearray(archive.read_bytes())
    data[-100] ^= 0x01
    archive.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(replace=True),
                        Progress())
    assert fake_podman.containers["mc"].running
    assert not any(call.startswith("restore") for call in fake_podman.calls)


def test_a_restore_whose_digest_fails_afterwards_is_removed(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    """The zstd checksum passed (so podman got the whole stream and restored), but the
    recorded digest differs: the restored container must not survive."""
    fake_podman.add("mc")
    snap(catalogue, fake_podman, leave_running=True)
    catalogue.db.execute("UPDATE snapshots SET sha256 = ?", ("0" * 64,))
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="x"), Progress())
    assert fake_podman.restored_from == [plain_archive_bytes()]
    assert "x" not in fake_podman.containers
    assert fake_podman.calls[-1].startswith("rm ")


def test_a_podman_that_imports_on_an_earlier_read_gets_the_whole_archive_on_a_retry(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc")
    snap(catalogue, fake_podman, leave_running=True)
    fake_podman.config_reads = 1  # imports on its second read, which gets the config tar
    resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="copy"), Progress())
    first, second = fake_podman.restored_from
    assert "checkpoint/inventory.img" not in tar_member_names(first)
    assert second == plain_archive_bytes()
    assert fake_podman.calls[-3:] == ["restore copy", "rm id0002", "restore copy"]
    assert fake_podman.containers["copy"].running


def test_failed_restore_leaves_no_container_holding_the_name(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.add("mc")
    snap(catalogue, fake_podman, leave_running=True)
    fake_podman.fail_restore = "Error: criu failed"
    with pytest.raises(CheckpointError):
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="x"), Progress())
    assert fake_podman.inspect_container("x") is None
    assert catalogue.get(Ref("mc")).ref == "mc@1"  # the snapshot itself is untouched


def test_missing_snapshot_is_not_found(catalogue: Catalogue, fake_podman: FakePodman) -> None:
    with pytest.raises(NotFoundError):
        resume_snapshot(catalogue, fake_podman, Ref("none"), ResumeOptions(), Progress())


@pytest.mark.parametrize("bad", ["novalue", "=v", "sp ace=1"])
def test_bad_labels_are_usage_errors(bad: str) -> None:
    with pytest.raises(WarmctlError) as info:
        parse_labels([bad])
    assert info.value.exit_code == ExitCode.USAGE


def test_labels_keep_everything_after_the_first_equals() -> None:
    assert parse_labels(["a=b=c", "x="]) == {"a": "b=c", "x": ""}


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(28, "No space left on device", "/var/lib/warmctl")


def test_a_stopping_checkpoint_that_cannot_be_recorded_is_kept(
    catalogue: Catalogue, fake_podman: FakePodman, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_podman.add("mc")
    monkeypatch.setattr(catalogue, "publish", disk_full)
    with pytest.raises(WarmctlError) as info:
        snap(catalogue, fake_podman)
    rescued = list((catalogue.home / "rescued").iterdir())
    assert len(rescued) == 1 and str(rescued[0]) in info.value.message
    assert "No space left on device" in info.value.message
    assert rescued[0].stat().st_mode & 0o777 == 0o600
    assert detect_compression(rescued[0]) == "zstd"  # a complete archive podman can import
    assert list(catalogue.tmp_dir.iterdir()) == []


def sqlite_disk_full(*args: object, **kwargs: object) -> None:
    raise sqlite3.OperationalError("database or disk is full")


@pytest.mark.parametrize("failure", [disk_full, sqlite_disk_full], ids=["ENOSPC", "sqlite"])
def test_a_full_disk_while_recording_is_exit_10_and_the_checkpoint_is_kept(
    catalogue: Catalogue, fake_podman: FakePodman, monkeypatch: pytest.MonkeyPatch,
    failure: Callable[..., None],
) -> None:
    fake_podman.add("mc")
    monkeypatch.setattr(catalogue, "publish", failure)
    with pytest.raises(DiskIOError) as info:
        snap(catalogue, fake_podman)
    assert info.value.exit_code == ExitCode.IO_ERROR
    (rescued,) = (catalogue.home / "rescued").iterdir()
    assert f"its memory is kept in {rescued}" in info.value.message


def test_a_failed_compression_keeps_podmans_plain_export(
    catalogue: Catalogue, fake_podman: FakePodman, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warmctl import transcode

    fake_podman.add("mc")
    monkeypatch.setattr(transcode, "compress_zstd", disk_full)
    with pytest.raises(WarmctlError, match="podman container restore --import"):
        snap(catalogue, fake_podman)
    (rescued,) = (catalogue.home / "rescued").iterdir()
    assert rescued.read_bytes() == plain_archive_bytes()


def test_nothing_is_kept_when_the_container_kept_running(
    catalogue: Catalogue, fake_podman: FakePodman, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_podman.add("mc")
    monkeypatch.setattr(catalogue, "publish", disk_full)
    with pytest.raises(OSError):
        snap(catalogue, fake_podman, leave_running=True)
    assert not (catalogue.home / "rescued").exists()
    assert list(catalogue.tmp_dir.iterdir()) == []


# --- restoring in place ----------------------------------------------------------------------

@pytest.fixture
def stored_podman(tmp_path: Path) -> FakePodman:
    """A fake podman that keeps each checkpoint in the container's storage, as podman does."""
    return FakePodman(storage=tmp_path / "storage")


def test_resume_of_a_stopped_source_restores_in_place(
    catalogue: Catalogue, stored_podman: FakePodman
) -> None:
    source = stored_podman.add("mc")
    snap(catalogue, stored_podman)
    assert catalogue.get(Ref("mc")).extra["in_place"]["container_id"] == source.id
    resumed = resume_snapshot(catalogue, stored_podman, Ref("mc"), ResumeOptions(), Progress())
    assert resumed.container == "mc" and resumed.criu_stats == {"restore_time": 5}
    assert stored_podman.calls[-1] == f"restore in place {source.id}"
    assert stored_podman.containers["mc"].id == source.id  # the same container, running
    assert stored_podman.containers["mc"].running
    assert stored_podman.restored_from == []  # the archive was not needed


def test_a_later_checkpoint_in_storage_sends_an_older_snapshot_through_its_archive(
    catalogue: Catalogue, stored_podman: FakePodman
) -> None:
    stored_podman.add("mc")
    snap(catalogue, stored_podman)
    resume_snapshot(catalogue, stored_podman, Ref("mc"), ResumeOptions(), Progress())
    snap(catalogue, stored_podman)  # mc@2: the checkpoint in storage is now mc@2's
    resume_snapshot(catalogue, stored_podman, Ref("mc", 1), ResumeOptions(), Progress())
    assert stored_podman.calls[-2:] == [f"rm {catalogue.get(Ref('mc', 1)).container_id}",
                                        "restore mc"]
    assert stored_podman.restored_from == [plain_archive_bytes()]


def test_publish_sends_a_stopped_source_through_its_archive(
    catalogue: Catalogue, stored_podman: FakePodman
) -> None:
    source = stored_podman.add("mc")
    snap(catalogue, stored_podman)
    resume_snapshot(catalogue, stored_podman, Ref("mc"),
                    ResumeOptions(publish=("127.0.0.1:1:11211",)), Progress())
    assert stored_podman.calls[-2:] == [f"rm {source.id}", "restore mc"]
    assert stored_podman.restored_from == [plain_archive_bytes()]


@pytest.mark.parametrize("change", ["paused", "exited-on-its-own", "restarted", "restored-since",
                                    "another-container"])
def test_a_source_that_changed_since_the_snapshot_is_never_replaced_unasked(
    catalogue: Catalogue, stored_podman: FakePodman, change: str
) -> None:
    """Only the source as a recorded checkpoint left it (stopped, checkpointed, the
    checkpoint in its storage the snapshot's) is replaced without --replace."""
    stored_podman.add("mc")
    snap(catalogue, stored_podman, leave_running=change in ("paused", "exited-on-its-own"))
    info = stored_podman.containers["mc"]
    if change == "paused":
        stored_podman.containers["mc"] = dataclasses.replace(info, state="paused")
    elif change == "exited-on-its-own":
        stored_podman.containers["mc"] = dataclasses.replace(info, state="exited")
    elif change == "restarted":  # podman start: running, no longer checkpointed
        stored_podman.containers["mc"] = dataclasses.replace(info, state="running",
                                                             checkpointed=False)
    elif change == "restored-since":  # and checkpointed again by hand: not recorded
        stored_podman.restore_in_place(info.id)
        stored_podman.containers["mc"] = dataclasses.replace(info, state="exited",
                                                             checkpointed=True)
        assert stored_podman.userdata_dir(info.id) is not None
        images = stored_podman.storage / info.id / "checkpoint"  # type: ignore[operator]
        images.mkdir()
        (images / "inventory.img").write_bytes(b"by hand")
    else:
        del stored_podman.containers["mc"]
        stored_podman.add("mc", running=False)
    before = dict(stored_podman.containers)
    calls = len(stored_podman.calls)
    with pytest.raises(ConflictError) as info_:
        resume_snapshot(catalogue, stored_podman, Ref("mc"), ResumeOptions(), Progress())
    assert info_.value.exit_code == ExitCode.CONFLICT
    assert "--replace" in (info_.value.hint or "")
    if change == "paused":
        assert "is paused" in info_.value.message
    if change == "exited-on-its-own":
        assert "exited on its own" in info_.value.message
    assert stored_podman.containers == before  # untouched
    assert stored_podman.calls[calls:] == []
    # --replace names it: replaced through the archive.
    resume_snapshot(catalogue, stored_podman, Ref("mc"), ResumeOptions(replace=True),
                    Progress())
    assert stored_podman.calls[-2:] == [f"rm {before['mc'].id}", "restore mc"]
    assert stored_podman.containers["mc"].running


def test_a_failed_restore_in_place_keeps_the_container_and_its_checkpoint(
    catalogue: Catalogue, stored_podman: FakePodman
) -> None:
    source = stored_podman.add("mc")
    snap(catalogue, stored_podman)
    stored_podman.fail_restore = "criu failed"
    with pytest.raises(CheckpointError):
        resume_snapshot(catalogue, stored_podman, Ref("mc"), ResumeOptions(), Progress())
    assert stored_podman.containers["mc"].id == source.id
    assert (stored_podman.storage / source.id / "checkpoint").is_dir()  # type: ignore[operator]


def test_a_label_key_given_twice_is_a_usage_error_naming_it() -> None:
    with pytest.raises(WarmctlError) as info:
        parse_labels(["tier=cache", "owner=me", "tier=db"])
    assert info.value.exit_code == ExitCode.USAGE
    assert "'tier'" in info.value.message and "twice" in info.value.message


def test_snapshot_and_warm_refuse_a_label_key_given_twice_before_podman(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from warmctl.cli import main as cli_main

    monkeypatch.setenv("WARMCTL_PODMAN", str(tmp_path / "no-podman-here"))
    for verb in (["snapshot", "c", "n"], ["warm", "localhost/img", "n", "--ready-tcp", "80"]):
        code = cli_main.main(["--home", str(tmp_path / "home"), *verb,
                              "--label", "tier=cache", "--label", "tier=db"])
        err = capsys.readouterr().err
        assert code == ExitCode.USAGE, err
        assert "label 'tier' is given twice" in err


def _export_fails_after_the_dump(podman: FakePodman, monkeypatch: pytest.MonkeyPatch, *,
                                 dumped_before: float | None = None) -> None:
    """podman's checkpoint as on a full disk: CRIU dumps into the container's storage and
    stops it, then writing the export fails. ``dumped_before``: the checkpoint in storage is
    that many seconds old (an earlier one's, not this one's)."""
    dump = podman.checkpoint

    def failing(container: str, export_to: Path, **kwargs: Any) -> CheckpointResult:
        dump(container, export_to, **kwargs)
        info = podman.inspect_container(container)
        assert info is not None and podman.storage is not None
        podman.containers[info.name] = dataclasses.replace(info, checkpointed=False)
        if dumped_before is not None:
            inventory = podman.storage / info.id / "checkpoint" / "inventory.img"
            old = inventory.stat().st_mtime - dumped_before
            os.utime(inventory, (old, old))
        message = f"checkpoint of {info.id} failed: write {export_to}: no space left on device"
        raise CheckpointError(message, stderr=message)

    monkeypatch.setattr(podman, "checkpoint", failing)


def test_a_stopping_checkpoint_whose_export_fails_restores_the_container_from_storage(
        catalogue: Catalogue, stored_podman: FakePodman,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stored_podman.add("mc")
    _export_fails_after_the_dump(stored_podman, monkeypatch)
    with pytest.raises(DiskIOError) as info:
        snap(catalogue, stored_podman)
    assert info.value.exit_code == ExitCode.IO_ERROR
    assert ("podman had already stopped mc: warmctl restored it from the checkpoint podman "
            "keeps in its storage, and it runs on as before; nothing was recorded"
            in info.value.message)
    assert stored_podman.containers["mc"].running
    assert catalogue.list_snapshots() == []


def test_when_that_restore_fails_too_the_error_gives_the_command_that_brings_it_back(
        catalogue: Catalogue, stored_podman: FakePodman,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stored_podman.add("mc")
    stored_podman.fail_restore = "criu failed: restore"
    _export_fails_after_the_dump(stored_podman, monkeypatch)
    with pytest.raises(DiskIOError) as info:
        snap(catalogue, stored_podman)
    assert "its memory is still in the checkpoint podman keeps in its storage" in \
        info.value.message
    assert info.value.hint == ("bring it back warm with: podman container restore mc "
                               "(podman start mc would start it cold, losing that memory)")
    assert not stored_podman.containers["mc"].running


def test_an_older_checkpoint_in_storage_is_never_restored_in_its_place(
        catalogue: Catalogue, stored_podman: FakePodman,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Stale memory brought back silently would be worse than a stopped container.
    stored_podman.add("mc")
    _export_fails_after_the_dump(stored_podman, monkeypatch, dumped_before=600)
    with pytest.raises(DiskIOError) as info:
        snap(catalogue, stored_podman)
    assert "restore" not in " ".join(stored_podman.calls)
    assert "restored" not in info.value.message
