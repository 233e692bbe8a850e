"""Waiting for podman: Ctrl-C, a second Ctrl-C, a podman failure after Ctrl-C, the time
limit. podman is a function in the call's thread; the Ctrl-C a real SIGINT."""

from __future__ import annotations

import threading
import time

import pytest
from interrupts import Phases, press_ctrl_c

from warmctl.errors import (
    CheckpointError,
    ExitCode,
    Interrupted,
    LeftUnfinished,
    TimedOut,
)
from warmctl.lifecycle.waiting import PodmanCall
from warmctl.podman.runner import NotStarted, starting


def test_without_ctrl_c_the_result_is_returned() -> None:
    call = PodmanCall(lambda: 42, what="the restore of x", left_behind=lambda: "-")
    assert call.finish(Phases()) == (42, False)
    assert call.succeeded()


def test_after_one_ctrl_c_podman_finishes_and_the_interruption_is_reported() -> None:
    phases = Phases()
    finished = threading.Event()

    def podman() -> str:
        press_ctrl_c(phases)
        finished.set()
        return "restored"

    call = PodmanCall(podman, what="the restore of x", left_behind=lambda: "-")
    assert call.finish(phases) == ("restored", True)
    assert finished.is_set()
    assert "letting podman finish the restore of x" in phases.seen[-1]


def test_a_podman_failure_after_ctrl_c_is_still_an_interruption() -> None:
    phases = Phases()

    def podman() -> str:
        press_ctrl_c(phases)
        raise CheckpointError("restore of x failed: criu failed", hint="see the log")

    call = PodmanCall(podman, what="the restore of x", left_behind=lambda: "-")
    with pytest.raises(Interrupted) as info:
        call.finish(phases)
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert info.value.message == "interrupted, and meanwhile restore of x failed: criu failed"
    assert info.value.hint == "see the log"


def test_a_second_ctrl_c_leaves_at_once_saying_what_podman_leaves() -> None:
    phases = Phases()
    release = threading.Event()

    def podman() -> str:
        starting(lambda: None)  # podman's process has started
        press_ctrl_c(phases, twice=True)
        release.wait(60)  # podman goes on long after warmctl has left
        return "late"

    call = PodmanCall(podman, what="the restore of x",
                      left_behind=lambda: "podman goes on restoring x alone")
    started = time.monotonic()
    with pytest.raises(LeftUnfinished) as info:
        call.finish(phases)
    assert time.monotonic() - started < 10
    assert not release.is_set() and not call.succeeded()  # podman still at it
    assert info.value.exit_code == ExitCode.INTERRUPTED
    assert info.value.message == ("interrupted twice: warmctl left the restore of x "
                                  "unfinished; podman goes on restoring x alone")
    release.set()


def test_the_time_limit_leaves_podman_to_finish_alone() -> None:
    release = threading.Event()
    started = time.monotonic()

    def podman() -> bool:
        starting(lambda: None)  # podman's process has started
        return release.wait(60)

    call = PodmanCall(podman, what="the checkpoint of x", time_limit=0.2,
                      left_behind=lambda: "x stays frozen until CRIU is done")
    with pytest.raises(TimedOut) as info:
        call.finish(Phases())
    assert 0.2 <= time.monotonic() - started < 10
    assert info.value.exit_code == ExitCode.TIMED_OUT
    assert int(info.value.exit_code) == 124
    assert info.value.message == ("the checkpoint of x did not finish within the time limit "
                                  "(200ms): warmctl left it unfinished; x stays frozen until "
                                  "CRIU is done")
    with pytest.raises(TimedOut):  # what follows podman's output stops too
        call.running()
    release.set()


def test_leaving_before_podman_started_keeps_it_from_starting() -> None:
    """The call prepares files before podman starts (the CRIU wrapper): a time limit passing
    meanwhile must not leave a podman to start after warmctl has gone, nor say it goes on."""
    preparing = threading.Event()
    started: list[bool] = []
    outcome: list[BaseException] = []

    def podman() -> None:
        preparing.wait(60)
        try:
            starting(lambda: started.append(True))
        except NotStarted as exc:
            outcome.append(exc)
            raise

    call = PodmanCall(podman, what="the checkpoint of x", time_limit=0.05,
                      left_behind=lambda: "podman goes on alone")
    with pytest.raises(TimedOut) as info:
        call.finish(Phases())
    assert info.value.message.endswith("podman had not started it, and will not: nothing was "
                                       "done"), info.value.message
    preparing.set()
    deadline = time.monotonic() + 10
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started == [] and len(outcome) == 1
