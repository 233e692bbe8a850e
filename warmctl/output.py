"""Rendering: results to stdout (tables or JSON), messages and progress to stderr.

The only module that knows about rich. Commands hand it data; it decides how a terminal, a
pipe or a script sees it. rich is imported on first use so that ``--help`` and completion stay
light.
"""

from __future__ import annotations

import json
import os
import re
import select
import sys
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from warmctl.errors import WarmctlError
from warmctl.units import format_duration, format_size

if TYPE_CHECKING:
    from rich.console import Console


# Candidates for escaping: every character outside printable ASCII. Most are harmless (é, 漢);
# unicodedata decides, and text that is plain ASCII never pays for the lookup.
_SUSPECT = re.compile(r"[^\x20-\x7e]")
_SUSPECT_BUT_TAB = re.compile(r"[^\t\x20-\x7e]")
# In JSON text: tab, newline and carriage return are its whitespace (indentation) outside
# strings, and are escaped by every encoder inside them.
_SUSPECT_IN_JSON = re.compile(r"[^\t\n\r\x20-\x7e]")
# Control characters (C0, DEL, C1: ESC and CSI start the sequences that retitle a window,
# clear a screen or colour text), format characters (the bidi overrides and isolates
# U+202A-202E and U+2066-2069, the marks U+200E/F, zero-width characters: they reorder or
# hide what a line shows), line and paragraph separators, and lone surrogates (undecodable
# bytes, which a terminal would be sent as garbage, or not at all).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return repr(char)[1:-1] if _is_unsafe(char) else char  # "\n", "\x1b", "\u202e"


def terminal_text(text: str, *, keep_tabs: bool = False) -> str:
    r"""``text`` as it may reach a terminal: every control or format character is written as
    Python writes it in a string (``\x1b``, ``\n``, ``\u202e``), so that text from outside
    (a registry's error, a pulled snapshot's fields, podman's and CRIU's messages) shows what
    it holds instead of moving the cursor, recolouring or reordering the line. Everything
    warmctl prints for people goes through here; JSON gets the same characters as ``\u``
    escapes instead (json_escaped), which keeps the data as it is."""
    return (_SUSPECT_BUT_TAB if keep_tabs else _SUSPECT).sub(_escaped, text)


def _json_escaped(match: re.Match[str]) -> str:
    char = match.group()
    # json's ASCII form of one character: \u009b, or a surrogate pair beyond the BMP.
    return json.dumps(char)[1:-1] if _is_unsafe(char) else char


def json_escaped(encoded: str) -> str:
    r"""JSON text with the characters terminal_text escapes written as ``\u`` escapes. The
    decoded data is the same; only its spelling changes (json.dumps escapes C0 but not DEL,
    C1 or the bidi controls, and SQLite's JSON escapes fewer). Outside strings, JSON holds no
    such characters, so the whole text can be rewritten."""
    return _SUSPECT_IN_JSON.sub(_json_escaped, encoded)


def say(line: str) -> None:
    """One line on stderr, escaped (terminal_text): for messages written outside Output, as
    the error boundary in warmctl/cli/main.py writes them."""
    sys.stderr.write(terminal_text(line) + "\n")


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (``| head -1``): the kernel reports
    an error condition on the write end."""
    try:
        poller = select.poll()
        poller.register(1, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError):
        return False


def discard_stdout() -> None:
    """From now on, what is written to stdout goes to /dev/null: its reader left (a reader
    that stops reading is not warmctl's failure), or it was closed. Descriptor 1 itself is
    replaced, so that Python's own flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
    finally:
        os.close(devnull)


@contextmanager
def _results() -> Iterator[None]:
    """Around every write of a result: a reader that went away is not an error; the command
    goes on and exits with the status of what it did (a snapshot taken is still exit 0).
    Nor is any other failed write (a full disk, ``> /dev/full``, EIO): that is said once on
    stderr, and the status is still that of what was done."""
    try:
        yield
        sys.stdout.flush()  # the failure shows here, not at exit where it would be exit 120
    except BrokenPipeError:
        discard_stdout()
    except OSError as err:
        _say_result_not_printed(err)
        discard_stdout()


_result_lost = False


def _say_result_not_printed(err: OSError) -> None:
    global _result_lost
    if not _result_lost:
        _result_lost = True
        with suppress(OSError):
            sys.stderr.write(f"warmctl: warning: the result could not be printed on standard "
                             f"output ({err.strerror or err}); what was done stands\n")


class Progress:
    """Receives progress from library code. This base class ignores it."""

    def phase(self, text: str) -> None:
        """A new phase begins (e.g. 'checkpointing')."""

    def advance(self, count: int) -> None:
        """Another ``count`` bytes written or read in this phase."""

    def expect(self, total: int) -> None:
        """This phase will move ``total`` bytes: a terminal shows a bar."""

    def watch_file(self, path: Any) -> None:
        """Report the growing size of a file some other program writes."""

    def stop_watching(self) -> None: ...


class LiveProgress(Progress):
    """One live line on stderr: phase, bytes, elapsed time. Only used on a terminal."""

    def __init__(self, console: Console, verb: str) -> None:
        from rich.live import Live
        from rich.text import Text

        self._text = Text
        self._verb = verb
        self._phase = "starting"
        self._bytes: int | None = None
        self._total: int | None = None
        self._start = time.monotonic()
        self._phase_start = self._start
        self._watched: Any = None
        self._live = Live(self._render(), console=console, transient=True,
                          refresh_per_second=4, get_renderable=self._render)

    def _render(self) -> Any:
        now = time.monotonic()
        if self._watched is not None:
            with suppress(OSError):
                self._bytes = self._watched.stat().st_size
        parts = [terminal_text(f"{self._verb}: {self._phase}")]
        if self._bytes is not None:
            rate = self._bytes / max(now - self._phase_start, 1e-3)
            if self._total:
                parts.append(_bar(self._bytes, self._total))
            parts.append(f"{format_size(self._bytes)} ({format_size(int(rate))}/s)")
        parts.append(format_duration(now - self._start))
        return self._text(" · ".join(parts), style="cyan")

    def phase(self, text: str) -> None:
        self._phase = text
        self._bytes = None
        self._total = None
        self._phase_start = time.monotonic()

    def advance(self, count: int) -> None:
        self._bytes = (self._bytes or 0) + count

    def expect(self, total: int) -> None:
        self._total = total
        self._bytes = self._bytes or 0

    def watch_file(self, path: Any) -> None:
        self._watched = path

    def stop_watching(self) -> None:
        self._watched = None

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._live.__exit__(*exc)


def _bar(done: int, total: int, width: int = 20) -> str:
    """``━━━━━━━━──────────── 40% of 812 MiB``"""
    fraction = min(max(done / total, 0.0), 1.0)
    filled = int(fraction * width)
    return f"{'━' * filled}{'─' * (width - filled)} {fraction:.0%} of {format_size(total)}"


class Output:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet

    def _console(self, stderr: bool) -> Console:
        from rich.console import Console

        console = Console(stderr=stderr, highlight=False, soft_wrap=not stderr)
        if not stderr:
            # rich's default exits 1; a reader that went away is not a failure (see _results).
            console.on_broken_pipe = discard_stdout  # type: ignore[method-assign]
        return console

    # --- results (stdout) ---------------------------------------------------------------------

    def json(self, data: Any) -> None:
        # Indented for a person at a terminal; compact for pipes, where json's C encoder
        # is several times faster (indent forces the pure-Python one).
        indent = 2 if sys.stdout.isatty() else None
        with _results():
            sys.stdout.write(
                json_escaped(json.dumps(data, indent=indent, ensure_ascii=False)) + "\n")
            sys.stdout.flush()

    def json_text(self, text: str) -> None:
        """JSON already encoded (by SQLite); re-indented for a person at a terminal."""
        if sys.stdout.isatty():
            self.json(json.loads(text))
        else:
            with _results():
                sys.stdout.write(json_escaped(text) + "\n")
                sys.stdout.flush()

    def line(self, text: str) -> None:
        """A plain result line on stdout (a reference, a container name); tabs separate
        columns (prune, verify)."""
        with _results():
            sys.stdout.write(terminal_text(text, keep_tabs=True) + "\n")
            sys.stdout.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[str]],
              *, empty: str = "") -> None:
        if not rows and empty:
            self.info(empty)
            return
        # One line per row, whatever a cell holds (a label recorded before labels were
        # checked, a pulled snapshot's names): control and format characters are shown
        # escaped, as Python writes them (terminal_text).
        rows = [[terminal_text(cell) for cell in row] for row in rows]
        if not sys.stdout.isatty():
            # For pipes, grep and awk: aligned plain columns, never wrapped or cut.
            self._plain_table(columns, rows)
            return
        from rich.box import SIMPLE_HEAD
        from rich.table import Table
        from rich.text import Text

        table = Table(box=SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for index, column in enumerate(columns):
            # The last column (labels, free text) folds; the others never wrap.
            last = index == len(columns) - 1
            table.add_column(column, no_wrap=not last, overflow="fold" if last else "ellipsis")
        for row in rows:
            # Text, not str: a cell's "[red]" is text, never rich markup.
            table.add_row(*(Text(cell) for cell in row))
        with _results():
            self._console(stderr=False).print(table)

    def _plain_table(self, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        lines = [columns, *rows]
        widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
        with _results():
            for row in lines:
                line = "  ".join(cell.ljust(width)
                                 for cell, width in zip(row, widths, strict=True))
                sys.stdout.write(line.rstrip() + "\n")
            sys.stdout.flush()

    def fields(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Key/value lines for `show`."""
        width = max((len(key) for key, _ in pairs), default=0)
        with _results():
            for key, value in pairs:
                sys.stdout.write(terminal_text(f"{key.ljust(width)}  {value}") + "\n")
            sys.stdout.flush()

    def statuses(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Lines of (status, name, text), as doctor prints them: ``ok    criu          4.2.1``.
        The status word is coloured on a terminal; the text is never read as markup."""
        from rich.text import Text

        styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        console = self._console(stderr=False)
        width = max((len(name) for _, name, _ in rows), default=0) + 3
        with _results():
            for status, name, text in rows:
                line = Text(status.ljust(6), style=styles.get(status, ""))
                line.append(terminal_text(name.ljust(width) + text))
                console.print(line)

    # --- messages (stderr) --------------------------------------------------------------------

    def info(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write(terminal_text(text) + "\n")

    def warn(self, text: str) -> None:
        sys.stderr.write(terminal_text(f"warmctl: warning: {text}") + "\n")

    def error(self, err: WarmctlError) -> None:
        line = f"warmctl: error: {err.message}"
        if err.hint:
            line += f" ({err.hint})"
        # One line: a message quoting podman's or CRIU's several lines joins them.
        say(line.replace("\n", " "))

    @contextmanager
    def progress(self, verb: str) -> Iterator[Progress]:
        """A live line on a terminal; nothing when stderr is a pipe, or with -q or --json."""
        if self.quiet or self.json_mode or not sys.stderr.isatty():
            yield Progress()
            return
        with LiveProgress(self._console(stderr=True), verb) as live:
            yield live
