"""Completion callbacks. They run on every <TAB>, so they read the catalogue with sqlite3
directly and import nothing heavy."""

from __future__ import annotations

import sqlite3


def _catalogue_db() -> str:
    from warmctl.app import default_home

    return str(default_home() / "catalogue.db")


def complete_refs(incomplete: str) -> list[str]:
    """NAME and NAME@GEN from the catalogue; nothing (not an error) when it is unreadable."""
    try:
        db = sqlite3.connect(f"file:{_catalogue_db()}?mode=ro", uri=True, timeout=0.1)
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


def complete_names(incomplete: str) -> list[str]:
    return [c for c in complete_refs(incomplete) if "@" not in c]


def complete_compressions(incomplete: str) -> list[str]:
    return [c for c in ("zstd", "none", "gzip") if c.startswith(incomplete)]


def complete_running_containers(incomplete: str) -> list[str]:
    from warmctl.podman import PodmanCLI

    try:
        names = PodmanCLI().list_containers(running_only=True)
    except Exception:  # completion must never fail loudly
        return []
    return [n for n in names if n.startswith(incomplete)]


def complete_images(incomplete: str) -> list[str]:
    from warmctl.podman import PodmanCLI

    try:
        images = PodmanCLI().list_images()
    except Exception:  # completion must never fail loudly
        return []
    return [i for i in images if i.startswith(incomplete)]
