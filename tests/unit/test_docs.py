"""Shell completion and man pages: the committed files are what scripts/gen-docs makes, every
command and option is documented, the pages lint clean, and a completion request answers
from the command tree and the catalogue without importing the heavy parts of warmctl.

Shells themselves are driven in tests/integration/test_completion_shell.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperCommand

from warmctl.catalogue import Catalogue, SnapshotRecord
from warmctl.cli import completion_cmd
from warmctl.cli.main import app, main
from warmctl.errors import EXIT_CODE_MEANINGS

ROOT = Path(__file__).resolve().parents[2]
GEN_DOCS = ROOT / "scripts" / "gen-docs"
MAN = ROOT / "man"
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", '"EXIT STATUS"', "ENVIRONMENT",
            "FILES", "EXAMPLES", '"SEE ALSO"')
ENVIRONMENT = ("WARMCTL_HOME", "WARMCTL_LOCK_TIMEOUT", "WARMCTL_PODMAN", "WARMCTL_DEBUG",
               "NO_COLOR")


def roff(text: str) -> str:
    """How gen-docs writes a literal word (an option, a command) into a page."""
    return text.replace("-", "\\-")


def verbs() -> dict[str, TyperCommand]:
    root = typer.main.get_command(app)
    commands: dict[str, TyperCommand] = root.commands  # type: ignore[attr-defined]
    return {name: cmd for name, cmd in commands.items() if not cmd.hidden}


def man_pages() -> list[Path]:
    return sorted(MAN.glob("*.[17]"))


# --- generated files are fresh ---------------------------------------------------------------


def test_committed_completions_and_man_pages_are_what_gen_docs_generates(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(GEN_DOCS), "--outdir", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(ROOT) for d in ("completions", "man")
                       for p in (ROOT / d).glob("*") if p.is_file())
    hint = "stale generated files: run `make docs` (scripts/gen-docs) and commit the result"
    assert generated == committed, hint
    stale = [str(p) for p in generated if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert not stale, f"{hint}: {', '.join(stale)}"


def test_gen_docs_check_mode_agrees() -> None:
    result = subprocess.run([sys.executable, str(GEN_DOCS), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_generated_files_hold_no_paths_of_this_machine() -> None:
    for path in [*man_pages(), *(ROOT / "completions").glob("*")]:
        text = path.read_text(encoding="utf-8")
        for local in (str(ROOT), sys.prefix, str(Path.home()) + "/"):
            assert local not in text, f"{path.name} contains {local}"


def test_completion_verb_prints_the_committed_scripts(capsys: pytest.CaptureFixture[str]) -> None:
    for shell, filename in (("bash", "warmctl.bash"), ("zsh", "_warmctl"),
                            ("fish", "warmctl.fish")):
        assert main(["completion", shell]) == 0
        assert capsys.readouterr().out == (ROOT / "completions" / filename).read_text()


def test_zsh_script_starts_with_compdef() -> None:
    # compinit reads only the first line of each file on $fpath.
    assert (ROOT / "completions" / "_warmctl").read_text().startswith("#compdef warmctl\n")


# --- every command and option is documented --------------------------------------------------


def test_every_command_has_a_page_with_every_option_and_argument() -> None:
    root = typer.main.get_command(app)
    main_page = (MAN / "warmctl.1").read_text()
    for param in root.params:
        for opt in param.opts:
            assert roff(opt) in main_page, f"warmctl.1 lacks global option {opt}"
    for name, command in verbs().items():
        page = MAN / f"warmctl-{name}.1"
        assert page.exists(), f"no man page for `warmctl {name}`: run make docs"
        assert f"warmctl\\-{roff(name)}" in main_page, f"warmctl.1 does not list {name}"
        text = page.read_text()
        for param in command.params:
            if param.param_type_name == "option":
                for opt in param.opts:
                    assert roff(opt) in text, f"{page.name} lacks {opt}"
            else:
                metavar = param.metavar or (param.name or "").upper()
                words = [w for w in metavar.replace("[", " ").replace("]", " ").split()
                         if w.strip(".-")]
                for word in words:
                    assert roff(word.strip(".")) in text, f"{page.name} lacks argument {word}"
        assert roff("--help") in text


def test_no_flag_is_shown_as_taking_a_value() -> None:
    """typer shows `<bool>` after a boolean option unless its metavar is empty (options.flag)."""
    commands = {"warmctl": typer.main.get_command(app), **verbs()}
    for name, command in commands.items():
        for param in command.params:
            if getattr(param, "is_flag", False) and param.name != "help":
                assert param.metavar == "", f"{name} {param.opts[0]}: use options.flag()"


def test_every_command_has_hand_written_examples() -> None:
    missing = [name for name in verbs()
               if "== EXAMPLES" not in _source(f"warmctl-{name}.txt")]
    assert not missing, (
        f"write man/src/warmctl-VERB.txt with an == EXAMPLES section for: {', '.join(missing)} "
        "(see man/src/README), then run make docs"
    )


def _source(name: str) -> str:
    path = MAN / "src" / name
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("page", sorted(MAN.glob("*.1")), ids=lambda p: p.name)
def test_page_has_the_sections_the_exit_codes_and_the_environment(page: Path) -> None:
    text = page.read_text()
    headings = [line.removeprefix(".SH ") for line in text.splitlines()
                if line.startswith(".SH ")]
    for section in SECTIONS:
        assert section in headings, f"{page.name} lacks {section}"
    exit_status = text.split('.SH "EXIT STATUS"')[1].split(".SH ")[0]
    for code in EXIT_CODE_MEANINGS:
        assert f".B {int(code)}\n" in exit_status, f"{page.name}: exit status {int(code)}"
    environment = text.split(".SH ENVIRONMENT")[1].split(".SH ")[0]
    for variable in ENVIRONMENT:
        assert variable in environment, f"{page.name}: {variable}"


def test_main_page_examples_cover_memcached_java_and_exit_codes() -> None:
    examples = (MAN / "warmctl.1").read_text().split(".SH EXAMPLES")[1].split(".SH ")[0]
    assert "memcached" in examples
    assert "Java" in examples
    assert "case $status in" in examples


# --- lint ------------------------------------------------------------------------------------


LINTERS = {
    "mandoc": ["mandoc", "-T", "lint", "-W", "style"],
    "groff": ["groff", "-man", "-ww", "-z"],
}


@pytest.mark.parametrize("linter", sorted(LINTERS))
def test_man_pages_lint_clean(linter: str) -> None:
    argv = LINTERS[linter]
    if shutil.which(argv[0]) is None:
        message = f"{argv[0]} is not installed (scripts/provision-host installs it)"
        if os.environ.get("WARMCTL_REQUIRE_PODMAN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    for page in man_pages():
        result = subprocess.run([*argv, str(page)], capture_output=True, text=True, check=False)
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), page.name


# --- the completion protocol -----------------------------------------------------------------


def publish(home: Path, *names: str) -> None:
    """Snapshots in a catalogue, each with a few bytes of archive."""
    with Catalogue(home).open() as catalogue:
        for name in names:
            temp = catalogue.new_temp_file()
            data = name.encode()
            temp.path.write_bytes(data)
            record = SnapshotRecord(name=name, container_name=name, container_id="c" * 64,
                                    image_name="localhost/x:latest", image_id="i" * 64,
                                    compression="none")
            catalogue.publish(temp, record, sha256=hashlib.sha256(data).hexdigest())


def complete(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], line: str,
             protocol: str = "bash") -> list[str]:
    """What warmctl answers to bash (or zsh) for the command line `line`."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    monkeypatch.setenv("_WARMCTL_COMPLETE", f"complete_{protocol}")
    monkeypatch.setenv("COMP_WORDS", line)
    monkeypatch.setenv("COMP_CWORD", str(cword))
    assert main([]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    publish(home, "memcached", "memcached", "java-app")
    monkeypatch.setenv("WARMCTL_HOME", str(home))
    return home


def test_completes_commands(monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(monkeypatch, capsys, "warmctl res") == ["plain,resume"]
    assert {f"plain,{name}" for name in verbs()} <= set(complete(monkeypatch, capsys, "warmctl "))


def test_completes_refs_from_the_catalogue(home: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("resume", "show", "rm", "verify"):
        assert complete(monkeypatch, capsys, f"warmctl {verb} ") == [
            "plain,java-app", "plain,java-app@1",
            "plain,memcached", "plain,memcached@1", "plain,memcached@2",
        ]
    assert complete(monkeypatch, capsys, "warmctl resume memcached@") == [
        "plain,memcached@1", "plain,memcached@2"]
    assert complete(monkeypatch, capsys, "warmctl prune ") == ["plain,java-app", "plain,memcached"]


def test_global_home_option_chooses_the_catalogue(home: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "other"
    publish(other, "redis")
    assert complete(monkeypatch, capsys, f"warmctl --home {other} resume ") == [
        "plain,redis", "plain,redis@1"]


def test_no_catalogue_means_no_candidates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WARMCTL_HOME", str(tmp_path / "absent"))
    assert complete(monkeypatch, capsys, "warmctl resume ") == []
    assert not (tmp_path / "absent").exists()


def test_completes_fixed_choices_and_paths(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(monkeypatch, capsys, "warmctl snapshot --compress ") == [
        "plain,zstd", "plain,none", "plain,gzip"]
    assert complete(monkeypatch, capsys, "warmctl snapshot -c=g") == ["plain,gzip"]
    assert complete(monkeypatch, capsys, "warmctl completion ") == [
        "plain,bash", "plain,zsh", "plain,fish"]
    assert complete(monkeypatch, capsys, "warmctl --home /tm") == ["file,/tm"]


def test_zsh_and_fish_answers_carry_help(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert complete(monkeypatch, capsys, "warmctl res", protocol="zsh") == [
        "plain", "resume", "Restore a snapshot as a running container"]
    monkeypatch.setenv("_WARMCTL_COMPLETE", "complete_fish")
    monkeypatch.setenv("COMP_WORDS", "warmctl res")
    monkeypatch.setenv("COMP_CWORD", "res")
    assert main([]) == 0
    assert capsys.readouterr().out == "plain,resume\tRestore a snapshot as a running container\n"


def test_unknown_completion_request_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("_WARMCTL_COMPLETE", "complete_tcsh")
    assert main([]) == 2
    assert "complete_SHELL" in capsys.readouterr().err


def test_clicks_spelling_of_the_request_works_too(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("_WARMCTL_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "warmctl res")
    monkeypatch.setenv("COMP_CWORD", "1")
    assert main([]) == 0
    assert capsys.readouterr().out == "plain,resume\n"


def test_completion_request_stays_light(home: Path) -> None:
    """A <TAB> must not pay for rich, pydantic (typer's coercion), the catalogue module or the
    podman adapter: it answers in a fresh process each time."""
    probe = (
        "import sys\n"
        "from warmctl.cli.main import main\n"
        "code = main()\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('rich', 'pydantic', 'cryptography')\n"
        "               or m in ('warmctl.catalogue', 'warmctl.podman', 'warmctl.app'))\n"
        "print('HEAVY', heavy, code)\n"
    )
    env = {**os.environ, "WARMCTL_HOME": str(home), "_WARMCTL_COMPLETE": "complete_bash",
           "COMP_WORDS": "warmctl resume ", "COMP_CWORD": "2"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, check=True)
    assert "plain,memcached@2" in result.stdout
    assert "HEAVY [] 0" in result.stdout


def test_summary_is_the_first_clause_of_the_help() -> None:
    assert completion_cmd.summary(verbs()["resume"]) == "Restore a snapshot as a running container"
