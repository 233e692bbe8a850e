"""resume --max-age (issue 21, item 9): a snapshot older than the bound is refused (exit 11)
before anything is read, removed or restored; one within it resumes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import FakePodman

from warmctl.catalogue import DB_NAME, Catalogue
from warmctl.cli import main as cli_main
from warmctl.errors import ExitCode, TooOldError
from warmctl.output import Progress
from warmctl.refs import Ref
from warmctl.snapshots import ResumeOptions, SnapshotOptions, resume_snapshot, take_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")


@pytest.fixture
def stored_podman(tmp_path: Path) -> FakePodman:
    """A fake podman that keeps each checkpoint in the container's storage, as podman does."""
    return FakePodman(storage=tmp_path / "storage")


def snapshot_aged(catalogue: Catalogue, podman: FakePodman, age: timedelta) -> str:
    """A stopping snapshot of mc, recorded as taken ``age`` ago."""
    ref = take_snapshot(catalogue, podman, "mc", "mc", SnapshotOptions(), Progress()).ref
    generation = int(ref.rsplit("@", 1)[1])
    with sqlite3.connect(catalogue.home / DB_NAME) as db:
        db.execute("UPDATE snapshots SET created = ? WHERE name = 'mc' AND generation = ?",
                   ((datetime.now(UTC) - age).isoformat(), generation))
    return ref


def test_a_snapshot_older_than_max_age_is_refused_and_nothing_is_touched(
        catalogue: Catalogue, stored_podman: FakePodman) -> None:
    stored_podman.add("mc")
    snapshot_aged(catalogue, stored_podman, timedelta(hours=2))
    calls = list(stored_podman.calls)
    with pytest.raises(TooOldError) as info:
        resume_snapshot(catalogue, stored_podman, Ref("mc"),
                        ResumeOptions(max_age=3600), Progress())
    assert info.value.exit_code == ExitCode.TOO_OLD and int(ExitCode.TOO_OLD) == 11
    assert info.value.message == ("snapshot mc@1 is 2h old, older than --max-age 1h: not "
                                  "resumed, nothing was changed")
    assert stored_podman.calls == calls  # no restore, no rm: the source is as it was
    source = stored_podman.containers["mc"]
    assert source.checkpointed and not source.running


def test_a_snapshot_within_max_age_resumes(catalogue: Catalogue,
                                           stored_podman: FakePodman) -> None:
    stored_podman.add("mc")
    snapshot_aged(catalogue, stored_podman, timedelta(minutes=50))
    resumed = resume_snapshot(catalogue, stored_podman, Ref("mc"),
                              ResumeOptions(max_age=3600), Progress())
    assert resumed.container == "mc" and stored_podman.containers["mc"].running


def test_max_age_applies_to_the_generation_asked_for(catalogue: Catalogue,
                                                     stored_podman: FakePodman) -> None:
    stored_podman.add("mc")
    snapshot_aged(catalogue, stored_podman, timedelta(days=2))
    resume_snapshot(catalogue, stored_podman, Ref("mc"), ResumeOptions(), Progress())
    snapshot_aged(catalogue, stored_podman, timedelta(0))  # mc@2, new
    with pytest.raises(TooOldError, match=r"snapshot mc@1 is 2d old"):
        resume_snapshot(catalogue, stored_podman, Ref("mc", 1),
                        ResumeOptions(name="old", max_age=86400), Progress())
    assert "old" not in stored_podman.containers


def test_a_snapshot_from_a_clock_ahead_is_not_too_old(catalogue: Catalogue,
                                                      stored_podman: FakePodman) -> None:
    stored_podman.add("mc")
    snapshot_aged(catalogue, stored_podman, -timedelta(minutes=5))
    resume_snapshot(catalogue, stored_podman, Ref("mc"), ResumeOptions(max_age=1), Progress())
    assert stored_podman.containers["mc"].running


def test_the_cli_says_why_in_one_line_with_exit_11(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        stored_podman: FakePodman) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("WARMCTL_HOME", str(home))
    monkeypatch.delenv("WARMCTL_DEBUG", raising=False)
    monkeypatch.setattr("warmctl.app.App.podman", stored_podman)
    stored_podman.add("mc")
    with Catalogue(home).open() as catalogue:
        snapshot_aged(catalogue, stored_podman, timedelta(hours=3, minutes=10))
    capsys.readouterr()
    assert cli_main.main(["resume", "--max-age", "1h30m", "mc"]) == 11
    err = capsys.readouterr().err
    assert err.startswith("warmctl: error: snapshot mc@1 is 3h 10m old, older than --max-age "
                          "1h 30m: not resumed") and err.count("\n") == 1


@pytest.mark.parametrize("bad", ["0", "0s", "-5m", "soon", "10x"])
def test_a_max_age_that_is_not_a_positive_duration_is_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        bad: str) -> None:
    monkeypatch.setenv("WARMCTL_HOME", str(tmp_path / "home"))
    assert cli_main.main(["resume", "--max-age", bad, "mc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("warmctl: error: ") and ("--max-age" in err or repr(bad) in err)
