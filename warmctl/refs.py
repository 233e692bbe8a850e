"""Snapshot names and references: ``NAME`` (the newest generation) or ``NAME@GEN``.

Names are validated before they reach the file system or SQLite, so no path can be smuggled in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from warmctl.errors import UsageError

NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,62}"
_NAME_RE = re.compile(NAME_PATTERN)
_REF_RE = re.compile(rf"(?P<name>{NAME_PATTERN})(?:@(?P<gen>[1-9][0-9]{{0,8}}))?")


@dataclass(frozen=True)
class Ref:
    name: str
    generation: int | None = None  # None: the newest generation

    def __str__(self) -> str:
        return self.name if self.generation is None else f"{self.name}@{self.generation}"


def is_valid_name(name: str) -> bool:
    return _NAME_RE.fullmatch(name) is not None


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise UsageError(
            f"invalid snapshot name {name!r}: use 1 to 63 of a-z 0-9 _ . - "
            "starting with a letter or digit"
        )
    return name


def parse_ref(text: str) -> Ref:
    match = _REF_RE.fullmatch(text)
    if match is None:
        raise UsageError(f"invalid snapshot reference {text!r}: expected NAME or NAME@GENERATION")
    gen = match.group("gen")
    return Ref(match.group("name"), int(gen) if gen else None)


def format_ref(name: str, generation: int) -> str:
    return f"{name}@{generation}"
