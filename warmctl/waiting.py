"""Waiting for a podman call that must not stop halfway: a checkpoint or a restore.

podman runs in a session of its own (podman.py), so a terminal's Ctrl-C reaches warmctl
only, and warmctl decides:
- the first Ctrl-C: warmctl goes on waiting, so that podman finishes rather than leave a
  container frozen, dead or half restored; the caller reports the interruption afterwards
  (exit 130). If podman fails meanwhile, the error still says it was interrupted.
- a second Ctrl-C, or the time limit (``--time-limit``) passing: warmctl stops waiting at
  once and exits (130, or 124 for the time limit), saying what it leaves behind, which the
  caller describes: podman goes on alone in its session.

The call runs in a daemon thread, not a thread pool: a pool's exit, and the interpreter's
exit, would wait for podman again (it took four Ctrl-Cs to leave).
"""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from warmctl.errors import (
    Interrupted,
    LeftUnfinished,
    TimedOut,
    WarmctlError,
    interrupt_again,
    interruption,
    note_termination_signal,
)
from warmctl.output import Progress
from warmctl.podman import SpawnGate, spawning_through
from warmctl.units import format_duration

T = TypeVar("T")
log = logging.getLogger(__name__)

LeftBehind = Callable[[], str]  # what stays when warmctl leaves: podman goes on alone


def in_daemon_thread(work: Callable[[], T], *,
                     name: str = "podman") -> concurrent.futures.Future[T]:
    """Run ``work`` in a daemon thread: nothing waits for it when warmctl leaves."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever waits
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class PodmanCall(Generic[T]):
    """A podman call that runs while warmctl does other work (or just waits)."""

    def __init__(self, work: Callable[[], T], *, what: str, left_behind: LeftBehind,
                 time_limit: float | None = None, started: float | None = None) -> None:
        self.what = what  # "the checkpoint of mc": for messages
        self._left_behind = left_behind
        self._time_limit = time_limit
        # ``started`` (time.monotonic()): when the limit began, if before this call (a wait
        # for a lock counts too); default now.
        self._deadline = (None if time_limit is None
                          else (time.monotonic() if started is None else started) + time_limit)
        self._gate = SpawnGate()

        def through_gate() -> T:
            with spawning_through(self._gate):
                return work()

        self._future = in_daemon_thread(through_gate)

    def running(self) -> bool:
        """Whether podman is still at it. Raises TimedOut once the time limit has passed, so
        that work that follows podman's output stops too."""
        if self._future.done():
            return False
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise self._timed_out()
        return True

    def succeeded(self) -> bool:
        """Whether podman has finished, and successfully."""
        return self._future.done() and self._future.exception() is None

    def finish(self, progress: Progress, *, interrupted: bool = False) -> tuple[T, bool]:
        """Wait for podman; returns its result and whether the user pressed Ctrl-C (now or,
        ``interrupted``, before). Raises Interrupted on a second Ctrl-C, TimedOut when the
        time limit passes, and podman's error, as Interrupted when interrupted meanwhile."""
        if interrupted:
            self._say_interrupted(progress)
        while True:
            try:
                remaining = (None if self._deadline is None
                             else max(self._deadline - time.monotonic(), 0.0))
                concurrent.futures.wait([self._future], timeout=remaining)
                if not self._future.done():
                    raise self._timed_out()
                break
            except KeyboardInterrupt:
                if interrupted:
                    raise LeftUnfinished(f"interrupted twice: warmctl left {self.what} "
                                         f"unfinished; {self._what_stays()}") from None
                interrupted = True
                self._say_interrupted(progress)
        try:
            return self._future.result(), interrupted
        except WarmctlError as err:
            if not interrupted:
                raise
            raise Interrupted(f"interrupted, and meanwhile {err.message}",
                              hint=err.hint) from err

    def _say_interrupted(self, progress: Progress) -> None:
        log.debug("interrupted: waiting for %s", self.what)
        progress.phase(f"{interruption()}: letting podman finish {self.what} "
                       f"({interrupt_again()} leaves it to finish alone)")

    def _timed_out(self) -> TimedOut:
        assert self._time_limit is not None
        return TimedOut(f"{self.what} did not finish within the time limit "
                        f"({format_duration(self._time_limit)}): warmctl left it unfinished; "
                        f"{self._what_stays()}")

    def _what_stays(self) -> str:
        """What warmctl leaves: podman going on alone, or, when it had not started yet (the
        call prepares files first), nothing, since the gate now keeps it from starting."""
        if not self._gate.close():
            return "podman had not started it, and will not: nothing was done"
        return self._left_behind()


class DeferredInterrupts:
    """While open (in the main thread), the first Ctrl-C, SIGTERM or SIGHUP is noted, not
    raised; a second raises KeyboardInterrupt. For the steps after a checkpoint that stopped
    its container (compressing or hashing the export, checking it, recording it): finishing
    them is what keeps the container's memory, so an interruption waits for them, as it
    waits for podman, and the caller reports it afterwards (``received``)."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, progress: Progress, doing: str) -> None:
        self.received = False
        self._progress = progress
        self._doing = doing  # "recording the snapshot": for the phase line
        self._previous: dict[int, Any] = {}

    def after(self, interrupted: bool) -> DeferredInterrupts:
        """Opened after an interruption already (while podman ran): the next one leaves."""
        self.received = interrupted
        return self

    def __enter__(self) -> DeferredInterrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in self._SIGNALS:
                self._previous[signum] = signal.signal(signum, self._interrupted)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _interrupted(self, signum: int, _frame: object) -> None:
        if signum != signal.SIGINT:
            note_termination_signal(signum)
        if self.received:
            raise KeyboardInterrupt
        self.received = True
        log.debug("interrupted: %s first", self._doing)
        self._progress.phase(f"{interruption()}: {self._doing} first "
                             f"({interrupt_again()} leaves at once)")
