"""Whose directory the catalogue is: warmctl creates, chmods and sweeps only in a catalogue it
made, and only the names it gives its own files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warmctl.catalogue import APPLICATION_ID, TEMP_NAME, Catalogue, SnapshotRecord
from warmctl.errors import ExitCode, UsageError
from warmctl.refs import Ref


def _publish(cat: Catalogue, name: str = "mc") -> str:
    record = SnapshotRecord(name=name, container_name="c", container_id="id", image_name="img",
                            image_id="iid", compression="none")
    with cat.new_temp_file() as temp:
        temp.path.write_bytes(b"archive")
        return cat.publish(temp, record, sha256="0" * 64).ref


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def _warmctl(*argv: str, home: str | None = None, cwd: Path | None = None) \
        -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WARMCTL_HOME"}
    if home is not None:
        env["WARMCTL_HOME"] = home
    return subprocess.run([sys.executable, "-m", "warmctl", *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, check=False, timeout=60)


def test_a_directory_with_files_in_tmp_is_refused_and_nothing_is_deleted(tmp_path: Path) -> None:
    home = tmp_path / "data"
    (home / "tmp").mkdir(parents=True)
    (home / "tmp" / "important.txt").write_text("keep me")
    old = 1_000_000_000  # two decades old: no owner holds it
    os.utime(home / "tmp" / "important.txt", (old, old))
    before = _tree(home)
    result = _warmctl("--home", str(home), "list")
    assert result.returncode == ExitCode.USAGE
    assert "is not a warmctl catalogue" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _tree(home) == before  # no catalogue.db, archives/ or logs/ either


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_root_directory_is_refused(how: str) -> None:
    result = (_warmctl("--home", "/", "list") if how == "option"
              else _warmctl("list", home="/"))
    assert result.returncode == ExitCode.USAGE
    assert "root directory" in result.stderr
    assert not Path("/catalogue.db").exists()


def test_a_file_as_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "file"
    home.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        Catalogue(home).open()
    assert home.read_text() == "x"


def test_another_programs_catalogue_db_is_refused_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(home / "catalogue.db")
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    os.chmod(home / "catalogue.db", 0o644)
    before = _tree(home)
    with pytest.raises(UsageError, match="is not a warmctl catalogue"):
        Catalogue(home).open()
    assert _tree(home) == before
    assert (home / "catalogue.db").stat().st_mode & 0o777 == 0o644


def test_a_new_catalogue_is_marked(tmp_path: Path) -> None:
    cat = Catalogue(tmp_path / "new").open()
    assert cat.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_an_empty_directory_and_an_interrupted_first_open_become_catalogues(
        tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    Catalogue(empty).open().close()
    layout_only = tmp_path / "layout"
    for sub in ("tmp", "archives"):
        (layout_only / sub).mkdir(parents=True)
    (layout_only / "catalogue.db").touch()  # created, then killed before the schema
    cat = Catalogue(layout_only).open()
    assert _publish(cat) == "mc@1"


def test_a_catalogue_from_before_the_mark_keeps_working_and_is_marked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cat = Catalogue(home).open()
    _publish(cat)
    cat.db.execute("PRAGMA application_id = 0")  # as warmctl wrote it before the mark
    cat.close()
    (home / "notes.txt").write_text("a file of the user's beside it")
    reopened = Catalogue(home).open()
    assert [s.ref for s in reopened.list_snapshots()] == ["mc@1"]
    assert reopened.db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert _publish(reopened) == "mc@2"


def test_stray_entries_in_tmp_and_archives_are_left_alone_without_failing(
        tmp_path: Path) -> None:
    cat = Catalogue(tmp_path / "home").open()
    ref = _publish(cat)
    strays = [cat.tmp_dir / "sub", cat.tmp_dir / "123-abc.partial", cat.archives_dir / "dir@1.tar",
              cat.archives_dir / "notes"]
    strays[0].mkdir()
    (strays[0] / "inner").write_text("x")
    strays[1].write_text("not warmctl's name")
    strays[2].mkdir()
    strays[3].write_text("x")
    # A directory named like one of warmctl's temporary files is not one either.
    named_like_ours = cat.tmp_dir / f"{os.getpid()}-{'a' * 32}.partial"
    named_like_ours.mkdir()
    cat.close()
    cat = Catalogue(tmp_path / "home").open()
    assert cat.swept_on_open == []
    assert cat.sweep_orphan_archives() == []
    cat.remove([cat.get(Ref("mc", 1))])
    assert all(p.exists() for p in [*strays, named_like_ours]), ref


def test_an_empty_home_means_the_default_for_the_option_and_the_variable(
        tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    xdg = tmp_path / "xdg"
    env_home = _warmctl_with_xdg(xdg, cwd, "--home", "", "list", home=None)
    var_home = _warmctl_with_xdg(xdg, cwd, "list", home="")
    assert env_home.returncode == var_home.returncode == 0, env_home.stderr + var_home.stderr
    assert list(cwd.iterdir()) == []  # not the current directory
    assert (xdg / "warmctl" / "catalogue.db").exists()


def _warmctl_with_xdg(xdg: Path, cwd: Path, *argv: str, home: str | None) \
        -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WARMCTL_HOME"}
    env["XDG_DATA_HOME"] = str(xdg)
    if home is not None:
        env["WARMCTL_HOME"] = home
    return subprocess.run([sys.executable, "-m", "warmctl", *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, check=False, timeout=60)


# --- the sweep never deletes a name warmctl did not make ---------------------------------------

_OURS = st.builds(
    lambda pid, hexes, suffix: f"{pid}-{hexes}{suffix}",
    st.integers(min_value=1, max_value=4_194_304),
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    st.sampled_from([".partial", ".hold", ".plain"]),
)
# Names close to warmctl's (a wrong length, case, suffix, an extra part) and arbitrary ones.
_NEAR_MISSES = st.builds(
    lambda pid, hexes, suffix, extra: f"{pid}-{hexes}{suffix}{extra}",
    st.integers(min_value=0, max_value=99_999),
    st.text(alphabet="0123456789abcdefABCDEF-", min_size=0, max_size=40),
    st.sampled_from([".partial", ".hold", ".plain", ".creating", ".tar", "", ".PARTIAL"]),
    st.sampled_from(["", "~", ".bak", " ", "x"]),
)
_ANY_NAME = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/\0"),
    min_size=1, max_size=60,
).filter(lambda n: n not in (".", "..") and len(n.encode()) < 250)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    theirs=st.sets(st.one_of(_NEAR_MISSES, _ANY_NAME), max_size=12),
    ours=st.sets(_OURS, max_size=4),
    as_directory=st.sets(st.integers(min_value=0, max_value=11), max_size=4),
)
def test_the_sweep_never_deletes_a_name_warmctl_did_not_make(
        tmp_path_factory: pytest.TempPathFactory, theirs: set[str], ours: set[str],
        as_directory: set[int]) -> None:
    theirs = {name for name in theirs if not TEMP_NAME.fullmatch(name)}
    cat = Catalogue(tmp_path_factory.mktemp("home")).open()
    old = 1_000_000_000
    for index, name in enumerate(sorted(theirs)):
        path = cat.tmp_dir / name
        if index in as_directory:
            path.mkdir()
        else:
            path.write_bytes(b"someone else's")
            os.utime(path, (old, old))
    for name in ours:  # left by a killed warmctl: unlocked
        (cat.tmp_dir / name).write_bytes(b"partial export")
    removed = cat.sweep_temporary_files()
    assert {p.name for p in removed} == ours
    assert {p.name for p in cat.tmp_dir.iterdir()} == theirs
    # And opening the catalogue again (which sweeps) neither fails nor takes anything.
    cat.close()
    again = Catalogue(cat.home).open()
    assert again.swept_on_open == []
    assert {p.name for p in cat.tmp_dir.iterdir()} == theirs


def test_processes_creating_one_catalogue_at_once_all_open_it(tmp_path: Path) -> None:
    """The first creates it while the others look: none may take the half-made catalogue
    (its database, WAL files and directories) for somebody else's."""
    code = ("import sys; from pathlib import Path; from warmctl.catalogue import Catalogue;"
            "Catalogue(Path(sys.argv[1])).open().close()")
    for round_ in range(5):
        home = tmp_path / f"home{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(home)],
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
        errors = [proc.communicate(timeout=60)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0] * 8, errors
        assert Catalogue(home).open().db.execute(
            "PRAGMA application_id").fetchone()[0] == APPLICATION_ID
