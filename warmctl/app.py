"""The application object handed to every command: where the catalogue is, how to reach
podman, how to render. Built once per invocation by the CLI's callback."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from warmctl.catalogue import DEFAULT_LOCK_TIMEOUT, Catalogue
from warmctl.errors import UsageError
from warmctl.podman.types import Podman


def default_home() -> Path:
    env = os.environ.get("WARMCTL_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_path

    return user_data_path("warmctl")


def lock_timeout_from_env() -> float:
    raw = os.environ.get("WARMCTL_LOCK_TIMEOUT")
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    from warmctl.units import parse_duration

    try:
        return parse_duration(raw)
    except UsageError as err:
        raise UsageError(f"WARMCTL_LOCK_TIMEOUT: {err.message}") from err


@dataclass
class App:
    home: Path
    _podman: Podman | None = None
    _catalogue: Catalogue | None = field(default=None, repr=False)

    @property
    def podman(self) -> Podman:
        if self._podman is None:
            from warmctl.podman.cli import PodmanCLI

            self._podman = PodmanCLI()
        return self._podman

    def catalogue(self) -> Catalogue:
        """The opened catalogue (created on first use)."""
        if self._catalogue is None:
            self._catalogue = Catalogue(self.home, lock_timeout=lock_timeout_from_env()).open()
        return self._catalogue

    def close(self) -> None:
        if self._catalogue is not None:
            self._catalogue.close()
            self._catalogue = None
