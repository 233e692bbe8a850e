from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmctl.errors import ExitCode, UsageError
from warmctl.units import format_duration, format_size, parse_duration, parse_size

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("7d", 7 * 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1m1ms", 60.001),
        ("3d 4h", 3 * 86400 + 4 * 3600),
        ("1.5h", 5400),
        ("90", 90),
        ("2.5", 2.5),
        ("0", 0),
        ("0s", 0),
        (" 45s ", 45),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", " ", "-5s", "-5", "abc", "5x", "h", "1h30", "5 s", "1e3", "inf", "nan", "1.s", "9" * 400],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_duration(text)
    assert err.value.exit_code == ExitCode.USAGE
    assert "\n" not in err.value.message


def test_parse_duration_message_shows_examples() -> None:
    with pytest.raises(UsageError, match=r"invalid duration 'soon': use e\.g\. 500ms, 30s"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1234", 1234),
        ("0", 0),
        ("512B", 512),
        ("100K", 100 * KiB),
        ("512M", 512 * MiB),
        ("20G", 20 * GiB),
        ("20GB", 20 * GiB),
        ("20GiB", 20 * GiB),
        ("20 GiB", 20 * GiB),
        ("20g", 20 * GiB),
        ("1.5T", 3 * TiB // 2),
        ("0.5K", 512),
        ("1.1K", 1126),  # 1126.4 rounded down
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "G", "-1G", "20X", "20iB", "1.5", "1.5B", "20GG", "1e3", "20 G B", "twenty"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="invalid size") as err:
        parse_size(text)
    assert err.value.exit_code == ExitCode.USAGE
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (20 * GiB, "20 GiB"),
        (int(1.2 * GiB), "1.2 GiB"),
        (MiB - 1, "1 MiB"),  # 1023.999 KiB rounds up into the next unit
        (3 * TiB // 2, "1.5 TiB"),
        (-2048, "-2 KiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.85, "850ms"),
        (0.9999, "1s"),
        (45, "45s"),
        (12 * 60, "12m"),
        (5400, "1h 30m"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
        (3 * 86400 + 4 * 3600 + 59, "3d 4h"),
        (7 * 86400, "7d"),
        (86400 + 5, "1d"),
        (-45, "-45s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=2**70))
def test_format_size_parses_back_closely(size: int) -> None:
    # One decimal place in the largest unit: within 5% (plus the whole byte rounded down).
    assert abs(parse_size(format_size(size)) - size) <= size * 0.05 + 1


@given(st.integers(min_value=1, max_value=10**9))
def test_format_duration_parses_back_closely(seconds: int) -> None:
    # Two units are shown, so what is dropped is under one of the second unit: at worst
    # just under 1h of a value of at least 1d.
    assert 0 <= seconds - parse_duration(format_duration(seconds)) < seconds / 24
