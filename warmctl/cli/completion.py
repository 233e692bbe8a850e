"""Completion callbacks. They run on every <TAB>, so they stay light: the catalogue is read
with sqlite3 directly (not through warmctl.catalogue), podman is asked with a short timeout,
and nothing here fails loudly: a completer that cannot answer offers nothing."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import typer

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


def _podman_lines(*args: str) -> list[str]:
    """podman's output lines, or nothing when podman is missing, fails or is slow."""
    import subprocess

    # Only these completers pay for the adapter module: it knows where CRIU's shims live.
    from warmctl.podman import podman_environment

    program = os.environ.get("WARMCTL_PODMAN") or "podman"
    try:
        proc = subprocess.run(  # noqa: S603 - argv list, no shell
            [program, *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=PODMAN_TIMEOUT,
            env=podman_environment(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if proc.returncode != 0:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]


def complete_running_containers(incomplete: str) -> list[str]:
    names = _podman_lines("ps", "--format", "{{.Names}}")
    return [n for n in names if n.startswith(incomplete)]


def complete_images(incomplete: str) -> list[str]:
    images = _podman_lines("images", "--format", "{{.Repository}}:{{.Tag}}")
    found = [i for i in dict.fromkeys(images) if "<none>" not in i]
    return [i for i in found if i.startswith(incomplete)]
