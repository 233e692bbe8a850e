"""Services with clients: snapshot and resume of containers that are serving, as they are
used (issue 13). Every test drives the real CLI against the real podman and CRIU."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from load import http_keep_alive_load, memcached_load
from mcclient import wait_for_memcached
from support import IMAGES, Containers, Warmctl, free_port, podman, require_dev_kvm
from test_core_verbs import assert_all_back, fill, start_memcached
from test_warm import state_server_classes  # noqa: F401 - the fixture, shared

import warmctl
from warmctl.host import facts as host

pytestmark = pytest.mark.podman


def test_snapshots_of_a_serving_memcached_harm_no_client_and_clone_every_value(
    warmctl: Warmctl, containers: Containers
) -> None:
    """Persistent clients doing set/get and a stream of new connections while snapshot
    --leave-running runs several times: every snapshot exits 0 with default options, no client
    sees an error; two clones of one of those snapshots hold every value."""
    name, port = start_memcached(containers)
    items = fill(port, 16, seed=13)
    with memcached_load(port, persistent=3, churn=True) as load:
        load.wait_for_requests(50)
        for _ in range(4):
            warmctl("snapshot", name, "busy", "--leave-running")
        report = load.stop()
    print(f"\nclients during 4 snapshots: {report.summary()}")
    assert report.errors == [], report.errors
    assert report.connections > 0 and report.requests > report.connections
    assert sorted(e["ref"] for e in warmctl("list", "busy", "--json").json()) == [
        "busy@1", "busy@2", "busy@3", "busy@4"]

    # The snapshot holds the clients' connections; resume restores them closed, so clones
    # come up under other names and ports (default options).
    for clone in ("c1", "c2"):
        clone_port = free_port()
        warmctl("resume", "busy@2", "--name", containers.name(clone),
                "--publish", f"127.0.0.1:{clone_port}:11211")
        assert_all_back(clone_port, items)
    # The source served on throughout.
    assert_all_back(port, items)


def test_a_stopping_snapshot_of_a_cache_with_clients_resumes_in_place(
    warmctl: Warmctl, containers: Containers
) -> None:
    """The snapshot stops the container under its clients; resume brings it back in place,
    every value back and new clients served, with connections closed (the default) and with
    --tcp-established. What becomes of the clients that waited through the stop with
    --tcp-established is printed, not asserted: on podman 4.3 they usually carry on, but once
    (CI, 2026-12-01) both hung until their 60 s timeout, and podman 5.4 resets them
    (README, "Services with clients")."""
    name, port = start_memcached(containers)
    items = fill(port, 16, seed=14)
    for options in ([], ["--tcp-established"]):
        with memcached_load(port, persistent=2, churn=False, max_seconds=120) as load:
            load.wait_for_requests(20)
            warmctl("snapshot", name, "stopping")
            assert containers.state(name) == "exited"
            result = warmctl("resume", "stopping", *options, env={"WARMCTL_DEBUG": "1"})
            report = load.stop()
        print(f"\nclients through a stopping snapshot and resume in place {options}: "
              f"{report.summary()}")
        assert result.stdout.strip() == name
        assert "restoring in place" in result.stderr, result.stderr
        assert_all_back(port, items)
        with memcached_load(port, persistent=2, churn=True, max_seconds=60) as fresh:
            fresh.wait_for_requests(50)
            report = fresh.stop()
        assert report.errors == [], report.errors


def test_the_strict_option_refuses_a_container_with_connections(
    warmctl: Warmctl, containers: Containers
) -> None:
    name, port = start_memcached(containers)
    with memcached_load(port, persistent=1, churn=False, max_seconds=60) as load:
        load.wait_for_requests(10)
        result = warmctl("snapshot", name, "strict", "--leave-running", "--no-tcp-established",
                         check=False)
        report = load.stop()
    assert result.returncode == 7, result.stderr
    assert "CRIU: inet: Connected TCP socket" in result.stderr
    assert "--no-tcp-established refuses them" in result.stderr
    assert report.errors == []  # a failed dump leaves the container and its clients alone
    assert containers.state(name) == "running"
    assert warmctl("list", "--json").json() == []


def _http_get(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        data: dict[str, object] = json.loads(response.read())
        return data


def test_a_java_service_with_keep_alive_clients(
    warmctl: Warmctl, containers: Containers, state_server_classes: Path  # noqa: F811
) -> None:
    port = free_port()
    name = containers.name("java")
    podman("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:8080",
           "--volume", f"{state_server_classes}:/app:ro", IMAGES["java"],
           "-Xmx256m", "-cp", "/app", "StateServer", "100000")
    _wait_for_http(port)
    warm = _http_get(port)
    with http_keep_alive_load(port, persistent=2) as load:
        load.wait_for_requests(20)
        warmctl("snapshot", name, "javaclients", "--leave-running")
        report = load.stop()
    print(f"\nkeep-alive clients during the snapshot: {report.summary()}")
    assert report.errors == [], report.errors
    clone_port = free_port()
    warmctl("resume", "javaclients", "--name", containers.name("java2"),
            "--publish", f"127.0.0.1:{clone_port}:8080")
    _wait_for_http(clone_port)
    clone = _http_get(clone_port)
    assert clone["nonce"] == warm["nonce"] and clone["checksum"] == warm["checksum"]
    assert isinstance(clone["served"], int) and clone["served"] > 20


def _wait_for_http(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _http_get(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_process_holding_dev_kvm_fails_naming_the_device(
    warmctl: Warmctl, containers: Containers
) -> None:
    require_dev_kvm()
    name = containers.name("kvm")
    # A loop, not one long sleep: after CRIU's failed dump trixie's busybox sleep exits.
    podman("run", "--detach", "--name", name, "--device", "/dev/kvm", IMAGES["busybox"],
           "sh", "-c", "exec 3</dev/kvm; echo open; while :; do sleep 1; done")
    _wait_for_log(name, "open")
    result = warmctl("snapshot", name, "kvm", "--leave-running", check=False)
    assert result.returncode == 7, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert "CRIU: Can't dump file 3 of that type [20600] (chr 10:232)" in line
    assert "/dev/kvm (chr 10:232)" in line and "rlimit" not in line
    assert "--image-path" not in line and "log: " in line
    assert containers.state(name) == "running"  # a failed --leave-running dump leaves it be
    assert "podman left the container" not in line


def test_a_container_of_another_user(warmctl: Warmctl, containers: Containers) -> None:
    """On a host whose root lacks CAP_SYS_RESOURCE, CRIU cannot read a non-root process's
    limits: exit 7 saying why. Elsewhere the snapshot works."""
    name = containers.name("user")
    podman("run", "--detach", "--name", name, "--user", "1000", IMAGES["busybox"],
           "sh", "-c", "echo up; exec sleep 600")
    _wait_for_log(name, "up")
    result = warmctl("snapshot", name, "user", "--leave-running", check=False)
    if host.has_cap_sys_resource():
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 7, result.stderr
    assert "Can't get rlimit" in result.stderr and "CAP_SYS_RESOURCE" in result.stderr
    assert "run the container's processes as root" in result.stderr


def _wait_for_log(container: str, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in podman("logs", container).stdout:
        assert time.monotonic() < deadline, f"{container} never printed {text!r}"
        time.sleep(0.05)


@pytest.fixture
def nobody_home(containers: Containers) -> Iterator[Path]:
    """A catalogue the user nobody owns (where nobody can reach it: pytest's own temporary
    directories are root's only), holding one snapshot taken as root, and a podman for nobody
    that leaves a mark when it runs."""
    base = Path(tempfile.mkdtemp(prefix="warmctl-nobody-"))
    try:
        base.chmod(0o755)
        home = base / "home"
        name = containers.name("idle")
        podman("run", "--detach", "--name", name, IMAGES["busybox"], "sleep", "600")
        Warmctl(home)("snapshot", name, "idle", "--leave-running")
        fake = base / "podman"
        fake.write_text(f"#!/bin/sh\ntouch {home}/podman-ran\nexit 1\n")
        fake.chmod(0o755)
        subprocess.run(["chown", "-R", "65534:65534", str(home)], check=True)
        yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _copy_for_nobody(target: Path) -> Path:
    """Copy this checkout's warmctl package and every installed distribution it needs at run
    time into ``target``, readable by every user, for PYTHONPATH."""
    target.mkdir(mode=0o755)
    shutil.copytree(Path(warmctl.__file__).parent, target / "warmctl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wanted, seen = ["warmctl"], set()
    while wanted:
        name = canonical_name(wanted.pop())
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(name)
        for requirement in dist.requires or []:
            if ";" not in requirement:  # extras and other markers: not needed to run
                wanted.append(re.split(r"[\s<>=!~\[(]", requirement, maxsplit=1)[0])
        if name == "warmctl":
            continue  # its editable install points at the checkout: copied above
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if ".." in file.parts or not source.is_file():
                continue  # scripts outside site-packages
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("verb", [
    ["snapshot", "anything", "--leave-running"],
    ["resume", "idle", "--name", "anything"],
    ["warm", IMAGES["busybox"], "anything", "--ready-tcp", "80"],
])
def test_not_root_exits_6_before_podman(verb: list[str], nobody_home: Path) -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is needed"
    # nobody may not be able to read the checkout or its .venv (a clone under root's 0700
    # home): run a world-readable copy of warmctl and its dependencies instead.
    packages = _copy_for_nobody(nobody_home.parent / "packages")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WARMCTL_HOME": str(nobody_home),
           "HOME": str(nobody_home), "NO_COLOR": "1", "PYTHONPATH": str(packages),
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "WARMCTL_PODMAN": str(nobody_home.parent / "podman")}
    proc = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
         os.path.realpath(sys.executable), "-m", "warmctl", *verb],
        capture_output=True, text=True, env=env, timeout=60, check=False, cwd="/")
    assert proc.returncode == 6, proc.stderr
    assert "only as root" in proc.stderr and "run warmctl as root" in proc.stderr
    assert not (nobody_home / "podman-ran").exists()


def test_concurrent_snapshots_take_turns_and_every_one_resumes(
    warmctl: Warmctl, containers: Containers
) -> None:
    """Four snapshots at once, two per container: all exit 0, and every archive is a complete
    checkpoint (verify) that resumes with every value."""
    sources = []
    for what, seed in (("a", 21), ("b", 22)):
        name, port = start_memcached(containers, what)
        sources.append((name, fill(port, 8, seed=seed)))
    started = [(items, warmctl.popen("snapshot", name, name, "--leave-running", "--json"))
               for name, items in sources for _ in range(2)]
    refs = []
    for items, proc in started:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        refs.append((json.loads(out)["ref"], items))
    assert sorted(ref for ref, _ in refs) == sorted(
        f"{name}@{gen}" for name, _ in sources for gen in (1, 2))
    verified = warmctl("verify", *(ref for ref, _ in refs), "--json").json()
    assert [v["ok"] for v in verified] == [True] * 4, verified
    for number, (ref, items) in enumerate(refs):
        clone_port = free_port()
        warmctl("resume", ref, "--name", containers.name(f"clone{number}"),
                "--publish", f"127.0.0.1:{clone_port}:11211")
        wait_for_memcached(clone_port)
        assert_all_back(clone_port, items)
