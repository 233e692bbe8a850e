"""What the library tells of its progress, and to whom: the ``Progress`` protocol.

Library code (the lifecycle, push and pull) takes a ``Progress`` and never renders; the verbs
pass the terminal's (``output.LiveProgress``), or ``NoProgress``, which ignores it all.
"""

from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    """Receives progress from library code."""

    def phase(self, text: str) -> None:
        """A new phase begins (e.g. 'checkpointing')."""

    def advance(self, count: int) -> None:
        """Another ``count`` bytes written or read in this phase."""

    def expect(self, total: int) -> None:
        """This phase will move ``total`` bytes: a terminal shows a bar."""

    def watch_file(self, path: Any) -> None:
        """Report the growing size of a file some other program writes."""

    def stop_watching(self) -> None:
        """The watched file is complete: stop reporting its size."""


class NoProgress:
    """A ``Progress`` that ignores it all: no terminal, -q, --json, and tests."""

    def phase(self, text: str) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def expect(self, total: int) -> None:
        pass

    def watch_file(self, path: Any) -> None:
        pass

    def stop_watching(self) -> None:
        pass
