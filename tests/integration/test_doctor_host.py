"""doctor on the provisioned host, and what doctor, snapshot and resume say when a CRIU too
old for this kernel comes first on PATH."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import IMAGES, Containers, Warmctl, podman

from warmctl.host import facts as host
from warmctl.podman import podman_environment

pytestmark = pytest.mark.podman

FIX = "install CRIU >= 4.2 (scripts/provision-host does)"


@pytest.fixture
def old_criu_path(tmp_path: Path) -> dict[str, str]:
    """PATH with a criu that says it is 3.17 (Debian 12's) and whose `criu check` fails, first:
    runc and warmctl both take the first criu on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    criu = bin_dir / "criu"
    criu.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '--version) echo "Version: 3.17" ;;\n'
        'check) echo "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds" >&2; '
        "exit 1 ;;\n"
        '*) echo "fake criu 3.17: $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    criu.chmod(0o755)
    return {"PATH": f"{bin_dir}:{podman_environment()['PATH']}"}


def test_doctor_says_this_host_can_checkpoint(warmctl: Warmctl) -> None:
    # How long it takes is the benchmark's (bench/micro.py, "doctor"), not a timed test's.
    result = warmctl("doctor")
    lines = result.stdout.splitlines()
    # capability: a warning, only where root lacks CAP_SYS_RESOURCE (as on the project's VMs).
    assert [line.split()[1] for line in lines] == [
        "root", "podman", "runtime", "cgroups", "ulimits", "criu", "criu-kernel", "criu-config",
        *([] if host.has_cap_sys_resource() else ["capability"]), "catalogue"]
    assert all(line.split()[0] in ("ok", "warn") for line in lines), result.stdout
    data = warmctl("doctor", "--json").json()
    assert isinstance(data, dict) and data["ok"] is True
    assert not warmctl.home.exists()  # doctor creates nothing without --probe


def test_doctor_probe_checkpoints_and_restores_a_container_here(warmctl: Warmctl) -> None:
    data = warmctl("doctor", "--probe", "--json").json()
    assert isinstance(data, dict) and data["ok"] is True
    probe = data["checks"][-1]
    assert probe["name"] == "probe" and probe["status"] == "ok", probe
    assert list((warmctl.home / "tmp").iterdir()) == []


def test_doctor_with_criu_3_17_exits_6_and_names_criu_4_2(
    warmctl: Warmctl, old_criu_path: dict[str, str]
) -> None:
    result = warmctl("doctor", check=False, env=old_criu_path)
    assert result.returncode == 6, result
    assert "fail  criu-kernel   CRIU 3.17 cannot checkpoint on kernel" in result.stdout
    assert f"-> fix: {FIX}" in result.stdout
    assert FIX in result.stderr and result.stderr.count("\n") == 1


def test_snapshot_with_criu_3_17_fails_with_the_fix_and_leaves_the_container_running(
    warmctl: Warmctl, containers: Containers, old_criu_path: dict[str, str]
) -> None:
    name = containers.name("bb")
    podman("run", "-d", "--name", name, IMAGES["busybox"], "sleep", "1000")
    result = warmctl("snapshot", name, check=False, env=old_criu_path)
    assert result.returncode in (6, 7), result
    assert FIX in result.stderr and result.stderr.count("\n") == 1
    assert containers.state(name) == "running"
    assert warmctl("list", "--json").json() == []


def test_resume_with_criu_3_17_fails_with_the_fix_before_podman_restores(
    warmctl: Warmctl, containers: Containers, old_criu_path: dict[str, str]
) -> None:
    name = containers.name("bb")
    podman("run", "-d", "--name", name, IMAGES["busybox"], "sleep", "1000")
    warmctl("snapshot", name, "bb")
    target = containers.name("back")
    result = warmctl("resume", "bb", "--name", target, check=False, env=old_criu_path)
    assert result.returncode == 6, result
    assert FIX in result.stderr
    assert containers.state(target) is None
