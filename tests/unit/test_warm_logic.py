"""warm against a fake podman: warm-up, readiness retries, failure cleanup, what is recorded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fakes import FakePodman

from warmctl import warm as warm_module
from warmctl.catalogue import Catalogue
from warmctl.errors import ExitCode, NotFoundError, NotReadyError, UsageError
from warmctl.output import Progress
from warmctl.refs import Ref
from warmctl.warm import ContainerSpec, Readiness, WarmPlan, warm

pytestmark = pytest.mark.usefixtures("usable_criu")


def plan(**kwargs: object) -> WarmPlan:
    spec = ContainerSpec(image="localhost/img", container="svc",
                         publish=("127.0.0.1:18080:8080",))
    return WarmPlan(spec=spec, name="svc", **kwargs)  # type: ignore[arg-type]


def test_warmup_and_ready_on_the_third_attempt(
    catalogue: Catalogue, fake_podman: FakePodman, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"
    # Ready on the third try; the warm-up sees warmctl's variables.
    ready = f'echo x >> {marker}; test "$(wc -l < {marker})" -ge 3'
    warmup = f'test "$WARMCTL_CONTAINER/$WARMCTL_NAME" = svc/svc && touch {tmp_path}/warmed'
    snap = warm(catalogue, fake_podman,
                plan(warmup=warmup, readiness=Readiness(host_command=ready, interval=0.01)),
                Progress())
    assert snap.ref == "svc@1"
    assert (tmp_path / "warmed").exists()
    facts = catalogue.get(Ref("svc")).extra["warm"]
    assert facts["probe_attempts"] == 3
    assert facts["image"] == "localhost/img" and facts["ready"] == ready
    assert facts["warm_seconds"] >= 0


def test_never_ready_times_out_with_the_last_output_and_removes_the_container(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    with pytest.raises(NotReadyError) as info:
        warm(catalogue, fake_podman,
             plan(readiness=Readiness(host_command="echo cold; exit 1", interval=0.05,
                                      timeout=0.3)),
             Progress())
    assert info.value.exit_code == ExitCode.NOT_READY
    assert "cold" in info.value.message
    assert fake_podman.inspect_container("svc") is None
    assert catalogue.list_snapshots() == []


def test_failing_exec_warmup_is_exit_9_and_keep_on_failure_keeps_the_container(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.exec_results = [3]
    with pytest.raises(NotReadyError, match="exec failed with 3"):
        warm(catalogue, fake_podman, plan(warmup_exec="load-data --all", keep_on_failure=True),
             Progress())
    assert "exec svc load-data --all" in fake_podman.calls
    assert fake_podman.inspect_container("svc") is not None


def test_ready_exec_retries_inside_the_container(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.exec_results = [1, 1, 0]
    warm(catalogue, fake_podman,
         plan(readiness=Readiness(exec_command="check 'a b'", interval=0.01)), Progress())
    assert fake_podman.calls.count("exec svc check a b") == 3


def test_ready_tcp_needs_a_published_port(catalogue: Catalogue, fake_podman: FakePodman) -> None:
    with pytest.raises(UsageError, match="publishes no such port"):
        warm(catalogue, fake_podman, plan(readiness=Readiness(tcp_port=9999)), Progress())
    assert fake_podman.inspect_container("svc") is None


def test_missing_image_is_not_found_before_anything_runs(
    catalogue: Catalogue, fake_podman: FakePodman
) -> None:
    fake_podman.images.clear()
    with pytest.raises(NotFoundError):
        warm(catalogue, fake_podman, plan(), Progress())
    assert fake_podman.calls == []


def test_only_one_readiness_probe_and_a_positive_interval() -> None:
    with pytest.raises(UsageError):
        Readiness(host_command="true", tcp_port=80)
    with pytest.raises(UsageError):
        Readiness(interval=0)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_probe_that_times_out_leaves_no_process_behind(tmp_path: Path) -> None:
    """A timed-out --ready command goes with its children, not only its /bin/sh."""
    pids = tmp_path / "pids"
    command = f"sleep 1000 & echo $! > {pids}; sleep 1000 | cat & echo $! >> {pids}; wait"
    started = time.monotonic()
    attempt = warm_module._run_host(command, dict(os.environ), timeout=1.0)
    assert not attempt.ok and "timed out" in attempt.output
    assert time.monotonic() - started < 10
    children = [int(line) for line in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children):
        assert time.monotonic() < deadline, f"still running: {children}"
        time.sleep(0.05)


def test_a_probe_still_reports_its_exit_status_and_output() -> None:
    attempt = warm_module._run_host("echo not yet >&2; exit 3", dict(os.environ), timeout=10)
    assert not attempt.ok and attempt.output == "exit 3: not yet"
    assert warm_module._run_host("true", dict(os.environ), timeout=10).ok
