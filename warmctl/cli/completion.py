"""Completion callbacks. They run on every <TAB>, so they stay light: the catalogue is read
with sqlite3 directly (not through warmctl.catalogue), podman is asked with a short timeout,
and nothing here fails loudly: a completer that cannot answer offers nothing."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from warmctl.podman.cli import PodmanCLI

# A <TAB> must not hang on a wedged podman; what it would have listed is not worth the wait.
PODMAN_TIMEOUT = 3.0


def _home(ctx: typer.Context | None) -> Path:
    """The catalogue directory, chosen as warmctl.app.default_home does, plus --home."""
    if ctx is not None:
        home = ctx.find_root().params.get("home")
        if home:
            # As typed: the shell has not expanded a ~ in a word still being completed.
            return Path(home).expanduser()
    env = os.environ.get("WARMCTL_HOME")
    if env:
        return Path(env)
    from platformdirs import user_data_path

    return user_data_path("warmctl")


def _catalogue_db(ctx: typer.Context | None = None) -> str:
    return str(_home(ctx) / "catalogue.db")


def complete_refs(ctx: typer.Context, incomplete: str) -> list[str]:
    """NAME and NAME@GEN from the catalogue; nothing (not an error) when it is unreadable."""
    try:
        db = sqlite3.connect(f"file:{_catalogue_db(ctx)}?mode=ro", uri=True, timeout=0.1)
        try:
            rows = db.execute(
                "SELECT name, generation FROM snapshots WHERE name LIKE ? || '%' "
                "ORDER BY name, generation",
                (incomplete.split("@", 1)[0],),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []
    candidates: list[str] = []
    for name, generation in rows:
        if name not in candidates:
            candidates.append(name)
        candidates.append(f"{name}@{generation}")
    return [c for c in candidates if c.startswith(incomplete)]


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    return [c for c in complete_refs(ctx, incomplete) if "@" not in c]


def complete_compressions(incomplete: str) -> list[str]:
    return [c for c in ("zstd", "none", "gzip") if c.startswith(incomplete)]


def complete_volume_modes(incomplete: str) -> list[str]:
    return [m for m in ("new", "shared", "snapshot") if m.startswith(incomplete)]


def complete_running_containers(incomplete: str) -> list[str]:
    names = _ask_podman(lambda podman: podman.list_containers(running_only=True))
    return [n for n in names if n.startswith(incomplete)]


def complete_images(incomplete: str) -> list[str]:
    images = _ask_podman(lambda podman: podman.list_images())
    return [i for i in images if i.startswith(incomplete)]


def _ask_podman(question: Callable[[PodmanCLI], list[str]]) -> list[str]:
    """podman's answer, or nothing when podman is missing, fails or is slow."""
    # Only these completers pay for the adapter module; the catalogue's do not.
    from warmctl.errors import WarmctlError
    from warmctl.podman.cli import PodmanCLI

    try:
        return question(PodmanCLI(query_timeout=PODMAN_TIMEOUT))
    except WarmctlError:
        return []
