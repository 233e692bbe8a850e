"""Text from outside never drives the terminal: a registry's error body and headers, every field
of a pulled snapshot's config, podman's and CRIU's messages reach stdout and stderr with their
control and bidi characters escaped (output.terminal_text), and --json keeps the data as it is.

Output is captured as bytes (capsysbinary): the assertions are on what a terminal would be sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_registry import FakeRegistry
from fakes import FakePodman

from warmctl.app import App
from warmctl.catalogue import Catalogue
from warmctl.cli import main as cli_main
from warmctl.errors import CheckpointError, ExitCode
from warmctl.host import doctor
from warmctl.host import facts as host
from warmctl.lifecycle.take import SnapshotOptions, take_snapshot
from warmctl.oci import client
from warmctl.oci.artifact import canonical_json
from warmctl.output import Output, json_escaped, terminal_text
from warmctl.progress import NoProgress as Progress

pytestmark = pytest.mark.usefixtures("usable_criu")

# What the hostile registry sent: red text, a window title, a cleared screen; then a
# C1 CSI (one character, U+009B), and a right-to-left override that reverses what follows.
EVIL = "vm\x1b[31mEVIL\x1b]0;pwn\x07\x1b[2J\x9b1m\u202eREVERSED"
# The same, as it must be shown: each character as Python writes it in a string.
SHOWN = r"vm\x1b[31mEVIL\x1b]0;pwn\x07\x1b[2J\x9b1m\u202eREVERSED"
# Raw bytes that must never reach the terminal: ESC, BEL, U+009B and U+202E in UTF-8.
FORBIDDEN = (b"\x1b", b"\x07", "\x9b".encode(), "\u202e".encode())

# A label value may hold no control character (pull refuses one), but may hold this.
BIDI = "alice\u202eXAM"

Run = Callable[..., tuple[int, str, str]]


def assert_clean(raw: bytes) -> None:
    for forbidden in FORBIDDEN:
        assert forbidden not in raw, f"{forbidden!r} reached the terminal: {raw!r}"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsysbinary: pytest.CaptureFixture[bytes]) -> Run:
    """main() in-process; returns (status, stdout, stderr) after checking both, as bytes, for
    anything that would drive a terminal."""
    monkeypatch.setenv("WARMCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    monkeypatch.setattr(client, "_backoff", lambda failures: 0.0)  # 5xx retries, at once

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli_main.main(list(argv))
        out, err = capsysbinary.readouterr()
        assert_clean(out)
        assert_clean(err)
        return code, out.decode(), err.decode()

    return invoke


@pytest.fixture
def podman(monkeypatch: pytest.MonkeyPatch) -> FakePodman:
    """The fake podman, as every command's app.podman."""
    fake = FakePodman()
    fake.add("mc")
    monkeypatch.setattr(App, "podman", property(lambda self: fake))
    return fake


def test_terminal_text_escapes_controls_and_bidi_and_keeps_the_rest() -> None:
    assert terminal_text(EVIL) == SHOWN
    assert terminal_text("caf\u00e9 \u6f22 [red]x[/red]") == "caf\u00e9 \u6f22 [red]x[/red]"
    assert terminal_text("a\u2066b\u200fc\u2028d\ufeffe") == r"a\u2066b\u200fc\u2028d\ufeffe"
    assert terminal_text("a\tb\nc", keep_tabs=True) == r"a	b\nc"
    assert terminal_text("\udc9b") == r"\udc9b"  # an undecodable byte (surrogateescape)
    encoded = json.dumps({"k": EVIL + "\U000e0001"}, indent=2, ensure_ascii=False)
    escaped = json_escaped(encoded)
    assert json.loads(escaped) == json.loads(encoded)  # the same data
    assert_clean(escaped.encode())
    assert "\U000e0001" not in escaped and r"\udb40\udc01" in escaped


# --- the registry's words ----------------------------------------------------------------------


def test_a_registry_error_body_with_escape_sequences_is_shown_escaped(
        run: Run, registry: FakeRegistry) -> None:
    body = json.dumps({"errors": [{"code": "UNKNOWN", "message": EVIL}]}).encode()
    registry.canned = (500, body, {"Content-Type": "application/json"})
    code, _, err = run("pull", f"{registry.host}/warm/mc:v1", "--tls-verify=false")
    assert code != ExitCode.OK
    assert err.startswith("warmctl: error: ") and err.count("\n") == 1
    assert SHOWN in err
    registry.canned = (400, body, {"Content-Type": "application/json"})
    code, _, err = run("pull", f"{registry.host}/warm/mc:v1", "--tls-verify=false")
    assert code == ExitCode.FAILURE and SHOWN in err


def test_a_registry_header_with_escape_sequences_is_shown_escaped(
        run: Run, registry: FakeRegistry) -> None:
    # A manifest that names no type of its own: its Content-Type header is quoted.
    # (Latin-1, and up to the first ";", where the media type's parameters begin).
    registry.put_manifest("warm/mc", "v1", b"{}", "vm\x1b[31mEVIL\x1b[2J\x9b1m\x07")
    code, _, err = run("pull", f"{registry.host}/warm/mc:v1", "--tls-verify=false")
    assert code == ExitCode.INTEGRITY
    assert r"it is a vm\x1b[31mEVIL\x1b[2J\x9b1m\x07 (" in err


# --- a pulled snapshot's fields ----------------------------------------------------------------


def push_evil_snapshot(registry: FakeRegistry, tmp_path: Path) -> str:
    """A snapshot taken here, pushed, then its config rewritten as a hostile pusher would:
    every field that pull does not refuse holds EVIL. Returns its reference."""
    podman = FakePodman()
    podman.add("mc")
    home = tmp_path / "pusher"
    with Catalogue(home).open() as cat:
        take_snapshot(cat, podman, "mc", "mc", SnapshotOptions(leave_running=True), Progress())
    assert cli_main.main(["--home", str(home), "push", "mc", f"{registry.host}/warm/mc:v1",
                          "--tls-verify=false", "-q"]) == ExitCode.OK
    body, media_type = registry.manifests[("warm/mc", "v1")]
    manifest = json.loads(body)
    config = json.loads(registry.blobs[manifest["config"]["digest"]])
    config["host"] = {key: EVIL for key in config["host"]} | {EVIL: EVIL}
    config.update(container_id=EVIL, image=EVIL, image_id=EVIL, ports=[EVIL],
                  created=config["created"], ref=EVIL, labels={"note": BIDI})
    config["criu_stats"] = {EVIL: 1}
    config["extra"]["warm"] = {"image": EVIL, "command": [EVIL], "warmup": EVIL}
    config["extra"]["cpu"] = {"arch": EVIL, "flags": EVIL}
    data = canonical_json(config)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.blobs[digest] = data
    manifest["config"].update(digest=digest, size=len(data))
    registry.put_manifest("warm/mc", "evil", canonical_json(manifest), media_type)
    return f"{registry.host}/warm/mc:evil"


@pytest.fixture
def pulled_evil(run: Run, registry: FakeRegistry, tmp_path: Path) -> str:
    code, out, err = run("pull", push_evil_snapshot(registry, tmp_path), "--tls-verify=false")
    assert code == ExitCode.OK, err
    return out.split()[-1]  # after what push printed


def test_show_and_list_of_a_pulled_snapshot_with_escape_sequences(
        run: Run, pulled_evil: str) -> None:
    code, out, err = run("show", pulled_evil)
    assert code == ExitCode.OK, err
    for key in ("host.hostname", "host.kernel", "image", "ports", "labels", "pulled.source_ref",
                "warm.command"):
        line = next(line for line in out.splitlines() if line.startswith(key + " "))
        assert SHOWN in line or r"alice\u202eXAM" in line
    assert f"host.{SHOWN}" in out and f"criu.{SHOWN}" in out
    code, out, err = run("list")
    assert code == ExitCode.OK, err
    assert SHOWN in out and r"note=alice\u202eXAM" in out
    assert len(out.splitlines()) == 2


def test_json_keeps_a_pulled_snapshots_fields_as_they_are(run: Run, pulled_evil: str) -> None:
    _, out, _ = run("show", pulled_evil, "--json")
    assert json.loads(out)["host"]["hostname"] == EVIL
    _, out, _ = run("list", "--json")
    assert json.loads(out)[0]["labels"] == {"note": BIDI}


def test_doctor_snapshot_escapes_every_host_line(
        run: Run, pulled_evil: str, podman: FakePodman, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    facts = doctor.HostFacts(
        euid=0, kernel="6.18.44", podman=podman.host_versions(), podman_error="",
        criu=doctor.CriuFacts("/usr/sbin/criu", "4.2.1"), ulimits=doctor.UlimitFacts(),
        cgroup2_mounted=False, catalogue=doctor.CatalogueFacts(tmp_path / "home"),
    )
    monkeypatch.setattr(doctor, "gather_facts", lambda podman, home: facts)
    monkeypatch.setattr(host, "kernel_release", lambda: "6.18.44")
    code, out, err = run("doctor", "--snapshot", pulled_evil)
    assert code == ExitCode.OK, err  # differences warn
    host_lines = [line for line in out.splitlines() if " host-" in line]
    assert len(host_lines) == 6
    for line in host_lines:
        assert "\\x1b" in line, line
    assert any(SHOWN in line for line in host_lines)


def test_resume_warns_of_host_differences_escaped(
        run: Run, pulled_evil: str, podman: FakePodman,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host, "kernel_release", lambda: "6.18.44")
    code, _, err = run("resume", pulled_evil, "--name", "copy")
    warnings = [line for line in err.splitlines() if line.startswith("warmctl: warning: ")]
    assert any(f"kernel 6.18.44 here, {SHOWN} on {SHOWN}" in line for line in warnings), err
    code, _, err = run("resume", pulled_evil, "--name", "copy2", "--strict")
    assert code == ExitCode.ENVIRONMENT and err.count("\n") == 1 and SHOWN in err


# --- podman's and CRIU's words -----------------------------------------------------------------


def test_podman_and_criu_messages_are_shown_escaped(run: Run, podman: FakePodman,
                                                   tmp_path: Path) -> None:
    criu_log = tmp_path / "dump.log"
    criu_log.write_text(f"(00.001000) Error (criu/cr-dump.c:1): {EVIL}\n")
    podman.fail_checkpoint = CheckpointError(
        f"checkpoint of mc failed: {EVIL}", stderr=f"Error: {EVIL}\n{EVIL}",
        criu_log=criu_log, hint=f"see {EVIL}")
    code, _, err = run("snapshot", "mc", "mc")
    assert code == ExitCode.PODMAN_FAILED, err
    # podman's message, CRIU's error line and the hint: on one line.
    assert err.count("\n") == 1 and err.count(SHOWN) == 3, err
    podman.fail_checkpoint = None
    assert run("snapshot", "mc", "mc", "-R")[0] == ExitCode.OK
    podman.fail_restore = f"restore failed: {EVIL}\ncriu: {EVIL}"
    code, _, err = run("resume", "mc", "--name", "copy")
    assert code != ExitCode.OK
    error = err.splitlines()[-1]  # after a warning that the fake host's kernel differs
    assert error.startswith("warmctl: error: restore failed: ") and error.count(SHOWN) == 2


def test_an_unexpected_exception_quoting_outside_text_is_escaped(
        run: Run, podman: FakePodman, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(EVIL)

    monkeypatch.setattr(FakePodman, "checkpoint", explode)
    code, _, err = run("snapshot", "mc", "mc")
    assert code == ExitCode.FAILURE and SHOWN in err and err.count("\n") == 1


def test_debug_lines_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(cli_main._EscapingFormatter(logging.Formatter("debug: %(message)s")))
    logger = logging.getLogger("warmctl.test_escaping")
    logger.addHandler(handler)
    try:
        logger.warning("podman said %s", EVIL)
    finally:
        logger.removeHandler(handler)
    assert capsys.readouterr().err == f"debug: podman said {SHOWN}\n"


# --- labels: bidi and markup -------------------------------------------------------------------


def test_a_bidi_override_in_a_label_does_not_reorder_list(run: Run, podman: FakePodman) -> None:
    code, _, err = run("snapshot", "mc", "mc", "-R", "--label", "owner=alice\u202eXAM",
                       "--label", "colour=[red]hot[/red]")
    assert code == ExitCode.OK, err
    code, out, _ = run("list")
    assert r"owner=alice\u202eXAM" in out and "colour=[red]hot[/red]" in out
    code, out, _ = run("list", "--json")
    assert json.loads(out)[0]["labels"]["owner"] == "alice\u202eXAM"


def test_a_terminal_table_shows_markup_as_text_and_escapes(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    Output().table(["REF", "LABELS"], [["mc@1", f"a=[red]hot[/red],b={EVIL}"]])
    out = capsys.readouterr().out
    assert "a=[red]hot[/red]" in out and SHOWN in out
    # rich styles the header (ESC [1m); what the cell held is not on the terminal.
    for sequence in ("\x1b[31m", "\x1b]0;", "\x07", "\x1b[2J", "\x9b", "\u202e"):
        assert sequence not in out


def test_the_progress_line_escapes_what_it_names() -> None:
    import io

    from rich.console import Console

    from warmctl.output import LiveProgress

    live = LiveProgress(Console(file=io.StringIO()), f"pull {EVIL}")
    live.phase(f"connecting to {EVIL}")
    line = str(live._render())
    assert line.count(SHOWN) == 2
    assert_clean(line.encode())
