from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_registry import FakeRegistry
from fakes import FakePodman

from warmctl import claim, container_lock, criu_config
from warmctl.catalogue import Catalogue
from warmctl.host import facts as host


@pytest.fixture
def fake_podman() -> FakePodman:
    return FakePodman()


@pytest.fixture
def catalogue(tmp_path: Path) -> Catalogue:
    return Catalogue(tmp_path / "home", lock_timeout=0.5).open()


@pytest.fixture
def usable_criu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CRIU new enough for any kernel, whatever this machine has."""
    monkeypatch.setattr(host, "criu_path", lambda: "/usr/local/sbin/criu")
    monkeypatch.setattr(host, "criu_version", lambda: "4.2.1")


@pytest.fixture(autouse=True)
def private_criu_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Resume's CRIU configuration files go to a directory of the test's, whatever this host's
    /run and /etc/criu hold."""
    directory = tmp_path / "run-warmctl-criu"
    monkeypatch.setattr(criu_config, "DIRECTORY", directory)
    monkeypatch.setattr(criu_config, "RUNC_DEFAULT", tmp_path / "etc-criu-runc.conf")
    return directory


@pytest.fixture(autouse=True)
def private_container_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Snapshots' per-container locks go to a directory of the test's, not /run."""
    directory = tmp_path / "run-warmctl-locks"
    monkeypatch.setattr(container_lock, "DIRECTORY", directory)
    return directory


@pytest.fixture(autouse=True)
def private_name_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Resume's locks on container names go to a directory of the test's, not /run."""
    directory = tmp_path / "run-warmctl-names"
    monkeypatch.setattr(claim, "LOCK_DIRECTORY", directory)
    return directory


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    """The in-process fake OCI registry (fake_registry.py), serving while the test runs."""
    with FakeRegistry() as reg:
        yield reg
