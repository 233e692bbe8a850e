"""Catalogues no command can use as usual (issue 21, item 13): doctor fails its catalogue line
wherever every command would fail, and a catalogue on a read-only mount reads (list, show,
verify, resume) while every write says read-only and exits 6. The read-only mounts are real: a bind
mount remounted read-only (root ignores file modes, so nothing less would do)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakePodman
from test_doctor import MOUNTINFO, facts

from warmctl.catalogue import Catalogue
from warmctl.cli import main as cli_main
from warmctl.errors import ExitCode, HostError
from warmctl.host import doctor
from warmctl.output import Progress
from warmctl.refs import Ref
from warmctl.snapshots import ResumeOptions, SnapshotOptions, resume_snapshot, take_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")


def run(capsys: pytest.CaptureFixture[str], home: Path, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["--home", str(home), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def catalogue_facts(home: Path) -> doctor.CatalogueFacts:
    return doctor.gather_catalogue_facts(home, MOUNTINFO)


def test_random_bytes_as_catalogue_db_fail_doctor_as_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """doctor reads the database as commands do: random bytes fail, while a catalogue in use
    and one whose first open was interrupted (an empty catalogue.db, which the next command
    fills) pass; doctor changes nothing in any."""
    with Catalogue(tmp_path / "usable").open():
        pass
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir(mode=0o700)
    (interrupted / "catalogue.db").write_bytes(b"")
    for usable in (tmp_path / "usable", interrupted):
        names = sorted(p.name for p in usable.iterdir())
        check = doctor.check_catalogue(facts(catalogue=catalogue_facts(usable)))
        assert check.status == doctor.OK, check.detail
        assert sorted(p.name for p in usable.iterdir()) == names
    home = tmp_path / "home"
    home.mkdir()
    (home / "catalogue.db").write_bytes(os.urandom(8192))
    before = (home / "catalogue.db").read_bytes()
    assert run(capsys, home, "list")[0] == ExitCode.INTEGRITY
    check = doctor.check_catalogue(facts(catalogue=catalogue_facts(home)))
    assert check.status == doctor.FAIL and "is unreadable" in check.detail
    assert (home / "catalogue.db").read_bytes() == before  # doctor changed nothing
    assert sorted(p.name for p in home.iterdir()) == ["catalogue.db"]


def test_a_home_that_is_a_dangling_symlink_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.symlink_to(tmp_path / "gone")
    code, _, err = run(capsys, home, "list")
    assert code == ExitCode.USAGE, err
    assert "is a symbolic link to" in err and "does not exist" in err
    check = doctor.check_catalogue(facts(catalogue=catalogue_facts(home)))
    assert check.status == doctor.FAIL and "does not exist" in check.detail
    assert not (tmp_path / "gone").exists()


@pytest.fixture
def read_only_copy(tmp_path: Path, fake_podman: FakePodman) -> Iterator[tuple[Path, Path]]:
    """A catalogue holding mc@1, seen through a read-only bind mount: (its writable home,
    the same home read-only)."""
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    source = tmp_path / "source"
    fake_podman.add("mc")
    with Catalogue(source / "home").open() as catalogue:
        take_snapshot(catalogue, fake_podman, "mc", "mc", SnapshotOptions(leave_running=True),
                      Progress())
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(mount_point)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount_point)], check=True)
        yield source / "home", mount_point / "home"
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_read_only_catalogue_reads(
    read_only_copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
    fake_podman: FakePodman
) -> None:
    writable, home = read_only_copy
    before = sorted(str(p.relative_to(writable)) for p in writable.rglob("*"))
    code, out, err = run(capsys, home, "list")
    assert code == 0 and "mc@1" in out, err
    code, out, err = run(capsys, home, "show", "mc")
    assert code == 0 and "mc@1" in out, err
    code, out, err = run(capsys, home, "verify")
    assert code == 0 and "mc@1\tok" in out, err
    check = doctor.check_catalogue(facts(catalogue=catalogue_facts(home)))
    assert check.status == doctor.WARN and "read-only file system" in check.detail
    with Catalogue(home).open() as catalogue:  # resume only reads the catalogue
        resume_snapshot(catalogue, fake_podman, Ref("mc"), ResumeOptions(name="x"), Progress())
    assert fake_podman.containers["x"].running
    assert sorted(str(p.relative_to(writable)) for p in writable.rglob("*")) == before


def test_a_write_to_a_read_only_catalogue_says_read_only_and_exits_6(
    read_only_copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
    fake_podman: FakePodman
) -> None:
    _, home = read_only_copy
    code, _, err = run(capsys, home, "rm", "mc")
    assert code == ExitCode.ENVIRONMENT, err
    assert "read-only file system" in err and "unable to open" not in err
    assert len(err.strip().splitlines()) == 1
    assert (home / "archives" / "mc@1.tar").exists()
    with Catalogue(home).open() as catalogue, pytest.raises(HostError, match="read-only"):
        take_snapshot(catalogue, fake_podman, "mc", "mc2", SnapshotOptions(leave_running=True),
                      Progress())
    assert not any(call.startswith("checkpoint") for call in fake_podman.calls[1:])


def test_a_read_only_catalogue_with_unapplied_writes_is_refused_not_read_stale(
    read_only_copy: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A -wal still holding writes (its warmctl was killed before it closed): SQLite cannot
    apply it without writing, so every command fails, saying so, and doctor fails too."""
    writable, home = read_only_copy
    with Catalogue(writable).open() as still_open:
        still_open.db.execute("BEGIN IMMEDIATE")
        still_open.db.execute("UPDATE names SET next_generation = next_generation + 1")
        still_open.db.execute("COMMIT")
        assert (home / "catalogue.db-wal").stat().st_size > 0
        code, _, err = run(capsys, home, "list")
        assert code == ExitCode.ENVIRONMENT, err
        assert "read-only file system" in err and "catalogue.db-wal" in err
        check = doctor.check_catalogue(facts(catalogue=catalogue_facts(home)))
        assert check.status == doctor.FAIL and "catalogue.db-wal" in check.detail

