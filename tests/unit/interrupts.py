"""A terminal's Ctrl-C, pressed from another thread (a fake podman's) while the test's main
thread waits for podman."""

from __future__ import annotations

import signal
import sys
import threading
import time

from warmctl.progress import NoProgress as Progress


class Phases(Progress):
    """Records the phases a command goes through."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def phase(self, text: str) -> None:
        self.seen.append(text)

    def interrupted(self) -> bool:
        return any(text.startswith("interrupted") for text in self.seen)


def main_thread_is_waiting() -> bool:
    """Whether the main thread is blocked in concurrent.futures.wait: where warmctl waits
    for podman (not, say, in Thread.start's wait for the thread to run)."""
    main = threading.main_thread().ident
    assert main is not None
    frame = sys._current_frames().get(main)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "wait" and code.co_filename.endswith("concurrent/futures/_base.py"):
            return True
        frame = frame.f_back
    return False


def _when_waiting() -> None:
    deadline = time.monotonic() + 10
    while not main_thread_is_waiting():
        assert time.monotonic() < deadline, "the main thread never waited"
        time.sleep(0.005)


def press_ctrl_c(phases: Phases, *, twice: bool = False) -> None:
    """SIGINT to the main thread once it waits; with ``twice``, again once it has said it
    was interrupted and waits again, as a user pressing Ctrl-C a second time."""
    main = threading.main_thread().ident
    assert main is not None
    _when_waiting()
    signal.pthread_kill(main, signal.SIGINT)
    deadline = time.monotonic() + 10
    while not phases.interrupted():
        assert time.monotonic() < deadline, "the Ctrl-C was not taken"
        time.sleep(0.005)
    if twice:
        _when_waiting()
        signal.pthread_kill(main, signal.SIGINT)
