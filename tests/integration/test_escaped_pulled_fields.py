"""A snapshot whose pushed config was rewritten to hold escape sequences in every host field
(the issue's `vm\\e[31mEVIL\\e]0;pwn\\a\\e[2J`): pulled from a real registry, shown, listed,
checked by `doctor --snapshot` against this host, and resumed by the real podman, whose
host-difference warnings quote those fields. Nothing that would drive a terminal reaches
stdout or stderr; the fields are shown escaped; `--json` keeps them as they are."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support import Containers, Result, Warmctl, podman
from test_core_verbs import last_count, start_looper
from test_registry_roundtrip import Registry, registry
from test_trust import get_blob, get_manifest, put_blob, put_manifest, write_policy

pytestmark = pytest.mark.podman
__all__ = ["registry"]  # the fixture, imported for the tests below

EVIL = "vm\x1b[31mEVIL\x1b]0;pwn\x07\x1b[2J\x9b1m\u202eREVERSED"
SHOWN = r"vm\x1b[31mEVIL\x1b]0;pwn\x07\x1b[2J\x9b1m\u202eREVERSED"


def assert_clean(result: Result) -> None:
    for stream in (result.stdout, result.stderr):
        for forbidden in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert forbidden not in stream, f"{forbidden!r} reached the terminal: {stream!r}"


def test_a_pulled_config_with_escape_sequences_reaches_no_terminal(
    warmctl: Warmctl, containers: Containers, registry: Registry, tmp_path: Path
) -> None:
    name = start_looper(containers)
    warmctl("snapshot", "--leave-running", name, "loop")
    warmctl("push", "loop", f"{registry.host}/warm/loop:v1", "--tls-verify=false")
    # What a hostile pusher writes instead: the same archive, a config of its own making.
    manifest = json.loads(get_manifest(registry, "warm/loop", "v1"))
    config = json.loads(get_blob(registry, "warm/loop", manifest["config"]["digest"]))
    config["host"] = {key: EVIL for key in config["host"]}
    config["labels"] = {"note": "alice\u202eXAM"}  # control characters are refused at pull
    data = json.dumps(config).encode()
    manifest["config"].update(digest=put_blob(registry, "warm/loop", data), size=len(data))
    put_manifest(registry, "warm/loop", "evil", json.dumps(manifest).encode())

    elsewhere = Warmctl(tmp_path / "elsewhere")
    policy = write_policy(tmp_path / "accept.json",
                          {"default": [{"type": "insecureAcceptAnything"}]})
    pulled = elsewhere("pull", f"{registry.host}/warm/loop:evil", "--tls-verify=false",
                       "--signature-policy", str(policy))
    assert_clean(pulled)
    assert pulled.stdout.strip() == "loop@1"

    shown = elsewhere("show", "loop")
    assert_clean(shown)
    for key in ("hostname", "kernel", "criu", "podman", "runtime"):
        assert f"host.{key}" in shown.stdout
    assert shown.stdout.count(SHOWN) >= 5
    assert "origin" in shown.stdout and "UNSIGNED" in shown.stdout
    as_json = elsewhere("show", "loop", "--json")
    assert_clean(as_json)
    assert json.loads(as_json.stdout)["host"]["hostname"] == EVIL

    listed = elsewhere("list")
    assert_clean(listed)
    assert r"note=alice\u202eXAM" in listed.stdout

    doctor = elsewhere("doctor", "--snapshot", "loop", check=False)
    assert_clean(doctor)
    host_lines = [line for line in doctor.stdout.splitlines() if " host-" in line]
    assert len(host_lines) == 6
    assert sum(SHOWN in line for line in host_lines) >= 4  # kernel, criu, podman, runtime

    podman("rm", "--force", "--time", "0", name)
    resumed = elsewhere("resume", "loop")
    assert_clean(resumed)
    assert resumed.stdout.strip() == name
    warnings = [line for line in resumed.stderr.splitlines() if "warning" in line]
    assert any(f"on {SHOWN}" in line and "kernel" in line for line in warnings), resumed.stderr
    # The real podman restored it: the loop goes on counting.
    before = last_count(name)
    deadline = time.monotonic() + 20
    while last_count(name) <= before:
        assert time.monotonic() < deadline, "the resumed looper does not count"
        time.sleep(0.1)
