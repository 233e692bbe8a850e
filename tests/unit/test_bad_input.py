"""Bad input and odd surroundings, through the real CLI: every case answers with one line and
a documented exit status, and nothing is done that the answer does not say."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from warmctl.catalogue import Catalogue, SnapshotRecord
from warmctl.errors import ExitCode

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMCTL_")}
    return {**env, "WARMCTL_HOME": str(home), "NO_COLOR": "1", **(extra or {})}


def warmctl(home: Path, *argv: str, env: dict[str, str] | None = None,
            **kwargs: object) -> subprocess.CompletedProcess[str]:
    settings: dict[str, object] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    settings.update(kwargs)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "warmctl", *argv], text=True, env=_env(home, env),
        check=False, timeout=60, stdin=subprocess.DEVNULL, **settings)


def _publish(home: Path, name: str, count: int = 1) -> None:
    cat = Catalogue(home).open()
    for _ in range(count):
        with cat.new_temp_file() as temp:
            temp.path.write_bytes(b"archive")
            cat.publish(temp, SnapshotRecord(name=name, container_name="c", container_id="i",
                                             image_name="img", image_id="iid",
                                             compression="none"), sha256="0" * 64)
    cat.close()


# --- stdout closed, or its reader gone ----------------------------------------------------------

def _reader_gone() -> int:
    """The write end of a pipe whose reader has already closed it."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["--help"], ["show", "big"],
                                  ["resume", "--help"]])
def test_a_reader_that_went_away_is_not_an_error(home: Path, argv: list[str]) -> None:
    _publish(home, "big", 3)
    write_end = _reader_gone()
    try:
        result = warmctl(home, *argv, stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    # show reads an archive that is not a checkpoint: exit 5, said on stderr, pipe or not.
    expected = ExitCode.INTEGRITY if argv[0] == "show" else ExitCode.OK
    assert result.returncode == expected, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "Broken pipe" not in result.stderr


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["--version"]])
def test_a_closed_stdout_is_said_once_and_the_status_is_what_was_done(
        home: Path, argv: list[str]) -> None:
    _publish(home, "x")
    result = warmctl(home, *argv, stdout=None, stderr=subprocess.PIPE,
                     preexec_fn=lambda: os.close(1))
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stderr.strip() == \
        "warmctl: warning: standard output is closed: results are not printed"
