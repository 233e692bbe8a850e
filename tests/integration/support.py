"""What the integration tests share: the real CLI in a subprocess, podman, unique container
names, free ports. Fixtures built on these live in conftest.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcclient import MemcacheClient, iter_missing_or_different, random_items, wait_for_memcached

from warmctl.podman.runner import podman_environment

IMAGES = {
    "busybox": "localhost/warmctl-test/busybox",
    "memcached": "localhost/warmctl-test/memcached",
    "java": "localhost/warmctl-test/java",
    "redis": "localhost/warmctl-test/redis",
}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:  # whatever the command printed: the test's asserts check it
        return json.loads(self.stdout)


class Warmctl:
    """Runs the real CLI in a subprocess against this test's catalogue."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**podman_environment(), "WARMCTL_HOME": str(home), "NO_COLOR": "1"}
        self.env.pop("WARMCTL_DEBUG", None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 900,
                 env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "warmctl", *args],
            capture_output=True, text=True, timeout=timeout,
            env={**self.env, **(env or {})}, check=False, stdin=subprocess.DEVNULL,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"warmctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Started in a process group of its own, like a command at a terminal, so that a
        test can send the group a terminal's Ctrl-C (os.killpg)."""
        return subprocess.Popen(
            [sys.executable, "-m", "warmctl", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
            stdin=subprocess.DEVNULL, process_group=0,
        )


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, check=False,
                            env=podman_environment(), timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {result.stderr}")
    return result


class Containers:
    """Unique container names for one test, all removed at the end."""

    def __init__(self) -> None:
        self.prefix = f"wt{uuid.uuid4().hex[:8]}"

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def cleanup(self) -> None:
        listed = podman("ps", "--all", "--format", "{{.Names}}", check=False).stdout.split()
        ours = [n for n in listed if n.startswith(self.prefix)]
        if ours:
            podman("rm", "--force", "--time", "0", *ours, check=False)

    def state(self, name: str) -> str | None:
        result = podman("container", "inspect", "--format", "{{.State.Status}}", name, check=False)
        return result.stdout.strip() if result.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_dev_kvm() -> None:
    """Tests of a device CRIU cannot checkpoint use /dev/kvm: fail (never skip) without it."""
    if not Path("/dev/kvm").exists():
        pytest.fail("this test needs /dev/kvm: a device CRIU cannot checkpoint")


MIB = 1 << 20


def start_memcached(containers: Containers, mib: int = 8, *, seed: int | None = None,
                    name: str | None = None) -> tuple[str, int, dict[str, bytes]]:
    """A memcached published on a free loopback port, holding ``mib`` MiB of random 4 KiB
    values (seeded by ``seed``, else by ``mib``): its name, port and the values."""
    name = name or containers.name("mc")
    port = free_port()
    podman("run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:11211",
           IMAGES["memcached"])
    wait_for_memcached(port)
    items = random_items(count=mib * MIB // 4096, size=4096, seed=mib if seed is None else seed)
    with MemcacheClient(port) as client:
        client.set_many(items)
    return name, port, items


def assert_all_back(port: int, items: dict[str, bytes]) -> None:
    """Every value back, byte for byte, once memcached answers on ``port``."""
    wait_for_memcached(port)
    with MemcacheClient(port) as client:
        got = client.get_many(list(items))
    assert list(iter_missing_or_different(items, got)) == []
