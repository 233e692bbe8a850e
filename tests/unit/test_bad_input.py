"""Bad input and odd surroundings, through the real CLI: every case answers with one line and
a documented exit status, and nothing is done that the answer does not say."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _publish(home: Path, name: str, count: int = 1,
             labels: dict[str, str] | None = None) -> None:
    cat = Catalogue(home).open()
    for _ in range(count):
        with cat.new_temp_file() as temp:
            temp.path.write_bytes(b"archive")
            cat.publish(temp, SnapshotRecord(name=name, container_name="c", container_id="i",
                                             image_name="img", image_id="iid",
                                             compression="none", labels=labels or {}),
                        sha256="0" * 64)
    cat.close()


# --- stdout closed, or its reader gone -----------------------------------------------------------

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


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["rm", "x"],
                                  ["rm", "x", "--json"]])
def test_a_result_that_cannot_be_written_is_said_once_and_the_status_is_what_was_done(
        home: Path, argv: list[str]) -> None:
    # /dev/full: every write fails with ENOSPC, as on a full disk after the work was done.
    _publish(home, "x")
    _publish(home, "keep")
    with open("/dev/full", "w") as full:
        result = warmctl(home, *argv, stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == ExitCode.OK, result.stderr
    lost = [line for line in result.stderr.splitlines() if "could not be printed" in line]
    assert lost == ["warmctl: warning: the result could not be printed on standard output "
                    "(No space left on device); what was done stands"]
    assert "error" not in result.stderr
    remaining = [e["ref"] for e in json.loads(warmctl(home, "list", "--json").stdout)]
    assert remaining == (["keep@1"] if argv[0] == "rm" else ["keep@1", "x@1"])


# --- what is handed on to podman -----------------------------------------------------------------

from publish_specs import PUBLISH_ACCEPTED, PUBLISH_REFUSED  # noqa: E402


@pytest.mark.parametrize("spec", PUBLISH_ACCEPTED)
def test_publish_specs_podman_accepts_are_accepted(spec: str) -> None:
    from warmctl.podman_input import validate_publish

    assert validate_publish(spec) == spec


@pytest.mark.parametrize("spec", PUBLISH_REFUSED)
def test_publish_specs_podman_refuses_are_usage_errors(spec: str) -> None:
    from warmctl.errors import UsageError
    from warmctl.podman_input import validate_publish

    with pytest.raises(UsageError, match="invalid --publish"):
        validate_publish(spec)


@pytest.mark.parametrize("argv", [
    ["resume", "x", "--name", "bad name!"],
    ["resume", "x", "--name", ""],
    ["resume", "x", "--name", "-dash"],
    ["resume", "x", "--publish", "notaport"],
    ["resume", "x", "-p", "99999:80"],
    ["warm", "img", "x", "--container", "a/b"],
    ["warm", "img", "x", "--container", ""],
    ["warm", "img", "x", "-p", "1.2.3:80:80"],
    ["warm", "img", "x", "--ready-tcp", "0"],
    ["warm", "img", "x", "--ready-tcp", "99999"],
    ["push", "x", "localhost:99999/a"],
    ["push", "x", "localhost:0/a"],
    ["pull", "localhost:0/a"],
    ["pull", "127.0.0.1:65536/a"],
])
def test_malformed_names_ports_and_publish_specs_are_usage_errors_before_anything_runs(
        home: Path, argv: list[str]) -> None:
    # WARMCTL_PODMAN that would fail the test if anything ran it.
    result = warmctl(home, *argv, env={"WARMCTL_PODMAN": "/nonexistent/podman"})
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("warmctl: error: invalid ")


@pytest.mark.parametrize("arg", ["--name=other", "--name", "--replace", "--rm", "-d",
                                 "--detach=true"])
def test_warm_refuses_podman_args_it_sets_itself_or_that_remove_containers(
        home: Path, arg: str) -> None:
    result = warmctl(home, "warm", "img", "x", f"--podman-arg={arg}",
                     env={"WARMCTL_PODMAN": "/nonexistent/podman"})
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert result.stderr.startswith(f"warmctl: error: --podman-arg {arg!r} is not allowed: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_empty_publish_is_refused_although_podman_ignores_it() -> None:
    # `-p "$PORT"` with PORT unset: podman publishes nothing, which is not what was asked.
    from warmctl.errors import UsageError
    from warmctl.podman_input import validate_publish

    with pytest.raises(UsageError, match="no container port"):
        validate_publish("")


# --- labels --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("label", "says"), [
    ("tier=cache\nx", "control character"),
    ("tier=a\tb", "control character"),
    ("tier=\x1b[31mred", "control character"),
    ("tier=" + "x" * 1025, "1025 bytes, more than the 1024 allowed"),
    ("tier=" + "é" * 513, "1026 bytes, more than the 1024 allowed"),
    ("clé=x", "invalid label key 'clé': use 1 to 128 of ASCII"),
    ("=x", "invalid label key ''"),
    ("novalue", "expected KEY=VALUE"),
])
def test_labels_are_refused_with_what_is_wrong(home: Path, label: str, says: str) -> None:
    for verb in (["snapshot", "c", "x"], ["warm", "img", "x"]):
        result = warmctl(home, *verb, "--label", label,
                         env={"WARMCTL_PODMAN": "/nonexistent/podman"})
        assert result.returncode == ExitCode.USAGE, result.stderr
        assert says in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_list_keeps_one_line_per_snapshot_whatever_an_older_catalogue_recorded(
        home: Path) -> None:
    _publish(home, "old", labels={"note": "two\nlines", "esc": "\x1b[31mred"})
    _publish(home, "new")
    lines = warmctl(home, "list").stdout.splitlines()
    assert len(lines) == 3  # the header and one line each
    old = next(line for line in lines if line.startswith("old@1 "))
    assert "note=two\\nlines" in old and "esc=\\x1b[31mred" in old


def test_labels_at_the_limit_and_beyond_ascii_values_are_kept() -> None:
    from warmctl.snapshots import parse_labels

    value = "é" * 512  # 1024 bytes
    assert parse_labels([f"note={value}", "a.b/c=x=y", "empty="]) == {
        "note": value, "a.b/c": "x=y", "empty": ""}


# --- prune ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("names", [["nosuch"], ["kept", "nosuch"]])
def test_prune_of_a_name_that_does_not_exist_is_exit_3_and_removes_nothing(
        home: Path, names: list[str]) -> None:
    _publish(home, "kept", 3)
    result = warmctl(home, "prune", "--keep-last", "1", *names)
    assert result.returncode == ExitCode.NOT_FOUND, result.stderr
    assert result.stderr.strip() == "warmctl: error: no snapshot nosuch (see: warmctl list)"
    listed = warmctl(home, "list", "--json").stdout
    assert [e["ref"] for e in json.loads(listed)] == ["kept@1", "kept@2", "kept@3"]


@pytest.mark.parametrize(("option", "value", "echoed"), [
    ("--keep-within", "99999999999999999999d", "99999999999999999999d"),
    ("--keep-within", "123456789012345678901s", "1428898020976223d 3h 15m 1s"),
    ("--keep-within", "1h30m", "1h 30m"),
    ("--max-total-size", "99999999999999999999T", "99999999999999999999 TiB"),
    ("--max-total-size", "123456789012345678901", "123456789012345678901 B"),
    ("--max-total-size", "1.5T", "1536 GiB"),
])
def test_huge_limits_are_echoed_exactly(home: Path, option: str, value: str,
                                        echoed: str) -> None:
    _publish(home, "a")
    result = warmctl(home, "prune", option, value, "--dry-run")
    assert result.returncode == ExitCode.OK, result.stderr
    assert f" {echoed} " in result.stdout.splitlines()[0] + " "


# Limits as typed, read back from their echo: the same number, exactly.
@given(st.integers(min_value=0, max_value=10**30), st.sampled_from(["", "K", "M", "G", "T"]))
def test_an_echoed_size_reads_back_as_the_same_number(number: int, unit: str) -> None:
    from warmctl.units import format_size_exact, parse_size

    size = parse_size(f"{number}{unit}")
    assert parse_size(format_size_exact(size)) == size


@given(st.lists(st.tuples(st.decimals(min_value=0, max_value=10**25, places=3,
                                      allow_nan=False, allow_infinity=False),
                          st.sampled_from(["ms", "s", "m", "h", "d", "w"])),
                min_size=1, max_size=4))
def test_an_echoed_duration_reads_back_as_the_same_number(
        parts: list[tuple[Decimal, str]]) -> None:
    from warmctl.units import format_duration_exact, parse_duration_exact

    seconds = parse_duration_exact("".join(f"{value}{unit}" for value, unit in parts))
    assert parse_duration_exact(format_duration_exact(seconds)) == seconds


# --- an unusable podman --------------------------------------------------------------------------

@pytest.mark.parametrize(("program", "says"), [
    ("/bin/false", "WARMCTL_PODMAN=/bin/false is not a usable podman: `/bin/false --version` "
                   "exited 1"),
    ("/bin/true", "WARMCTL_PODMAN=/bin/true is not a usable podman: `/bin/true --version` "
                  "exited 0"),
    ("/nonexistent/podman", "WARMCTL_PODMAN=/nonexistent/podman does not exist"),
    ("/etc/passwd", "WARMCTL_PODMAN=/etc/passwd is not an executable program"),
    ("no-such-podman-here", "WARMCTL_PODMAN=no-such-podman-here not found on PATH"),
])
@pytest.mark.parametrize("argv", [["snapshot", "c", "x"], ["resume", "x"]])
def test_an_unusable_podman_is_exit_6_in_words_that_say_so(
        home: Path, program: str, says: str, argv: list[str]) -> None:
    _publish(home, "x")
    result = warmctl(home, *argv, env={"WARMCTL_PODMAN": program})
    assert result.returncode == ExitCode.ENVIRONMENT, result.stderr
    assert result.stderr.startswith(f"warmctl: error: {says}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_podman_that_fails_without_a_word_is_still_podman(tmp_path: Path) -> None:
    """A real podman that fails silently is a podman failure, not an unusable program."""
    from warmctl.errors import HostError, PodmanError
    from warmctl.podman import PodmanCLI

    script = tmp_path / "podman"
    script.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "podman version 4.3.1" && exit 0'
                      '\nexit 125\n')
    script.chmod(0o755)
    podman = PodmanCLI(str(script))
    with pytest.raises(PodmanError) as info:
        podman.list_containers()
    assert not isinstance(info.value, HostError)
