"""Durations and sizes as people type them on the command line, and back.

``parse_*`` raise :class:`~warmctl.errors.UsageError` (exit code 2) with a one-line message
that shows accepted examples. For values >= 0, ``format_*`` write text the matching parser
accepts again (rounded: they are for people to read).
"""

from __future__ import annotations

import decimal
import math
import re
from contextlib import AbstractContextManager
from decimal import Decimal

from warmctl.errors import UsageError

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# "ms" comes before the one-letter units so "500ms" is not read as "500m" and a stray "s".
_DURATION_PART = r"(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|[smhdw])"
_DURATION_RE = re.compile(rf"(?:\s*{_DURATION_PART})+\s*")
_DURATION_PART_RE = re.compile(_DURATION_PART)
_BARE_NUMBER_RE = re.compile(r"\s*[0-9]+(?:\.[0-9]+)?\s*")
_DURATION_EXAMPLES = "e.g. 500ms, 30s, 10m, 2h, 7d, 1w or 1h30m; a bare number is seconds"

_SIZE_PREFIXES = "KMGT"  # the largest, TiB, also caps format_size: "2048 TiB"
_SIZE_RE = re.compile(
    rf"\s*(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?:(?P<prefix>[{_SIZE_PREFIXES}])(?:i?B)?|B)?\s*",
    re.IGNORECASE,
)
_SIZE_EXAMPLES = "e.g. 1234, 100K, 512M, 20G, 20GiB or 1.5T (K, M, G, T are powers of 1024)"


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``500ms``, ``30s``, ``10m``, ``2h``, ``7d``, ``1w``, ``1h30m``, ``90``.

    Parts may repeat, come in any order and be separated by spaces (``"3d 4h"``), as
    :func:`format_duration` writes them. Zero is accepted; negatives are not.
    """
    seconds = float(parse_duration_exact(text))
    # A few hundred digits overflow a float to inf, which would mean "keep forever".
    if not math.isfinite(seconds):
        raise UsageError(f"invalid duration {text!r}: too large")
    return seconds


def parse_duration_exact(text: str) -> Decimal:
    """As :func:`parse_duration`, as the exact number typed: a limit echoed back
    (:func:`format_duration_exact`) is the one given, however large."""
    if text.strip().startswith("-"):
        raise UsageError(f"invalid duration {text!r}: must not be negative; {_DURATION_EXAMPLES}")
    if _BARE_NUMBER_RE.fullmatch(text):
        return Decimal(text.strip())
    if _DURATION_RE.fullmatch(text):
        with _exact(text):
            return sum((Decimal(m["num"]) * Decimal(str(_DURATION_UNITS[m["unit"]]))
                        for m in _DURATION_PART_RE.finditer(text)), Decimal(0))
    raise UsageError(f"invalid duration {text!r}: use {_DURATION_EXAMPLES}")


def _exact(text: str) -> AbstractContextManager[decimal.Context]:
    """Enough digits for any product of what ``text`` holds (Decimal's default is 28)."""
    return decimal.localcontext(prec=len(text) + 40)


def format_duration_exact(seconds: Decimal | float) -> str:
    """``7d``, ``1h 30m``, ``1s 500ms``: every unit, nothing rounded, which
    :func:`parse_duration_exact` reads back as the same number (for limits echoed back)."""
    exact = Decimal(seconds)
    if not exact.is_finite():  # float("inf") in a Policy built by code, never typed
        return str(seconds)
    whole = int(exact)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    millis = (exact - int(exact)) * 1000
    if millis:
        parts.append(f"{_plain(millis)}ms")
    return " ".join(parts) or "0s"


def format_size_exact(n: int) -> str:
    """``20 GiB``, ``1536 GiB``, ``1234 B``: the largest unit that divides ``n`` exactly, so
    that :func:`parse_size` reads back the same number (for limits echoed back)."""
    for exponent in range(len(_SIZE_PREFIXES), 0, -1):
        unit = 1024**exponent
        if n and n % unit == 0:
            return f"{n // unit} {_SIZE_PREFIXES[exponent - 1]}iB"
    return f"{n} B"


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 1.5, 250, 0.001."""
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_size(text: str) -> int:
    """Bytes in ``text``: ``1234``, ``100K``, ``512M``, ``20G``, ``1.5T``.

    K, M, G and T are powers of 1024 whether written ``G``, ``GB`` or ``GiB`` (case does not
    matter): one meaning for every spelling, the binary one ``du -h`` and ``ls -h`` show, so a
    limit typed from their output means what it says. A trailing ``B`` alone means bytes.
    Fractions are allowed with a unit and rounded down to whole bytes.
    """
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise UsageError(f"invalid size {text!r}: use {_SIZE_EXAMPLES}")
    num, prefix = match["num"], match["prefix"]
    if prefix is None:
        if "." in num:
            raise UsageError(f"invalid size {text!r}: a byte count must be whole; {_SIZE_EXAMPLES}")
        return int(num)
    # Decimal, not float: the fraction as typed is scaled exactly, then rounded down once.
    with _exact(text):
        return int(Decimal(num) * 1024 ** (_SIZE_PREFIXES.index(prefix.upper()) + 1))


def format_size(n: int) -> str:
    """``512 B``, ``1.2 GiB``, ``20 GiB``: one decimal place, dropped when it is zero."""
    if n < 0:
        return "-" + format_size(-n)
    if n < 1024:
        return f"{n} B"
    exponent = 0
    value = float(n)
    # Round before comparing, so 1023.99 KiB is shown as "1 MiB", not "1024 KiB".
    while round(value, 1) >= 1024 and exponent < len(_SIZE_PREFIXES):
        value /= 1024
        exponent += 1
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {_SIZE_PREFIXES[exponent - 1]}iB"


def format_duration(seconds: float) -> str:
    """``850ms``, ``45s``, ``12m``, ``1h 30m``, ``3d 4h``: at most the two largest units.

    Whole days are the largest unit (no weeks), so ``7d`` stays ``7d``. Precision below the
    second unit shown is dropped; this is for people reading, not for storing.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    rest = round(seconds)
    parts: list[tuple[int, str]] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        parts.append((count, unit))
    first = next(i for i, (count, _) in enumerate(parts) if count)
    shown = [f"{count}{unit}" for count, unit in parts[first : first + 2] if count]
    return " ".join(shown)
