"""prune on a real catalogue: dry run and real run agree, leftovers go, a resume reading an
archive survives its pruning, a locked catalogue loses nothing."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest
from support import Containers, Warmctl
from test_core_verbs import assert_all_back, fill, start_looper, start_memcached

pytestmark = pytest.mark.podman


def refs(warmctl: Warmctl) -> list[str]:
    return [e["ref"] for e in warmctl("list", "--json").json()]


def test_dry_run_and_real_run_select_the_same(warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    for name in ("a", "a", "a", "b", "b"):
        warmctl("snapshot", looper, name, "--leave-running")

    assert warmctl("prune", check=False).returncode == 2  # no policy: never guesses

    dry = warmctl("prune", "--keep-last", "1", "--dry-run", "--json").json()
    assert isinstance(dry, dict)
    assert [r["ref"] for r in dry["removed"]] == ["a@1", "a@2", "b@1"]
    assert [r["ref"] for r in dry["kept"]] == ["a@3", "b@2"]
    assert all(r["reasons"] == ["beyond keep-last 1"] for r in dry["removed"])
    assert refs(warmctl) == ["a@1", "a@2", "a@3", "b@1", "b@2"]  # nothing deleted

    sizes = {e["ref"]: e["size_bytes"] for e in warmctl("list", "--json").json()}
    real = warmctl("prune", "--keep-last", "1", "--json").json()
    assert isinstance(real, dict)
    assert real["removed"] == dry["removed"] and real["kept"] == dry["kept"]
    assert real["bytes_freed"] == sizes["a@1"] + sizes["a@2"] + sizes["b@1"]
    assert refs(warmctl) == ["a@3", "b@2"]
    assert sorted(p.name for p in (warmctl.home / "archives").iterdir()) == ["a@3.tar", "b@2.tar"]


def test_prune_by_name_and_size(warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    for name in ("a", "a", "b", "b"):
        warmctl("snapshot", looper, name, "--leave-running")
    warmctl("prune", "b", "--keep-last", "1")
    assert refs(warmctl) == ["a@1", "a@2", "b@2"]
    entries = warmctl("list", "--json").json()
    biggest = max(e["size_bytes"] for e in entries)
    warmctl("prune", "--max-total-size", str(biggest))
    total = sum(e["size_bytes"] for e in warmctl("list", "--json").json())
    assert total <= biggest
    assert len(refs(warmctl)) == 1


def test_prune_removes_orphans_and_abandoned_temporary_files(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "keep", "--leave-running")
    orphan = warmctl.home / "archives" / "ghost@7.tar"
    orphan.write_bytes(b"left by a crash between rename and commit")
    abandoned = warmctl.home / "tmp" / f"12345-{'d' * 32}.partial"  # as warmctl names them
    abandoned.write_bytes(b"left by a killed export")
    stray = warmctl.home / "tmp" / "12345-dead.partial"  # not a name warmctl makes
    stray.write_bytes(b"someone else's")
    out = warmctl("prune", "--keep-last", "1", "--json").json()
    assert isinstance(out, dict)
    assert set(out["leftovers_removed"]) >= {"ghost@7.tar"}
    assert not orphan.exists() and not abandoned.exists()
    assert stray.read_bytes() == b"someone else's"
    assert refs(warmctl) == ["keep@1"]


def test_resume_survives_a_prune_of_its_snapshot(warmctl: Warmctl, containers: Containers) -> None:
    name, port = start_memcached(containers)
    items = fill(port, 128, seed=8)
    warmctl("snapshot", name, "mc", "--leave-running", "--compress", "none")
    warmctl("snapshot", name, "mc", "--leave-running", "--compress", "none")
    other = containers.name("resumed")
    from support import free_port

    other_port = free_port()
    proc = warmctl.popen("resume", "mc@1", "--name", other,
                         "--publish", f"127.0.0.1:{other_port}:11211")
    deadline = time.monotonic() + 60
    while not list((warmctl.home / "tmp").glob("*.hold")):
        assert proc.poll() is None, "resume finished before prune could run"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    warmctl("prune", "--keep-last", "1")
    assert refs(warmctl) == ["mc@2"]
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert_all_back(other_port, items)
    # The held link is gone with the resume: the space is really freed.
    assert list((warmctl.home / "tmp").iterdir()) == []


def test_prune_of_a_locked_catalogue_deletes_nothing(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    for _ in range(2):
        warmctl("snapshot", looper, "lk", "--leave-running")
    db = sqlite3.connect(warmctl.home / "catalogue.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        result = warmctl("prune", "--keep-last", "1", check=False,
                         env={"WARMCTL_LOCK_TIMEOUT": "500ms"})
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert result.returncode == 8, result.stderr
    assert refs(warmctl) == ["lk@1", "lk@2"]
    assert len(os.listdir(warmctl.home / "archives")) == 2


def test_unreadable_catalogue_is_exit_5_never_empty(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "x", "--leave-running")
    db_path = warmctl.home / "catalogue.db"
    for extra in ("-wal", "-shm"):
        (warmctl.home / f"catalogue.db{extra}").unlink(missing_ok=True)
    db_path.write_bytes(b"this is not a database" * 100)
    for args in (["list"], ["list", "--json"], ["prune", "--keep-last", "1"]):
        result = warmctl(*args, check=False)
        assert result.returncode == 5, (args, result.stdout, result.stderr)
        assert result.stdout == ""
    assert (warmctl.home / "archives" / "x@1.tar").exists()
