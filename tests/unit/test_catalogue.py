"""The catalogue on its own: publishing, generations, sweeping, locking, damage."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from warmctl.catalogue import Catalogue, SnapshotRecord
from warmctl.errors import CatalogueBusyError, ExitCode, IntegrityError, NotFoundError
from warmctl.refs import Ref


def record(name: str = "mc") -> SnapshotRecord:
    return SnapshotRecord(
        name=name, container_name="c", container_id="id", image_name="img", image_id="iid",
        compression="none", labels={"k": "v"}, host={"criu": "4.2"},
    )


def publish(cat: Catalogue, name: str = "mc", data: bytes = b"archive") -> str:
    with cat.new_temp_file() as temp:
        temp.path.write_bytes(data)
        return cat.publish(temp, record(name), sha256="0" * 64).ref


@pytest.fixture
def cat(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path / "home", lock_timeout=0.2).open()


def test_layout_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        cat = Catalogue(tmp_path / "home").open()
        publish(cat)
    finally:
        os.umask(old)
    for directory in (cat.home, cat.archives_dir, cat.tmp_dir, cat.logs_dir):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert (cat.archives_dir / "mc@1.tar").stat().st_mode & 0o777 == 0o600
    assert cat.db_path.stat().st_mode & 0o777 == 0o600


def test_generations_grow_per_name_and_are_never_reused(cat: Catalogue) -> None:
    assert [publish(cat, "a"), publish(cat, "a"), publish(cat, "b")] == ["a@1", "a@2", "b@1"]
    cat.remove([cat.get(Ref("a", 2))])
    assert publish(cat, "a") == "a@3"
    assert [s.ref for s in cat.list_snapshots()] == ["a@1", "a@3", "b@1"]
    assert cat.get(Ref("a")).ref == "a@3"


def test_get_of_unknown_ref_is_not_found(cat: Catalogue) -> None:
    with pytest.raises(NotFoundError):
        cat.get(Ref("nothing"))
    publish(cat)
    with pytest.raises(NotFoundError):
        cat.get(Ref("mc", 9))


def test_published_row_round_trips(cat: Catalogue) -> None:
    publish(cat, data=b"12345")
    snap = cat.get(Ref("mc", 1))
    assert snap.size_bytes == 5 and snap.archive.read_bytes() == b"12345"
    assert snap.labels == {"k": "v"} and snap.host == {"criu": "4.2"}
    assert snap.to_dict()["created"].endswith("Z")


def test_temp_file_of_a_dead_process_is_swept(cat: Catalogue, tmp_path: Path) -> None:
    # A child makes a temp file and dies with it still "open": its lock dies with it.
    code = (
        "import os, sys; from pathlib import Path; from warmctl.catalogue import Catalogue;"
        f"t = Catalogue(Path({str(cat.home)!r})).open().new_temp_file();"
        "t.path.write_bytes(b'x'); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert len(list(cat.tmp_dir.iterdir())) == 1
    cat.sweep_temporary_files()
    assert list(cat.tmp_dir.iterdir()) == []


def test_temp_file_of_a_live_owner_survives_the_sweep(cat: Catalogue) -> None:
    with cat.new_temp_file() as temp:
        other = Catalogue(cat.home).open()
        assert other.sweep_temporary_files() == []
        assert temp.path.exists()
    assert not temp.path.exists()


def test_held_archive_survives_its_removal(cat: Catalogue) -> None:
    publish(cat, data=b"still here")
    snap = cat.get(Ref("mc"))
    with cat.hold_archive(snap) as held:
        cat.remove([snap])
        assert not snap.archive.exists()
        assert Catalogue(cat.home).open().sweep_temporary_files() == []
        assert held.path.read_bytes() == b"still here"
    assert list(cat.tmp_dir.iterdir()) == []


def test_orphan_archive_is_swept(cat: Catalogue) -> None:
    publish(cat)
    orphan = cat.archives_dir / "ghost@1.tar"
    orphan.write_bytes(b"x")
    assert cat.sweep_orphan_archives() == [orphan]
    assert (cat.archives_dir / "mc@1.tar").exists()


def test_write_lock_held_elsewhere_is_busy_exit_8(cat: Catalogue) -> None:
    blocker = sqlite3.connect(cat.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogueBusyError) as info:
            cat.check_writable()
        assert info.value.exit_code == ExitCode.BUSY
        with pytest.raises(CatalogueBusyError):
            cat.sweep_orphan_archives()
    finally:
        blocker.execute("ROLLBACK")


def test_publish_outwaits_a_lock_longer_than_the_usual_timeout(cat: Catalogue) -> None:
    import threading

    blocker = sqlite3.connect(cat.db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    # Held for several times the catalogue's 0.2 s timeout, then released.
    release = threading.Timer(1.0, lambda: blocker.execute("ROLLBACK"))
    release.start()
    try:
        assert publish(cat) == "mc@1"  # a taken checkpoint is not thrown away for a lock
    finally:
        release.join()
    # The usual timeout is back after publishing.
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogueBusyError):
            cat.check_writable()
    finally:
        blocker.execute("ROLLBACK")


def test_garbage_database_is_integrity_error_not_empty(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "catalogue.db").write_bytes(b"not sqlite at all" * 64)
    with pytest.raises(IntegrityError):
        Catalogue(home).open()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path / "home").open()
    cat.db.execute("PRAGMA user_version = 99")
    cat.close()
    with pytest.raises(Exception, match="newer warmctl"):
        Catalogue(tmp_path / "home").open()


def test_list_json_is_to_dict_key_for_key(cat: Catalogue) -> None:
    import json

    publish(cat, "a")
    publish(cat, "b")
    with cat.new_temp_file() as temp:
        temp.path.write_bytes(b"warm")
        warm_record = SnapshotRecord(
            name="a", container_name="c", container_id="id", image_name="img",
            image_id="iid", compression="zstd", ports=["127.0.0.1:1:2/tcp"],
            criu_stats={"frozen_time": 5}, extra={"warm": {"probe_attempts": 3}},
        )
        cat.publish(temp, warm_record, sha256="1" * 64)
    expected = [snap.to_dict() for snap in cat.list_snapshots()]
    assert json.loads(cat.list_json()) == expected
    assert list(json.loads(cat.list_json())[0]) == list(expected[0])  # same key order
    assert json.loads(cat.list_json("a")) == [e for e in expected if e["name"] == "a"]
    assert json.loads(Catalogue(cat.home).open().list_json("zzz")) == []


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_an_existing_home_and_sqlites_files_become_private(tmp_path: Path, umask: int) -> None:
    """A home made 0755 before warmctl came (an empty directory), then a catalogue.db left
    0644 (copied back from a backup, say): opened, everything is 0700 and 0600, SQLite's -wal
    and -shm (made with the database's mode) included, whatever the umask."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    old = os.umask(umask)
    try:
        cat = Catalogue(home).open()
        publish(cat)
        for directory in (home, cat.archives_dir, cat.tmp_dir, cat.logs_dir):
            assert directory.stat().st_mode & 0o777 == 0o700, directory
        cat.close()
        for directory in (home, cat.archives_dir, cat.tmp_dir, cat.logs_dir):
            directory.chmod(0o755)
        (home / "rescued").mkdir(mode=0o755)
        cat.db_path.chmod(0o644)
        cat = Catalogue(home).open()
        publish(cat)  # a write: the -wal and -shm are there while the catalogue is open
        files = {name: (home / name).stat().st_mode & 0o777
                 for name in ("catalogue.db", "catalogue.db-wal", "catalogue.db-shm")}
        assert files == dict.fromkeys(files, 0o600)
        for directory in (home, cat.archives_dir, cat.tmp_dir, cat.logs_dir, home / "rescued"):
            assert directory.stat().st_mode & 0o777 == 0o700, directory
        cat.close()
    finally:
        os.umask(old)
