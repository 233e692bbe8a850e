"""Bad input and odd surroundings through the real CLI on a real podman: one line, a documented
exit status, and nothing done that the answer does not say."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import IMAGES, Containers, Warmctl, podman

pytestmark = pytest.mark.podman


def start_looper(containers: Containers, what: str = "looper") -> str:
    name = containers.name(what)
    podman("run", "--detach", "--name", name, IMAGES["busybox"], "sh", "-c",
           "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done")
    return name


def run_with_stdout(warmctl: Warmctl, stdout: int | None, *args: str,
                    close_stdout: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warmctl", *args], stdout=stdout, stderr=subprocess.PIPE,
        text=True, env=warmctl.env, check=False, timeout=600, stdin=subprocess.DEVNULL,
        preexec_fn=(lambda: os.close(1)) if close_stdout else None)


def test_snapshot_with_stdout_closed_is_recorded_and_exits_0(
        warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    result = run_with_stdout(warmctl, None, "snapshot", looper, "closed", "--leave-running",
                             close_stdout=True)
    assert result.returncode == 0, result.stderr
    assert "standard output is closed" in result.stderr
    assert [e["ref"] for e in warmctl("list", "--json").json()] == ["closed@1"]


def test_snapshot_into_a_pipe_whose_reader_left_is_recorded_and_exits_0(
        warmctl: Warmctl, containers: Containers) -> None:
    looper = start_looper(containers)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run_with_stdout(warmctl, write_end, "snapshot", looper, "piped",
                                 "--leave-running")
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert [e["ref"] for e in warmctl("list", "--json").json()] == ["piped@1"]
