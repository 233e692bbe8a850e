"""The page daemon's supervisor and the criu wrapper of a lazy restore (warmctl/lazy_pages.py),
with a fake CRIU: what runc's command line gives the wrapper, that every wait is bounded, that a
failed daemon ends what the restore started (by PID), and that nothing is left but the
outcome."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from warmctl import lazy_pages
from warmctl.lazy_pages import (
    ANNOTATION,
    Outcome,
    Request,
    UffdHolder,
    annotated_in_place,
    container_id,
    container_processes,
    create_session,
    kernel_has_userfaultfd,
    kill_restore,
    lazy_restore_problem,
    restore_request,
    spec_with_config,
    spec_without_config,
    start_supervisor,
    supervise,
)
from warmctl.podman.types import HostVersions

# runc's command line as podman 4.3's conmon wrote it (seen in the spike, ID shortened).
UD = "/var/lib/containers/storage/overlay-containers/b2b2/userdata"
RUNC_RESTORE = ["/usr/bin/runc", "--log-format=json", "--log", "/run/x/oci-log", "restore",
                "--bundle", UD, "--pid-file", "/run/x/pidfile", "--detach",
                "--image-path", f"{UD}/checkpoint", "--work-path", UD, "b2b2"]

# A fake CRIU: `lazy-pages -D IMAGES -W WORK -o LOG ...` records its arguments, listens (a
# file stands for the socket) unless told not to, waits, and exits with the status it is
# told; any other call prints its arguments and CRIU_CONFIG_FILE.
FAKE_CRIU = textwrap.dedent("""\
    #!{python}
    import os, sys, time
    from pathlib import Path
    args = sys.argv[1:]
    control = Path({control!r})
    if args[:1] == ["lazy-pages"]:
        work = Path(args[args.index("-W") + 1])
        (control / "daemon-args").write_text("\\n".join(args))
        if not (control / "never-listen").exists():
            (work / "lazy-pages.socket").write_text("")
        seconds = control / "seconds"
        time.sleep(float(seconds.read_text()) if seconds.exists() else 0.2)
        sys.exit(int((control / "status").read_text()) if (control / "status").exists() else 0)
    print("criu", *args, os.environ.get("CRIU_CONFIG_FILE", ""))
    """)


@pytest.fixture
def control(tmp_path: Path) -> Path:
    directory = tmp_path / "control"
    directory.mkdir()
    return directory


@pytest.fixture
def fake_criu(tmp_path: Path, control: Path) -> Path:
    path = tmp_path / "fake-criu"
    path.write_text(FAKE_CRIU.format(python=sys.executable, control=str(control)))
    path.chmod(0o755)
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    directory = tmp_path / "userdata"
    (directory / "checkpoint").mkdir(parents=True)
    return directory


def run_as_runc(wrapper: Path, runc_argv: list[str], *args: str,
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Runs ``wrapper args`` as runc would: from a parent whose command line is runc's."""
    parent = ("import subprocess, sys; "
              "sys.exit(subprocess.run(sys.argv[sys.argv.index('--') + 1:]).returncode)")
    return subprocess.run([sys.executable, "-c", parent, *runc_argv, "--", str(wrapper), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def wait_for(path: Path, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_restore_request_is_read_from_runcs_command_line() -> None:
    assert restore_request(RUNC_RESTORE) == Request(Path(f"{UD}/checkpoint"), Path(UD),
                                                    Path("/run/x/pidfile"))
    joined = ["runc", "restore", f"--image-path={UD}/checkpoint", f"--work-path={UD}"]
    assert restore_request(joined) == Request(Path(f"{UD}/checkpoint"), Path(UD), None)


def test_anything_but_a_runc_restore_asks_for_no_daemon() -> None:
    assert restore_request(["podman", "container", "restore", "--print-stats", "c"]) is None
    assert restore_request(["/usr/bin/runc", "checkpoint", "--image-path", "/i",
                            "--work-path", "/w", "c"]) is None
    assert restore_request(["/usr/bin/runc", "restore", "--image-path"]) is None


def test_request_round_trips_through_its_file() -> None:
    request = Request(Path("/a b/checkpoint"), Path("/a b"), None)
    assert Request.from_text(request.to_text()) == request
    with pytest.raises(ValueError, match="not a request"):
        Request.from_text("\n\n")


def test_spec_gets_the_annotation_and_loses_only_its_own() -> None:
    spec = json.dumps({"ociVersion": "1.0.2", "annotations": {"a": "b"}}).encode()
    annotated = json.loads(spec_with_config(spec, Path("/run/s/criu.conf")))
    assert annotated["annotations"] == {"a": "b", ANNOTATION: "/run/s/criu.conf"}
    back = spec_without_config(json.dumps(annotated).encode(), Path("/run/s/criu.conf"))
    assert json.loads(back)["annotations"] == {"a": "b"}
    # Someone else's configuration stays.
    other = json.dumps({"annotations": {ANNOTATION: "/etc/mine.conf"}}).encode()
    assert spec_without_config(other, Path("/run/s/criu.conf")) == other
    assert json.loads(spec_with_config(b"{}", Path("/c")))["annotations"] == {ANNOTATION: "/c"}
    with pytest.raises(ValueError):
        spec_with_config(b"[]", Path("/c"))


def test_config_json_carries_the_annotation_only_during_the_restore(tmp_path: Path) -> None:
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps({"process": {"args": ["x"]}}))
    config_json.chmod(0o600)
    with annotated_in_place(config_json, Path("/run/s/criu.conf")):
        assert json.loads(config_json.read_text())["annotations"][ANNOTATION] == "/run/s/criu.conf"
        # podman rewrites it at restore, with edits of its own.
        spec = json.loads(config_json.read_text())
        spec["linux"] = {"namespaces": "podman's edit"}
        config_json.write_text(json.dumps(spec))
    after = json.loads(config_json.read_text())
    assert after["linux"] == {"namespaces": "podman's edit"}
    assert ANNOTATION not in after["annotations"]
    assert config_json.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_wrapper_asks_once_waits_for_the_answer_and_runs_criu_with_the_config(
        tmp_path: Path, fake_criu: Path) -> None:
    session = create_session(fake_criu, ["tcp-close"], parent=tmp_path / "lazy")
    assert session.config.read_text().splitlines()[1:] == [
        "lazy-pages", f"action-script {session.directory / 'pre-resume'}", "tcp-close"]
    (session.directory / "ready").write_text("ok 123\n")
    wrapper = session.bin_dir / "criu"
    for _ in range(2):  # runc's version call, then the restore
        result = run_as_runc(wrapper, RUNC_RESTORE, "swrk", "3")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["criu", "swrk", "3", str(session.config)]
    request = Request.from_text((session.directory / "request").read_text())
    assert request == restore_request(RUNC_RESTORE)
    assert len((session.directory / "criu-pids").read_text().split()) == 2


def test_wrapper_asks_nothing_of_podmans_own_criu_calls(tmp_path: Path, fake_criu: Path) -> None:
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    result = run_as_runc(session.bin_dir / "criu", ["podman", "container", "restore", "c"],
                         "swrk", "8")
    assert result.returncode == 0, result.stderr
    assert not (session.directory / "request").exists()


def test_wrapper_fails_the_restore_when_no_daemon_answers(tmp_path: Path,
                                                          fake_criu: Path) -> None:
    session = create_session(fake_criu, parent=tmp_path / "lazy", wait_seconds=0.3)
    started = time.monotonic()
    result = run_as_runc(session.bin_dir / "criu", RUNC_RESTORE, "swrk", "3")
    assert result.returncode == 1
    assert "no page daemon" in result.stderr
    assert time.monotonic() - started < 10
    (session.directory / "ready").write_text("failed: the daemon did not listen\n")
    result = run_as_runc(session.bin_dir / "criu", RUNC_RESTORE, "swrk", "3")
    assert result.returncode == 1
    assert "did not listen" in result.stderr
    # A supervisor that has ended (its files tidied away) fails it at once too.
    (session.directory / "ready").unlink()
    (session.directory / "status.json").write_text('{"state": "no-request"}\n')
    started = time.monotonic()
    result = run_as_runc(session.bin_dir / "criu", RUNC_RESTORE, "swrk", "3")
    assert result.returncode == 1 and "has ended" in result.stderr
    assert time.monotonic() - started < 0.3 + 5


def put_request(session_dir: Path, work: Path, pid_file: Path | None = None) -> None:
    request = Request(work / "checkpoint", work, pid_file)
    (session_dir / "request").write_text(request.to_text())


def test_a_daemon_that_fills_leaves_only_its_outcome(tmp_path: Path, fake_criu: Path,
                                                     control: Path, work: Path) -> None:
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    (work / "pidfile").write_text(f"{os.getpid()}\n")  # the container's init, running
    put_request(session.directory, work, pid_file=work / "pidfile")
    outcome = supervise(session.directory, fake_criu, request_timeout=5)
    assert outcome.state == "filled", outcome
    assert outcome.daemon_status == 0 and outcome.seconds_to_fill is not None
    args = (control / "daemon-args").read_text().split("\n")
    assert args[:5] == ["lazy-pages", "-D", str(work / "checkpoint"), "-W", str(work)]
    assert [p.name for p in session.directory.iterdir()] == ["status.json"]
    assert session.outcome() == outcome
    assert not (work / "lazy-pages.socket").exists()


def test_a_container_that_ended_mid_fill_is_no_failure_and_no_fill(
        tmp_path: Path, fake_criu: Path, work: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    (work / "pidfile").write_text(f"{gone.pid}\n")
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    put_request(session.directory, work, pid_file=work / "pidfile")

    def must_not_run(*_: object) -> list[int]:
        raise AssertionError("nothing to kill")

    outcome = supervise(session.directory, fake_criu, request_timeout=5, on_failure=must_not_run)
    assert outcome.state == "container-ended" and outcome.daemon_status == 0
    assert outcome.seconds_to_fill is None


def test_a_daemon_that_fails_mid_fill_ends_the_container_first(
        tmp_path: Path, fake_criu: Path, control: Path, work: Path) -> None:
    (control / "status").write_text("1")
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    put_request(session.directory, work)
    seen: list[Request | None] = []

    def on_failure(directory: Path, request: Request | None) -> list[int]:
        seen.append(request)
        assert not (directory / "status.json").exists()  # before the outcome is written
        return [4242]

    outcome = supervise(session.directory, fake_criu, request_timeout=5, on_failure=on_failure)
    assert outcome.state == "failed" and outcome.daemon_status == 1
    assert outcome.killed == [4242]
    assert "status 1 before every page was in" in outcome.reason
    assert seen == [Request(work / "checkpoint", work, None)]
    assert sorted(p.name for p in session.directory.iterdir()) == ["daemon.stderr",
                                                                   "status.json"]


def test_a_supervisor_error_is_still_an_outcome(tmp_path: Path, fake_criu: Path,
                                                control: Path, work: Path) -> None:
    (control / "status").write_text("3")
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    put_request(session.directory, work)

    def broken(*_: object) -> list[int]:
        raise RuntimeError("no podman")

    outcome = supervise(session.directory, fake_criu, request_timeout=5, on_failure=broken)
    assert outcome.state == "failed"
    assert "the supervisor failed: RuntimeError('no podman')" in outcome.reason
    assert session.outcome() == outcome


def test_a_killed_daemon_is_named_by_its_signal(tmp_path: Path, fake_criu: Path,
                                                control: Path, work: Path) -> None:
    (control / "seconds").write_text("30")
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    put_request(session.directory, work)

    def kill_daemon() -> None:
        wait_for(session.directory / "ready")
        pid = int((session.directory / "ready").read_text().split()[1])
        os.kill(pid, 9)

    import threading
    killer = threading.Thread(target=kill_daemon)
    killer.start()
    outcome = supervise(session.directory, fake_criu, request_timeout=5,
                        on_failure=lambda *_: [])
    killer.join()
    assert outcome.state == "failed" and outcome.daemon_status == -9
    assert "signal SIGKILL" in outcome.reason


def run_action(session_dir: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(session_dir / "pre-resume")], capture_output=True, text=True,
                          timeout=30, check=False,
                          env={**os.environ, "CRTOOLS_SCRIPT_ACTION": action})


def test_pre_resume_waits_until_the_supervisor_holds_the_userfaultfds(
        tmp_path: Path, fake_criu: Path, control: Path, work: Path) -> None:
    (control / "seconds").write_text("3")
    session = create_session(fake_criu, parent=tmp_path / "lazy", wait_seconds=0.3)
    # Any other stage passes at once; pre-resume without a supervisor fails, bounded.
    assert run_action(session.directory, "post-restore").returncode == 0
    assert not (session.directory / "take-uffds").exists()
    failed = run_action(session.directory, "pre-resume")
    assert failed.returncode == 1 and "did not take" in failed.stderr
    (session.directory / "status.json").write_text("{}\n")  # the supervisor has ended
    assert run_action(session.directory, "pre-resume").returncode == 1
    (session.directory / "status.json").unlink()
    (session.directory / "take-uffds").unlink()
    put_request(session.directory, work)
    import threading
    answers: list[subprocess.CompletedProcess[str]] = []

    def resume_stage() -> None:
        wait_for(session.directory / "ready")
        answers.append(run_action(session.directory, "pre-resume"))

    stage = threading.Thread(target=resume_stage)
    stage.start()
    outcome = supervise(session.directory, fake_criu, request_timeout=5)
    stage.join()
    assert answers[0].returncode == 0, answers[0].stderr
    assert outcome.state == "filled" and outcome.held_before_resume == 0  # a fake: none
    assert [p.name for p in session.directory.iterdir()] == ["status.json"]


def test_no_request_in_time_fails_the_wrappers_wait(tmp_path: Path, fake_criu: Path) -> None:
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    outcome = supervise(session.directory, fake_criu, request_timeout=0.2)
    assert outcome.state == "no-request"
    assert [p.name for p in session.directory.iterdir()] == ["status.json"]


def test_a_daemon_that_never_listens_is_killed_within_the_bound(
        tmp_path: Path, fake_criu: Path, control: Path, work: Path) -> None:
    (control / "never-listen").write_text("")
    (control / "seconds").write_text("60")
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    put_request(session.directory, work)
    started = time.monotonic()
    outcome = supervise(session.directory, fake_criu, request_timeout=5, socket_timeout=0.5)
    assert time.monotonic() - started < 10
    assert outcome.state == "failed" and outcome.daemon_status == -9
    assert "did not listen" in outcome.reason
    assert outcome.daemon_pid is not None
    assert not Path(f"/proc/{outcome.daemon_pid}").exists()


def test_a_daemon_past_its_fill_bound_is_killed_and_fails(
        tmp_path: Path, fake_criu: Path, control: Path, work: Path) -> None:
    (control / "seconds").write_text("60")
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    put_request(session.directory, work)
    outcome = supervise(session.directory, fake_criu, request_timeout=5, fill_timeout=0.5,
                        on_failure=lambda *_: [7])
    assert outcome.state == "failed" and outcome.daemon_status == -9
    assert outcome.reason.startswith("the pages were not all in after 0.5 s")
    assert outcome.killed == [7]


def test_a_restore_that_never_starts_the_container_is_ended(
        tmp_path: Path, fake_criu: Path, control: Path, work: Path) -> None:
    (control / "seconds").write_text("60")
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    put_request(session.directory, work, pid_file=work / "pidfile")  # never written
    started = time.monotonic()
    outcome = supervise(session.directory, fake_criu, request_timeout=5, restore_timeout=0.5,
                        on_failure=lambda *_: [])
    assert time.monotonic() - started < 10
    assert outcome.state == "failed"
    assert "had not started the container after 0.5 s" in outcome.reason


def test_kill_restore_kills_the_init_and_stuck_criu_only(tmp_path: Path) -> None:
    init = subprocess.Popen(["sleep", "60"])
    # CRIU renames itself while it restores.
    criu = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "criu: restore --rpc"])
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        pid_file = tmp_path / "pidfile"
        pid_file.write_text(f"{init.pid}\n")
        (tmp_path / "criu-pids").write_text(f"{criu.pid}\n{bystander.pid}\n999999999\n")
        killed = kill_restore(tmp_path, Request(tmp_path, tmp_path, pid_file))
        assert killed == [init.pid, criu.pid]
        assert init.wait(10) == -9 and criu.wait(10) == -9
        assert bystander.poll() is None
        assert kill_restore(tmp_path / "nothing", None) == []
    finally:
        for proc in (init, criu, bystander):
            proc.kill()
            proc.wait()


def test_the_containers_processes_are_found_by_its_cgroups(tmp_path: Path) -> None:
    ident = "2" * 64
    assert container_id(Path(f"/var/lib/containers/storage/overlay-containers/{ident}/userdata")) \
        == ident
    assert container_id(Path("/tmp/x/userdata")) is None
    assert container_id(Path(f"/x/{ident}/elsewhere")) is None
    proc = tmp_path / "proc"
    cgroups = {
        "10": f"4:memory:/libpod_parent/libpod-{ident}\n",  # cgroupfs manager
        "11": f"0::/machine.slice/libpod-{ident}.scope/container\n",  # systemd's, nested
        "12": f"4:memory:/libpod_parent/conmon\n0::/libpod-conmon-{ident}.scope\n",  # conmon
        "13": f"4:memory:/libpod_parent/libpod-{'3' * 64}\n",  # another container
    }
    for pid, text in cgroups.items():
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cgroup").write_text(text)
    (proc / "self").mkdir()
    assert sorted(container_processes(ident, proc)) == [10, 11]
    assert container_processes(None, proc) == []


def test_uffd_holder_duplicates_a_processs_userfaultfds() -> None:
    # A child that opens a userfaultfd (syscall 323 on x86_64) and waits.
    code = ("import ctypes, os, sys, time; libc = ctypes.CDLL(None, use_errno=True); "
            "fd = libc.syscall(323, os.O_CLOEXEC); print(fd, flush=True); time.sleep(30)")
    if os.uname().machine != "x86_64":
        pytest.skip("the child opens its userfaultfd by x86_64's syscall number")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        fd = int(child.stdout.readline())
        if fd < 0:
            pytest.fail("this host cannot open a userfaultfd as this user")
        holder = UffdHolder(child.pid)
        holder.scan()
        assert list(holder.held) == [fd]
        ours = holder.held[fd]
        assert os.readlink(f"/proc/self/fd/{ours}") == "anon_inode:[userfaultfd]"
        holder.scan()  # nothing twice
        assert len(holder.held) == 1
        holder.release()
        assert not holder.held
        with pytest.raises(OSError):
            os.fstat(ours)
    finally:
        child.kill()
        child.wait()
    assert ctypes.sizeof(ctypes.c_int) == 4


def test_supervisor_outlives_its_caller_and_serves_one_restore(
        tmp_path: Path, fake_criu: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(lazy_pages.__file__).parents[1]))
    session = create_session(fake_criu, parent=tmp_path / "lazy")
    pid = start_supervisor(session, fake_criu, request_timeout=20)
    assert os.getsid(pid) != os.getsid(0)  # a session of its own
    assert Path(f"/proc/{pid}/status").read_text().count(f"PPid:\t{os.getpid()}\n") == 0
    runc = [*RUNC_RESTORE]
    runc[runc.index("--image-path") + 1] = str(work / "checkpoint")
    runc[runc.index("--work-path") + 1] = str(work)
    runc[runc.index("--pid-file") + 1] = str(work / "pidfile")
    result = run_as_runc(session.bin_dir / "criu", runc, "swrk", "3")
    assert result.returncode == 0, result.stderr
    wait_for(session.status)
    outcome = session.outcome()
    assert outcome is not None and outcome.state == "filled", outcome
    assert isinstance(outcome, Outcome)
    assert [p.name for p in session.directory.iterdir()] == ["status.json"]


# --- whether lazy restore can work on this host ------------------------------------------------

def _versions(runtime: str, runtime_version: str, kernel: str = "6.18.44-fc-v1252") -> HostVersions:
    return HostVersions(podman="5.4.2", runtime=runtime, runtime_version=runtime_version,
                        kernel=kernel, hostname="h")


@pytest.mark.parametrize("runtime,version", [
    ("runc", "runc version 1.1.15+ds1"),
    ("runc", "runc version 1.1.5+ds1"),
    ("crun", "crun version 1.26"),
    ("crun", "crun version 1.27.1"),
])
def test_lazy_restore_works_with_runc_and_crun_from_1_26(runtime: str, version: str) -> None:
    assert lazy_restore_problem(_versions(runtime, version), userfaultfd=True) is None
    assert lazy_restore_problem(_versions(runtime, version)) is None  # userfaultfd unknown


def test_crun_before_1_26_restores_eagerly_and_says_why() -> None:
    assert lazy_restore_problem(_versions("crun", "crun version 1.21")) == (
        "crun 1.21 reads no org.criu.config before 1.26 and does not fail a restore whose "
        "page daemon failed: resume restores every page first")
    assert lazy_restore_problem(_versions("crun", "crun version 1.8.1")) is not None
    unknown = lazy_restore_problem(_versions("crun", ""))
    assert unknown is not None and unknown.startswith("crun (version unknown) reads no")


def test_another_runtime_is_no_lazy_restore() -> None:
    why = lazy_restore_problem(_versions("youki", "youki version 0.5.0"))
    assert why == "podman's runtime is youki: lazy restore needs runc or crun 1.26 or later"
    assert lazy_restore_problem(_versions("", "")) is not None


def test_the_kernel_needs_pidfd_getfd_and_userfaultfd() -> None:
    old = lazy_restore_problem(_versions("runc", "runc version 1.1.5", kernel="5.4.0-150"))
    assert old is not None and "no pidfd_getfd (5.6)" in old and "5.4.0-150" in old
    assert lazy_restore_problem(_versions("runc", "runc version 1.1.5", kernel="5.6.0")) is None
    none = lazy_restore_problem(_versions("runc", "runc version 1.1.5"), userfaultfd=False)
    assert none == "Linux 6.18.44-fc-v1252 has no userfaultfd: CRIU cannot restore lazily"
    # The runtime's reason comes first, and every reason is one line.
    both = lazy_restore_problem(_versions("crun", "crun version 1.21", kernel="5.4"),
                                userfaultfd=False)
    assert both is not None and both.startswith("crun 1.21") and "\n" not in both


def test_userfaultfd_is_read_from_its_sysctl(tmp_path: Path) -> None:
    assert not kernel_has_userfaultfd(tmp_path / "missing")
    (tmp_path / "unprivileged_userfaultfd").write_text("0\n")
    assert kernel_has_userfaultfd(tmp_path / "unprivileged_userfaultfd")
