"""push and pull through the command line, in-process, against the fake registry: exit
codes, one-line errors and the --json shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_registry import FakeRegistry
from fakes import FakePodman

from warmctl.catalogue import Catalogue
from warmctl.cli import main as cli_main
from warmctl.errors import ExitCode
from warmctl.output import Progress
from warmctl.snapshots import SnapshotOptions, take_snapshot

pytestmark = pytest.mark.usefixtures("usable_criu")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalogue holding mc@1, made with the fake podman."""
    home = tmp_path / "home"
    monkeypatch.setenv("WARMCTL_HOME", str(home))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    # The signature policy pull obeys: this test's, not the host's.
    monkeypatch.setenv("HOME", str(tmp_path))
    policy = tmp_path / ".config" / "containers" / "policy.json"
    policy.parent.mkdir(parents=True)
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    podman = FakePodman()
    podman.add("mc")
    with Catalogue(home).open() as cat:
        take_snapshot(cat, podman, "mc", "mc", SnapshotOptions(leave_running=True), Progress())
    return home


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_push_and_pull_json(home: Path, tmp_path: Path, registry: FakeRegistry,
                            capsys: pytest.CaptureFixture[str]) -> None:
    dest = f"{registry.host}/warm/mc"
    code, out, err = run(capsys, "push", "mc", dest, "--tls-verify=false", "--json")
    assert code == ExitCode.OK, err
    pushed = json.loads(out)
    assert list(pushed) == ["ref", "destination", "manifest_digest", "blob_digest",
                            "bytes_uploaded", "skipped_existing", "signature"]
    assert pushed["destination"] == f"{dest}:mc-1"
    code, out, err = run(capsys, "push", "mc@1", dest, "--tls-verify", "false")
    assert code == ExitCode.OK
    assert out == f"{dest}:mc-1@{pushed['manifest_digest']}\n"
    assert "nothing large sent" in err

    other = tmp_path / "other"
    code, out, err = run(capsys, "--home", str(other), "pull",
                         f"{dest}@{pushed['manifest_digest']}", "copy", "--tls-verify=false",
                         "--json")
    assert code == ExitCode.OK, err
    pulled = json.loads(out)
    assert pulled["ref"] == "copy@1"
    assert pulled["sha256"] == pushed["blob_digest"].removeprefix("sha256:")
    assert pulled["pulled"]["manifest_digest"] == pushed["manifest_digest"]
    code, out, _ = run(capsys, "--home", str(other), "list", "--json")
    assert json.loads(out)[0]["pulled"] == pulled["pulled"]


def test_push_to_a_registry_that_is_down(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeRegistry() as reg:
        host = reg.host
    code, out, err = run(capsys, "push", "mc", f"{host}/warm/mc", "--tls-verify=false")
    assert code == ExitCode.ENVIRONMENT and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"warmctl: error: registry {host} is unreachable: connect: "
                          "connection refused")


@pytest.mark.parametrize("argv", [
    ("push", "mc", "127.0.0.1:1/mc", "--tls-verify=maybe"),
    ("push", "mc", "memcached"),
    ("pull", "127.0.0.1:1/mc", "Not A Name"),
])
def test_usage_errors(home: Path, capsys: pytest.CaptureFixture[str],
                      argv: tuple[str, ...]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == ExitCode.USAGE, err


def test_pull_of_a_missing_tag(home: Path, registry: FakeRegistry,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "pull", f"{registry.host}/warm/none:1", "--tls-verify=false")
    assert code == ExitCode.NOT_FOUND, err


def test_progress_line_shows_a_bar_when_the_total_is_known() -> None:
    import io

    from rich.console import Console

    from warmctl.output import LiveProgress

    live = LiveProgress(Console(file=io.StringIO()), "push mc")
    live.phase("uploading mc@1")
    live.expect(1000)
    live.advance(400)
    assert "40% of 1000 B" in str(live._render())
    live.advance(-100)  # a resumed upload sends part of a chunk again
    assert "30% of 1000 B" in str(live._render())
    live.phase("tagging")
    assert "%" not in str(live._render())
