"""A disk that fails a read (EIO) while an archive is read: the error says so, exits 10 and
never calls the archive damaged nor suggests removing it (issue 21, item 5). The failing disk
is a file object that raises OSError(EIO) past a given offset, put in place of the archive's."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_registry import FakeRegistry
from fakes import FakePodman

from warmctl import archive
from warmctl.catalogue import Catalogue, Snapshot
from warmctl.cli import main as cli_main
from warmctl.errors import DiskIOError, ExitCode
from warmctl.oci.sharing import RegistryOptions, push_snapshot
from warmctl.output import Progress
from warmctl.refs import Ref
from warmctl.snapshots import ResumeOptions, SnapshotOptions, resume_snapshot, take_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")


class FailingDisk:
    """A binary file whose reads past ``fail_at`` fail as a bad sector's do."""

    def __init__(self, file: Any, fail_at: int) -> None:
        self._file = file
        self._fail_at = fail_at

    def read(self, size: int = -1) -> bytes:
        position = self._file.tell()
        if position >= self._fail_at:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        room = self._fail_at - position
        data: bytes = self._file.read(room if size is None or size < 0 else min(size, room))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> FailingDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def fail_reads(monkeypatch: pytest.MonkeyPatch, fail_at: int,
               which: Callable[[Path], bool]) -> None:
    """Every binary read of a path ``which`` accepts fails with EIO past ``fail_at``."""
    real_open = Path.open

    def opened(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_open(self, mode, *args, **kwargs)
        if mode == "rb" and which(self):
            return FailingDisk(file, fail_at)
        return file

    monkeypatch.setattr(Path, "open", opened)


def an_archive(path: Path) -> bool:
    """The catalogue's archives and the hard links warmctl reads them through."""
    return path.suffix == ".hold" or "archives" in path.parts


def assert_says_disk_failed(message: str, hint: str | None) -> None:
    assert "Input/output error" in message and "the disk failed a read" in message
    assert "damaged" not in message and "corrupt" not in message
    assert hint is not None and "nothing was removed" in hint and "warmctl rm" not in hint


@pytest.fixture
def snapshot(catalogue: Catalogue, fake_podman: FakePodman) -> Snapshot:
    fake_podman.add("mc")
    return take_snapshot(catalogue, fake_podman, "mc", "mc",
                         SnapshotOptions(leave_running=True), Progress())


@pytest.mark.parametrize("fail_at", [0, 600, 20_000])
def test_reading_an_archive_the_disk_fails_is_an_io_error(
    snapshot: Snapshot, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    fail_reads(monkeypatch, fail_at, an_archive)
    for read in (archive.summarize, archive.verify_structure, archive.sha256_file):
        with pytest.raises(DiskIOError) as info:
            read(snapshot.archive)
        assert int(info.value.exit_code) == 10
        assert_says_disk_failed(info.value.message, info.value.hint)


def read_in_thread(name: str) -> Callable[[Path], bool]:
    """The archive, read by warmctl's thread ``name``: "feed" feeds podman's import read,
    "hash" computes the digest (feed.py)."""
    return lambda path: an_archive(path) and threading.current_thread().name == name


def test_resume_whose_import_read_the_disk_fails_is_an_io_error_and_leaves_nothing(
    catalogue: Catalogue, fake_podman: FakePodman, snapshot: Snapshot,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_reads(monkeypatch, 600, read_in_thread("feed"))
    with pytest.raises(DiskIOError) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="x"), Progress())
    assert_says_disk_failed(info.value.message, info.value.hint)
    [imported] = fake_podman.restored_from  # spoiled: no tar reader accepts it
    assert len(imported) % 512 == 256
    assert "x" not in fake_podman.containers
    assert catalogue.get(Ref("mc")).archive.exists()


def test_resume_whose_digest_the_disk_fails_is_an_io_error_and_leaves_nothing(
    catalogue: Catalogue, fake_podman: FakePodman, snapshot: Snapshot,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman got the whole archive (zstd checked itself as it was decoded), then the digest's
    own read hits the bad sector: the archive is not proved the recorded one, so what podman
    made of it goes, as after a digest mismatch, but nothing calls the archive corrupt."""
    fail_reads(monkeypatch, 600, read_in_thread("hash"))
    with pytest.raises(DiskIOError) as info:
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="x"), Progress())
    assert_says_disk_failed(info.value.message, info.value.hint)
    assert "x" not in fake_podman.containers
    assert catalogue.get(Ref("mc")).archive.exists()


def run_cli(home: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["--home", str(home), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_and_show_exit_10_and_suggest_no_rm(
    catalogue: Catalogue, snapshot: Snapshot, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    fail_reads(monkeypatch, 20_000, an_archive)
    code, out, err = run_cli(catalogue.home, capsys, "verify")
    assert code == ExitCode.IO_ERROR, err
    assert "I/O ERROR" in out and "CORRUPT" not in out
    assert "warmctl rm" not in out + err and "nothing was removed" in err
    code, out, err = run_cli(catalogue.home, capsys, "show", "mc")
    assert code == ExitCode.IO_ERROR, err
    assert "Input/output error" in err and "warmctl rm" not in err
    assert snapshot.archive.exists()


def test_any_other_read_the_disk_fails_exits_10(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(*args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/somewhere/file")

    monkeypatch.setattr("warmctl.catalogue.Catalogue.list_snapshots", failing)
    code, _, err = run_cli(tmp_path / "home", capsys, "list")
    assert code == ExitCode.IO_ERROR
    assert "/somewhere/file: Input/output error" in err and "the disk failed" in err


def test_push_of_an_archive_the_disk_fails_is_an_io_error_not_retried(
    catalogue: Catalogue, snapshot: Snapshot, registry: FakeRegistry,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pread = os.pread
    reads = []

    def failing_pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(offset)
        if offset >= 8 * 1024:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", failing_pread)
    with pytest.raises(DiskIOError) as info:
        push_snapshot(catalogue, Ref("mc"), f"{registry.host}/warm/mc",
                      RegistryOptions(tls_verify=False, chunk_size=8 * 1024), Progress())
    assert "cannot read the archive: Input/output error" in info.value.message
    assert reads.count(8 * 1024) == 1  # a disk failure is not retried as a network one is
