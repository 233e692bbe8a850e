"""resume --max-age: a snapshot too old to resume.

A warm start from an old snapshot is not a slow start but a wrong one: a cache resumed from
the timer's snapshot of an hour ago serves values the application has since changed or
deleted. ``--max-age`` bounds how old the snapshot to resume may be, measured from when it
was taken (``created``, as recorded where it was taken, pulled ones too) to now. Checked before
anything is read, removed or restored: a refusal (exit 11) leaves everything as it was, so a
caller (warmctl@.service) can start cold instead.
"""

from __future__ import annotations

from datetime import UTC, datetime

from warmctl.catalogue import Snapshot
from warmctl.errors import TooOldError
from warmctl.units import format_duration


def refuse_if_older(snapshot: Snapshot, max_age: float | None, *,
                    now: datetime | None = None) -> None:
    """Raise TooOldError when ``snapshot`` was taken more than ``max_age`` seconds ago."""
    if max_age is None:
        return
    age = ((now or datetime.now(UTC)) - snapshot.created).total_seconds()
    # A snapshot "from the future" (a pulled one, from a host whose clock is ahead) has age < 0:
    # not too old by any bound.
    if age > max_age:
        raise TooOldError(
            f"snapshot {snapshot.ref} is {format_duration(age)} old, older than --max-age "
            f"{format_duration(max_age)}: not resumed, nothing was changed",
            hint="start the service cold, take a new snapshot, or allow an older one "
                 "with a larger --max-age")
