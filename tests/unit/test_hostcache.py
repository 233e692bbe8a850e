"""podman's host versions are remembered while the programs and their configuration stay
the same, and asked again when they change."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fakes import FakePodman

from warmctl.host import podman_info as hostcache
from warmctl.podman import HostVersions, PodmanCLI


class FingerprintedPodman(FakePodman):
    def __init__(self, fingerprint: str | None = "podman 4.3.1 on kernel 6.18") -> None:
        super().__init__()
        self.fingerprint = fingerprint
        self.version = "4.3.1"
        self.info_calls = 0

    def versions_fingerprint(self) -> str | None:
        return self.fingerprint

    def host_versions(self) -> HostVersions:
        self.info_calls += 1
        return HostVersions(self.version, "runc", "runc 1.1.5", "6.18.0", "testhost")


def test_asked_once_while_the_fingerprint_holds(tmp_path: Path) -> None:
    podman, cache = FingerprintedPodman(), tmp_path / "cache" / "host-versions.json"
    assert hostcache.host_versions(podman, cache).podman == "4.3.1"
    assert hostcache.host_versions(podman, cache).podman == "4.3.1"
    assert podman.info_calls == 1
    assert stat.S_IMODE(os.stat(cache.parent).st_mode) == 0o700


def test_asked_again_when_the_fingerprint_changes(tmp_path: Path) -> None:
    podman, cache = FingerprintedPodman(), tmp_path / "host-versions.json"
    hostcache.host_versions(podman, cache)
    podman.fingerprint, podman.version = "podman 5.0 on kernel 6.18", "5.0.0"
    assert hostcache.host_versions(podman, cache).podman == "5.0.0"
    assert podman.info_calls == 2


def test_asked_again_after_a_day(tmp_path: Path) -> None:
    podman, cache = FingerprintedPodman(), tmp_path / "host-versions.json"
    hostcache.host_versions(podman, cache)
    entry = json.loads(cache.read_text())
    entry["at"] -= hostcache.MAX_AGE_S + 1
    cache.write_text(json.dumps(entry))
    hostcache.host_versions(podman, cache)
    assert podman.info_calls == 2


def test_a_broken_or_unwritable_cache_only_costs_time(tmp_path: Path) -> None:
    podman, cache = FingerprintedPodman(), tmp_path / "host-versions.json"
    cache.write_text("{not json")
    assert hostcache.host_versions(podman, cache).podman == "4.3.1"
    blocked = tmp_path / "a-file" / "host-versions.json"
    (tmp_path / "a-file").write_text("")
    assert hostcache.host_versions(podman, blocked).podman == "4.3.1"
    assert podman.info_calls == 2


def test_without_a_fingerprint_nothing_is_cached(tmp_path: Path) -> None:
    podman, cache = FingerprintedPodman(fingerprint=None), tmp_path / "host-versions.json"
    hostcache.host_versions(podman, cache)
    hostcache.host_versions(podman, cache)
    assert podman.info_calls == 2 and not cache.exists()


def test_the_real_adapters_fingerprint_follows_its_program_and_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / "podman"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    conf = tmp_path / "containers.conf"
    conf.write_text("[engine]\n")
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    podman = PodmanCLI(str(program))
    first = podman.versions_fingerprint()
    assert first is not None and first == podman.versions_fingerprint()
    conf.write_text("[engine]\nruntime = \"crun\"\n")
    second = podman.versions_fingerprint()
    assert second != first
    program.write_text("#!/bin/sh\n# upgraded\n")
    assert podman.versions_fingerprint() not in (first, second)
    assert PodmanCLI(str(tmp_path / "missing")).versions_fingerprint() is None
