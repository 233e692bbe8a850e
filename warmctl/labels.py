"""What a snapshot's label may be, wherever it comes from (``--label``, a pulled snapshot's
config): `list` prints labels in its table, one snapshot per line, and every row keeps them in
its JSON, so no control characters and a bounded size."""

from __future__ import annotations

import re
from collections.abc import Sequence

from warmctl.errors import UsageError

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}", re.ASCII)
# C0, DEL and C1 controls: a newline would break list's one line per snapshot, an escape
# sequence would reach the terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
VALUE_MAX = 1024  # bytes of UTF-8; a label is a note, not a payload


def label_problem(key: str, value: str) -> str | None:
    """What is wrong with the label, in a few words, or None."""
    if not _KEY.fullmatch(key):
        return (f"invalid label key {key!r}: use 1 to 128 of ASCII letters, digits, _ . - / "
                "starting with a letter or digit")
    if _CONTROL.search(value):
        return f"invalid label {key}: its value has a control character (newline, tab, escape ...)"
    size = len(value.encode())
    if size > VALUE_MAX:
        return f"invalid label {key}: its value is {size} bytes, more than the {VALUE_MAX} allowed"
    return None


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` labels, refused (exit 2) saying what is wrong (label_problem)."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"invalid label {item!r}: expected KEY=VALUE")
        problem = label_problem(key, value)
        if problem:
            raise UsageError(problem)
        if key in labels:  # the last one would win unseen: a typo or a script's mistake
            raise UsageError(f"label {key!r} is given twice: give each label key once")
        labels[key] = value
    return labels
