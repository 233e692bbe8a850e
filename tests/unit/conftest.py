from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakePodman

from warmctl import host
from warmctl.catalogue import Catalogue


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
