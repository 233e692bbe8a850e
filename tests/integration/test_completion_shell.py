"""Shell completion in real shells, and the installed man pages.

bash (with bash-completion), zsh and fish are run as a user would run them: bash and zsh
interactively inside tmux, with keys typed and the screen read back; bash also through its
completion function with COMP_WORDS set, for exact candidate lists; fish through
`complete -C`. The completions are the ones `make install DESTDIR=...` stages, found the way
each shell finds installed completions (XDG_DATA_DIRS, $fpath), or the committed file sourced.

scripts/provision-host installs the shells, tmux, bash-completion, groff and mandoc. When
WARMCTL_REQUIRE_PODMAN=1 (CI), a missing one fails the test instead of skipping it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import IMAGES, Containers, podman

from warmctl.catalogue import Catalogue, SnapshotRecord

pytestmark = pytest.mark.podman

ROOT = Path(__file__).resolve().parents[2]
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
REFS = ["java-app", "java-app@1", "memcached", "memcached@1", "memcached@2"]


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed (scripts/provision-host installs it)"
        if os.environ.get("WARMCTL_REQUIRE_PODMAN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue with memcached@1, memcached@2 and java-app@1."""
    home = tmp_path_factory.mktemp("completion") / "home"
    with Catalogue(home).open() as catalogue:
        for name in ("memcached", "memcached", "java-app"):
            temp = catalogue.new_temp_file()
            temp.path.write_bytes(b"not really an archive")
            record = SnapshotRecord(name=name, container_name=name, container_id="c" * 64,
                                    image_name="localhost/x:latest", image_id="i" * 64,
                                    compression="none")
            catalogue.publish(temp, record,
                              sha256=hashlib.sha256(b"not really an archive").hexdigest())
    return home


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make install` into a staging directory; returns its PREFIX/share."""
    need("make")
    stage = tmp_path_factory.mktemp("stage")
    subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={stage}"],
                   check=True, capture_output=True)
    return stage / "usr" / "local" / "share"


@pytest.fixture
def env(home: Path, share: Path, tmp_path: Path) -> dict[str, str]:
    """A clean environment: this venv's warmctl first on PATH, no user configuration."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "warmctl").exists(), "warmctl is not installed in this Python's venv"
    user = tmp_path / "user"
    user.mkdir()
    return {
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(user),
        "XDG_CONFIG_HOME": str(user / ".config"),
        "XDG_DATA_HOME": str(user / ".local" / "share"),
        "XDG_DATA_DIRS": f"{share}:/usr/share",
        "WARMCTL_HOME": str(home),
        "TERM": "xterm",
        "LANG": "C.UTF-8",
    }


# --- bash, through its completion function ----------------------------------------------------

_DRIVER = r"""
source {bash_completion}
{load}
spec=$(complete -p warmctl) || exit 3
fn=${{spec##*-F }}; fn=${{fn%% *}}
for line in "$@"; do
    COMP_LINE=$line COMP_POINT=${{#line}}
    read -ra COMP_WORDS <<<"$line"
    [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
    COMPREPLY=()
    "$fn" warmctl "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    printf '@@%s\n' "$line"
    printf '%s\n' "${{COMPREPLY[@]}}"
done
"""


def bash_complete(env: dict[str, str], lines: list[str], *,
                  installed: bool) -> dict[str, list[str]]:
    """{line: COMPREPLY} as bash-completion computes it after the user typed `line`."""
    need("bash")
    if not BASH_COMPLETION.exists():
        need("bash-completion")  # not a program: fails or skips with the package's name
    # Installed: bash-completion's own on-demand loader finds it through XDG_DATA_DIRS.
    load = ("__load_completion warmctl" if installed
            else f"source {shlex.quote(str(ROOT / 'completions' / 'warmctl.bash'))}")
    script = _DRIVER.format(bash_completion=BASH_COMPLETION, load=load)
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", *lines],
                            capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    answers: dict[str, list[str]] = {}
    current: list[str] = []
    for out in result.stdout.splitlines():
        if out.startswith("@@"):
            current = answers.setdefault(out[2:], [])
        elif out:
            current.append(out)
    return answers


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "sourced"])
def test_bash_completes_commands_refs_and_choices(env: dict[str, str], installed: bool) -> None:
    answers = bash_complete(env, [
        "warmctl res",
        "warmctl resume ",
        "warmctl resume mem",
        "warmctl show java",
        "warmctl rm memcached@1 ",
        "warmctl verify ",
        "warmctl prune ",
        "warmctl snapshot --compress ",
        "warmctl completion ",
        "warmctl resume --",
    ], installed=installed)
    assert answers["warmctl res"] == ["resume"]
    assert answers["warmctl resume "] == REFS
    assert answers["warmctl resume mem"] == ["memcached", "memcached@1", "memcached@2"]
    assert answers["warmctl show java"] == ["java-app", "java-app@1"]
    assert answers["warmctl rm memcached@1 "] == REFS
    assert answers["warmctl verify "] == REFS
    assert answers["warmctl prune "] == ["java-app", "memcached"]
    assert sorted(answers["warmctl snapshot --compress "]) == ["gzip", "none", "zstd"]
    assert answers["warmctl completion "] == ["bash", "zsh", "fish"]
    assert {"--name", "--publish", "--replace", "--json"} <= set(answers["warmctl resume --"])


def test_bash_completes_running_containers_and_local_images(
    env: dict[str, str], containers: Containers
) -> None:
    name = containers.name("tab")
    podman("run", "--detach", "--name", name, IMAGES["busybox"], "sleep", "1000")
    answers = bash_complete(env, [f"warmctl snapshot {containers.prefix}",
                                  "warmctl warm localhost/warmctl-test/"], installed=True)
    assert answers[f"warmctl snapshot {containers.prefix}"] == [name]
    images = answers["warmctl warm localhost/warmctl-test/"]
    assert f"{IMAGES['busybox']}:latest" in images
    assert f"{IMAGES['memcached']}:latest" in images


# --- interactive shells in tmux ---------------------------------------------------------------


class Terminal:
    """A shell in a private tmux server: type keys, read the screen."""

    def __init__(self, tmp_path: Path, command: list[str], env: dict[str, str]) -> None:
        need("tmux")
        self.socket = str(tmp_path / "tmux.sock")
        subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", "new-session", "-d",
                        "-s", "t", "-x", "160", "-y", "50", shlex.join(command)],
                       check=True, env=env, timeout=30)

    def type(self, *keys: str) -> None:
        subprocess.run(["tmux", "-S", self.socket, "send-keys", "-t", "t", *keys], check=True,
                       timeout=30)

    def screen(self) -> str:
        # -N keeps trailing spaces: the space bash adds after a complete word.
        return subprocess.run(["tmux", "-S", self.socket, "capture-pane", "-p", "-N", "-t", "t"],
                              capture_output=True, text=True, check=True, timeout=30).stdout

    def wait_for(self, pattern: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if re.search(pattern, screen, re.MULTILINE):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} did not appear; the screen:\n{screen}")
            time.sleep(0.1)

    def clear_line(self) -> None:
        self.type("C-c")
        self.type("clear", "Enter")
        self.wait_for(r"\A\S+ ?\s*\Z")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], check=False, timeout=30)


@pytest.fixture
def bash_terminal(env: dict[str, str], tmp_path: Path) -> Iterator[Terminal]:
    need("bash")
    rc = tmp_path / "bashrc"
    rc.write_text(
        "PS1='READY$ '\n"
        "bind 'set bell-style none'\n"
        f"source {BASH_COMPLETION}\n"  # as /etc/bash.bashrc or /etc/profile.d would
    )
    terminal = Terminal(tmp_path, ["bash", "--noprofile", "--rcfile", str(rc), "-i"], env)
    try:
        terminal.wait_for(r"^READY\$ ")
        yield terminal
    finally:
        terminal.close()


def test_bash_tab_completes_verb_and_lists_refs(bash_terminal: Terminal, tmp_path: Path) -> None:
    """The issue's acceptance test: in a fresh bash with the installed completion,
    `warmctl res<TAB>` becomes `warmctl resume `, and `warmctl resume <TAB>` lists the refs."""
    term = bash_terminal
    term.type("warmctl res", "Tab")
    term.wait_for(r"^READY\$ warmctl resume +$")
    term.clear_line()
    term.type("warmctl resume ", "Tab", "Tab")
    screen = term.wait_for(r"memcached@2")
    listed = set(re.findall(r"[\w.-]+(?:@\d+)?", screen.split("warmctl resume", 1)[1]))
    assert set(REFS) <= listed, screen
    term.clear_line()
    term.type("warmctl resume memcached@", "Tab", "Tab")
    term.wait_for(r"memcached@1\s+memcached@2")
    term.clear_line()
    # '=' and ':' are word breaks for readline; the script keeps them in one word.
    term.type("warmctl snapshot --compress=gz", "Tab")
    term.wait_for(r"^READY\$ warmctl snapshot --compress=gzip +$")
    term.clear_line()
    term.type("warmctl warm localhost/warmctl-test/busybox:", "Tab")
    term.wait_for(r"^READY\$ warmctl warm localhost/warmctl-test/busybox:latest +$")
    term.clear_line()
    # --home takes a directory: the shell completes paths.
    (tmp_path / "somewhere-else").mkdir()
    term.type(f"warmctl --home {tmp_path}/somewhere-e", "Tab")
    term.wait_for(rf"^READY\$ warmctl --home {re.escape(str(tmp_path))}/somewhere-else/ *$")


def test_zsh_tab_completes_verb_and_lists_refs(env: dict[str, str], share: Path,
                                               tmp_path: Path) -> None:
    need("zsh")
    zdotdir = tmp_path / "zdotdir"
    zdotdir.mkdir()
    (zdotdir / ".zshrc").write_text(
        "PS1='READY%# '\n"
        "unsetopt beep\n"
        f"fpath=({share}/zsh/site-functions $fpath)\n"
        f"autoload -Uz compinit && compinit -u -d {zdotdir}/.zcompdump\n"
    )
    term = Terminal(tmp_path, ["zsh", "-i"], {**env, "ZDOTDIR": str(zdotdir)})
    try:
        term.wait_for(r"^READY[%#] ")
        term.type("warmctl res", "Tab")
        term.wait_for(r"^READY[%#] warmctl resume +$")
        term.clear_line()
        term.type("warmctl resume ", "Tab")
        screen = term.wait_for(r"memcached@2")
        assert set(REFS) <= set(re.findall(r"[\w.-]+(?:@\d+)?", screen)), screen
        term.clear_line()
        term.type("warmctl snapshot --compress ", "Tab")
        term.wait_for(r"gzip\s+none\s+zstd")
        term.clear_line()
        term.type("warmctl ", "Tab")
        term.wait_for(r"resume\s+-- Restore a snapshot as a running container")
    finally:
        term.close()


def test_fish_completes_verb_refs_and_choices(env: dict[str, str]) -> None:
    need("fish")

    def complete(line: str) -> list[str]:
        result = subprocess.run(["fish", "-c", f"complete -C {shlex.quote(line)}"],
                                capture_output=True, text=True, env=env, timeout=60,
                                check=True)
        return [out.split("\t")[0] for out in result.stdout.splitlines()]

    # Found in XDG_DATA_DIRS' fish/vendor_completions.d, where make install put it.
    assert complete("warmctl res") == ["resume"]
    assert complete("warmctl resume ") == REFS
    assert complete("warmctl resume memcached@") == ["memcached@1", "memcached@2"]
    assert complete("warmctl snapshot --compress ") == ["gzip", "none", "zstd"]


# --- man pages, installed ---------------------------------------------------------------------


def test_make_install_puts_man_pages_where_man_finds_them(tmp_path: Path) -> None:
    need("make")
    need("man")
    stage = tmp_path / "stage"
    subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={stage}"],
                   check=True, capture_output=True)
    manpath = stage / "usr" / "local" / "share" / "man"
    env = {**os.environ, "MANPATH": str(manpath), "MANWIDTH": "80", "MANPAGER": "cat",
           "PAGER": "cat"}
    shown = subprocess.run(["man", "warmctl-resume"], capture_output=True, text=True, env=env,
                           check=True, timeout=60).stdout
    assert "warmctl-resume - restore a snapshot as a running container" in shown
    assert "EXIT STATUS" in shown
    for page in ROOT.glob("man/*.1"):
        assert (manpath / "man1" / page.name).read_bytes() == page.read_bytes()
    completions = stage / "usr" / "local" / "share"
    for installed in ("bash-completion/completions/warmctl", "zsh/site-functions/_warmctl",
                      "fish/vendor_completions.d/warmctl.fish"):
        assert (completions / installed).is_file()

    subprocess.run(["make", "-s", "-C", str(ROOT), "uninstall", f"DESTDIR={stage}"],
                   check=True, capture_output=True)
    assert [p for p in stage.rglob("*") if p.is_file()] == []
