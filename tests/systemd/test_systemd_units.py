"""warmctl's systemd units (systemd/, warmctl-systemd(7)) with a real systemd as PID 1: the
Debian 13 test host. Each test configures its own memcached service and removes it after."""

from __future__ import annotations

import json
import random
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from testhost import ENV, NAME, SCRIPT, Service, inside, wait_for

COUNT = 3000  # 4 KiB values: 12 MB in memcached


@pytest.fixture
def service() -> Iterator[Service]:
    made = Service(f"mc{uuid.uuid4().hex[:8]}", port=random.randrange(12000, 20000))
    made.remove()
    made.configure()
    try:
        yield made
    finally:
        made.remove()


def start_filled(service: Service, seed: int) -> None:
    service.systemctl("start", service.unit)
    assert service.active() == "active"
    wait_for("memcached to answer",
             lambda: service.mctool("ready", "0", check=False).returncode == 0)
    service.mctool("fill", str(COUNT), str(seed))


def assert_tracks_the_container(service: Service) -> None:
    """systemd's main PID is the resumed container's conmon: systemd tracks that container."""
    conmon = inside("podman", "container", "inspect", "-f", "{{.State.ConmonPid}}",
                    service.name).stdout.strip()
    assert service.show("MainPID") == conmon
    assert inside("podman", "container", "inspect", "-f", "{{.State.Running}}",
                  service.name).stdout.strip() == "true"


def test_stop_takes_a_snapshot_and_start_brings_every_value_back(service: Service) -> None:
    start_filled(service, seed=11)
    service.systemctl("stop", service.unit)
    assert service.active() == "inactive"
    assert service.show("Result") == "success"
    assert service.generations() == [f"{service.name}@1"]
    assert f"snapshot {service.name}@1 taken" in service.journal()

    service.systemctl("start", service.unit)
    assert service.active() == "active"
    assert f"resumed {service.name} warm" in service.journal()
    assert_tracks_the_container(service)
    assert service.mctool("check", str(COUNT), "11").stdout.startswith(f"{COUNT} of {COUNT}")
    # A later stop snapshots the resumed container again.
    service.systemctl("stop", service.unit)
    assert service.generations() == [f"{service.name}@1", f"{service.name}@2"]


def test_no_snapshot_or_a_damaged_one_starts_cold_and_the_journal_says_why(
        service: Service) -> None:
    service.systemctl("start", service.unit)
    assert service.active() == "active"
    assert "starting " + service.name + " cold: resume exited 3" in service.journal()
    assert_tracks_the_container(service)
    service.mctool("fill", "10", "3")
    service.systemctl("stop", service.unit)
    (ref,) = service.generations()
    archive = json.loads(inside("warmctl", "show", "--json", ref).stdout)["archive"]
    # Damage the middle of the archive (its memory pages), as a bad disk would.
    inside("python3", "-c", f"import os; f = open({archive!r}, 'r+b'); "
           "f.seek(os.path.getsize(f.name) // 2); f.write(b'\\xff' * 4096)")
    # Without this, resume restores in place from the checkpoint podman keeps in the stopped
    # container (warmctl's fast path) and never reads the archive.
    inside("podman", "rm", service.name)

    service.systemctl("start", service.unit)
    assert service.active() == "active"
    assert "cold: resume exited 5" in service.journal()
    assert_tracks_the_container(service)
    assert service.mctool("ready", "1", check=False).returncode == 1  # cold: empty


def test_a_snapshot_by_hand_neither_fails_nor_restarts_the_unit(service: Service) -> None:
    start_filled(service, seed=5)
    inside("warmctl", "snapshot", "--quiet", "--tcp-established", service.name, service.name)
    wait_for("the unit to notice its container stopped", lambda: service.active() != "active")
    assert service.active() == "inactive"
    assert service.show("Result") == "success"
    assert service.show("NRestarts") == "0"
    # The checkpointed container is still there, not replaced by a cold copy.
    assert inside("podman", "container", "inspect", "-f", "{{.State.Checkpointed}}",
                  service.name).stdout.strip() == "true"
    service.systemctl("start", service.unit)
    assert service.mctool("check", str(COUNT), "5").stdout.startswith(f"{COUNT} of {COUNT}")


def test_the_timer_takes_snapshots_and_prune_keeps_the_newest_n(service: Service) -> None:
    service.keep_last = 2
    service.configure()
    start_filled(service, seed=9)
    dropin = f"/etc/systemd/system/warmctl-snapshot@{service.name}.timer.d"
    inside("sh", "-c", f"mkdir -p {dropin} && printf '[Timer]\\nOnCalendar=\\nOnCalendar=*:*:0/5"
                       f"\\nAccuracySec=1s\\n' >{dropin}/often.conf && systemctl daemon-reload")
    inside("systemctl", "enable", "--now", f"warmctl-snapshot@{service.name}.timer")

    def generation() -> int:
        refs = service.generations()
        return int(refs[-1].rsplit("@", 1)[1]) if refs else 0

    wait_for("four scheduled snapshots", lambda: generation() >= 4, timeout=180)
    inside("systemctl", "disable", "--now", f"warmctl-snapshot@{service.name}.timer")
    wait_for("the last scheduled run to finish", lambda: inside(
        "systemctl", "is-active", f"warmctl-snapshot@{service.name}.service",
        check=False).stdout.strip() != "activating")
    newest = generation()
    assert service.generations() == [f"{service.name}@{newest - 1}", f"{service.name}@{newest}"]
    # --leave-running: the service ran on through every snapshot, with its data.
    assert service.active() == "active" and service.show("NRestarts") == "0"
    assert service.mctool("check", str(COUNT), "9").stdout.startswith(f"{COUNT} of {COUNT}")
    log = inside("journalctl", "-u", f"warmctl-snapshot@{service.name}.service", "--no-pager",
                 "-o", "cat").stdout
    assert f"{service.name}@{newest}" in log and "keep-last 2" in log


def test_the_service_comes_back_warm_after_the_test_host_restarts(service: Service) -> None:
    service.systemctl("enable", service.unit)
    start_filled(service, seed=21)
    # podman stop sends systemd its shutdown signal: warmctl@.service stops (a snapshot), the
    # container's systemd halts; podman start boots it, and multi-user.target starts the unit.
    subprocess.run([str(SCRIPT), "reboot"], check=True, timeout=600)
    wait_for("the unit to start after boot", lambda: service.active() == "active")
    assert service.generations() == [f"{service.name}@1"]  # taken at shutdown
    # The journal is kept across the restart (a volume); the kernel's boot id is the same, so
    # the order of the lines shows shutdown's snapshot, then boot's resume.
    journal = service.journal()
    taken = journal.find(f"snapshot {service.name}@1 taken")
    assert 0 <= taken < journal.find(f"resumed {service.name} warm"), journal
    assert_tracks_the_container(service)
    assert service.mctool("check", str(COUNT), "21").stdout.startswith(f"{COUNT} of {COUNT}")


def snapshot_age(ref: str) -> float:
    """Seconds since the snapshot was taken, by the test host's clock (the same kernel's)."""
    created = json.loads(inside("warmctl", "show", "--json", ref).stdout)["created"]
    return (datetime.now(UTC) - datetime.fromisoformat(created)).total_seconds()


def test_a_snapshot_within_max_age_starts_warm_and_an_older_one_cold(service: Service) -> None:
    service.max_age = "1h"
    service.configure()
    start_filled(service, seed=31)
    service.systemctl("stop", service.unit)
    service.systemctl("start", service.unit)
    assert service.active() == "active"
    assert re.search(rf"resumed {service.name} warm from snapshot {service.name}@1 "
                     r"\(taken \d+s ago; MAX_AGE=1h\)", service.journal()), service.journal()
    assert service.mctool("check", str(COUNT), "31").stdout.startswith(f"{COUNT} of {COUNT}")

    # The next snapshot outlives a bound of 3 seconds before the unit starts again.
    service.max_age = "3s"
    service.configure()
    service.systemctl("stop", service.unit)
    wait_for("the snapshot to be older than MAX_AGE",
             lambda: snapshot_age(f"{service.name}@2") > 4)
    service.systemctl("start", service.unit)
    assert service.active() == "active"
    journal = service.journal()
    assert (f"starting {service.name} cold: resume exited 11 (the newest snapshot is older than "
            f"MAX_AGE=3s): warmctl: error: snapshot {service.name}@2 is ") in journal, journal
    assert_tracks_the_container(service)
    wait_for("memcached to answer",
             lambda: service.mctool("ready", "0", check=False).returncode == 0)
    assert service.mctool("ready", "1", check=False).stdout.strip() == "0 items"  # cold: empty
    # Refused, not removed: both snapshots stay, and the newest still restores.
    assert service.generations() == [f"{service.name}@1", f"{service.name}@2"]
    inside("warmctl", "verify", f"{service.name}@2")


# In the test host, stop the CRIU that podman runs for the next checkpoint (runc's `criu swrk`)
# the moment it appears: a checkpoint that hangs (a slow disk, say) for as long as the test likes.
PAUSE_CRIU = ("echo watching; while ! pids=$(pgrep -f '[c]riu.* swrk'); do :; done; "
              "kill -STOP $pids; echo $pids")


@contextmanager
def criu_paused_during(begin: Callable[[], object]) -> Iterator[list[str]]:
    """Calls ``begin`` (which starts a checkpoint) once the watcher in the test host runs;
    yields the PIDs of the CRIU it stopped, and lets them go on when the block ends."""
    pauser = subprocess.Popen(["podman", "exec", NAME, "timeout", "120", "sh", "-c", PAUSE_CRIU],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert pauser.stdout is not None
        assert pauser.stdout.readline().strip() == "watching"
        begin()
        paused = pauser.communicate(timeout=150)[0].split()
    finally:
        pauser.kill()
    assert pauser.returncode == 0 and paused, "CRIU never started a checkpoint"
    try:
        yield paused
    finally:
        inside("kill", "-CONT", *paused, check=False)


def test_a_stop_timeout_during_the_checkpoint_lets_it_finish_and_the_next_start_is_warm(
        service: Service) -> None:
    start_filled(service, seed=41)
    dropin = f"/etc/systemd/system/{service.unit}.d"
    inside("sh", "-c", f"mkdir -p {dropin} && printf '[Service]\\nTimeoutStopSec=20s\\n' "
                       f">{dropin}/timeout.conf && systemctl daemon-reload")
    with criu_paused_during(lambda: service.systemctl("stop", "--no-block", service.unit)):
        # TimeoutStopSec passes while CRIU is stopped mid-checkpoint.
        wait_for("the stop timeout", lambda: "systemd timeout for" in service.journal(),
                 timeout=60)
        assert service.generations() == []
    wait_for("the unit to stop", lambda: service.active() in ("inactive", "failed"), timeout=60)
    journal = service.journal()
    # The timeout's signal reached warmctl as SIGTERM: it let podman finish and recorded it.
    assert f"snapshot of {service.name} finished after the stop timeout (exit 143)" in journal
    assert f"recorded as {service.name}@1" in journal, journal
    assert service.generations() == [f"{service.name}@1"]

    service.systemctl("start", service.unit)
    assert service.active() == "active"
    assert f"resumed {service.name} warm from snapshot {service.name}@1" in service.journal()
    assert_tracks_the_container(service)
    # Every value back: conmon passed no signal into the container while it was checkpointed.
    assert service.mctool("check", str(COUNT), "41").stdout.startswith(f"{COUNT} of {COUNT}")
    inside("systemctl", "is-active", service.unit)


def test_a_stop_that_outlasts_its_timeout_twice_is_killed_and_the_next_start_says_how(
        service: Service) -> None:
    service.max_age = "1h"
    service.configure()
    start_filled(service, seed=51)
    service.systemctl("stop", service.unit)  # @1, a clean stop's snapshot
    service.systemctl("start", service.unit)
    dropin = f"/etc/systemd/system/{service.unit}.d"
    inside("sh", "-c", f"mkdir -p {dropin} && printf '[Service]\\nTimeoutStopSec=5s\\n' "
                       f">{dropin}/timeout.conf && systemctl daemon-reload")
    with criu_paused_during(lambda: service.systemctl("stop", "--no-block", service.unit)):
        # CRIU stays stopped through the stop timeout and the grace after it: the final SIGKILL.
        wait_for("the unit to stop", lambda: service.active() in ("inactive", "failed"),
                 timeout=60)
    journal = service.journal()
    assert "systemd timeout for" in journal, journal
    assert service.generations() == [f"{service.name}@1"]  # nothing half-recorded

    # The next start is not refused by what the kill left behind: it says what it removed and
    # resumes the snapshot recorded before (within MAX_AGE), every value of it back.
    service.systemctl("start", service.unit)
    assert service.active() == "active"
    after_the_kill = service.journal().split("systemd timeout for", 1)[1]
    assert (f"container {service.name} was left running without its conmon" in after_the_kill
            and f"resumed {service.name} warm from snapshot {service.name}@1" in after_the_kill), \
        after_the_kill
    assert_tracks_the_container(service)
    assert service.mctool("check", str(COUNT), "51").stdout.startswith(f"{COUNT} of {COUNT}")
