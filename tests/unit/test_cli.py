"""The command line in-process: the exit-code boundary, usage errors, help for every verb.

The runner sets WARMCTL_DEBUG=1, so an unexpected exception fails the test with its traceback
instead of being turned into exit 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from warmctl import __version__
from warmctl.cli import main as cli_main
from warmctl.errors import ExitCode


@dataclass
class Run:
    code: int
    out: str
    err: str


Runner = Callable[..., Run]


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Runner:
    monkeypatch.setenv("WARMCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WARMCTL_DEBUG", "1")

    def invoke(*argv: str) -> Run:
        code = cli_main.main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return invoke


def commands() -> list[str]:
    group = typer.main.get_command(cli_main.app)
    assert isinstance(group, typer.core.TyperGroup)
    return sorted(group.commands)


def test_version(run: Runner) -> None:
    result = run("--version")
    assert (result.code, result.out) == (0, f"warmctl {__version__}\n")


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help(run: Runner, command: str) -> None:
    group = typer.main.get_command(cli_main.app)
    assert isinstance(group, typer.core.TyperGroup)
    assert group.commands[command].help, f"{command} has no help text"
    result = run(command, "--help")
    assert result.code == 0 and "Usage:" in result.out


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["list", "--bogus"],
        ["resume"],
        ["resume", "UPPER"],
        ["rm", "a@b"],
        ["prune"],
        ["prune", "--keep-last", "0"],
        ["prune", "--keep-within", "soon"],
        ["prune", "--max-total-size", "lots"],
        ["warm", "img", "n", "--timeout", "forever"],
        ["warm", "img", "n", "--ready", "true", "--ready-tcp", "80"],
    ],
)
def test_usage_errors_are_one_line_exit_2(run: Runner, argv: list[str]) -> None:
    result = run(*argv)
    assert result.code == ExitCode.USAGE, result.err
    assert result.err.startswith("warmctl: error: ")
    assert len(result.err.strip().splitlines()) == 1
    assert result.out == ""


def test_empty_catalogue_lists_as_empty_json_array(run: Runner) -> None:
    result = run("list", "--json")
    assert result.code == 0 and json.loads(result.out) == []
    assert run("verify", "--json").out.strip() == "[]"


def test_not_found_is_exit_3(run: Runner) -> None:
    result = run("show", "ghost")
    assert result.code == ExitCode.NOT_FOUND
    assert result.err == "warmctl: error: no snapshot ghost (see: warmctl list)\n"


def test_unexpected_error_is_one_line_without_debug(
    run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("warmctl.catalogue.Catalogue.list_snapshots", explode)
    monkeypatch.delenv("WARMCTL_DEBUG")
    result = run("list")
    assert result.code == ExitCode.FAILURE
    assert result.err.startswith("warmctl: internal error: RuntimeError: boom")
    assert "Traceback" not in result.err
    monkeypatch.setenv("WARMCTL_DEBUG", "1")
    with pytest.raises(RuntimeError):
        run("list")


def test_home_option_overrides_the_environment(run: Runner, tmp_path: Path) -> None:
    assert run("--home", str(tmp_path / "elsewhere"), "list", "--json").code == 0
    assert (tmp_path / "elsewhere" / "catalogue.db").exists()
    assert not (tmp_path / "home").exists()


def test_test_modules_have_distinct_names() -> None:
    # pytest imports test files by basename (rootdir-less "prepend" mode, which the
    # integration tests need for `from support import ...`): two test_x.py in different
    # folders break collection of the whole suite.
    tests = Path(__file__).parent.parent
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted(set(names)) == sorted(names)
