"""push and pull through the command line, in-process, against the fake registry: exit
codes, one-line errors and the --json shapes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import fake_registry
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


def _signal_during(monkeypatch: pytest.MonkeyPatch, method: str, signum: int) -> None:
    """The fake registry, as it serves ``method`` (a blob's upload or download), sends this
    process ``signum``: Python runs the handler in the main thread, which waits on the
    registry's answer meanwhile, as warmctl would under `kill` or systemd's stop."""
    original = getattr(fake_registry._Handler, method)

    def signalling(self: Any, *args: Any) -> None:
        os.kill(os.getpid(), signum)
        original(self, *args)

    monkeypatch.setattr(fake_registry._Handler, method, signalling)


@pytest.mark.parametrize(("signum", "said"), [(signal.SIGTERM, "terminated (SIGTERM)"),
                                              (signal.SIGHUP, "hung up (SIGHUP)")])
def test_a_signal_during_push_leaves_no_manifest_and_exits_128_plus_n(
        home: Path, registry: FakeRegistry, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, signum: int, said: str) -> None:
    _signal_during(monkeypatch, "_patch", signum)
    code, out, err = run(capsys, "push", "mc", f"{registry.host}/warm/mc", "--tls-verify=false")
    # (The fake registry's own thread may complain on stderr of the connection warmctl cut.)
    assert (code, out) == (128 + signum, "")
    assert [line for line in err.splitlines() if line.startswith("warmctl")] == \
        [f"warmctl: error: {said}"]
    assert registry.manifests == {}
    assert not list((home / "tmp").iterdir())


@pytest.mark.parametrize(("signum", "said"), [(signal.SIGTERM, "terminated (SIGTERM)"),
                                              (signal.SIGHUP, "hung up (SIGHUP)")])
def test_a_signal_during_pull_records_nothing_and_leaves_no_temporary_file(
        home: Path, tmp_path: Path, registry: FakeRegistry, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, signum: int, said: str) -> None:
    dest = f"{registry.host}/warm/mc"
    assert run(capsys, "push", "mc", dest, "--tls-verify=false")[0] == ExitCode.OK
    _signal_during(monkeypatch, "_blob", signum)
    other = tmp_path / "other"
    code, out, err = run(capsys, "--home", str(other), "pull", f"{dest}:mc-1", "copy",
                         "--tls-verify=false")
    # (The fake registry's own thread may complain on stderr of the connection warmctl cut.)
    assert (code, out) == (128 + signum, "")
    assert [line for line in err.splitlines() if line.startswith("warmctl")] == \
        [f"warmctl: error: {said}"]
    monkeypatch.undo()
    code, out, _ = run(capsys, "--home", str(other), "list", "--json")
    assert json.loads(out) == []
    assert not list((other / "tmp").iterdir())
