"""Commands inside the test host, and the memcached services the systemd tests configure."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

NAME = os.environ.get("WARMCTL_TESTHOST_NAME", "warmctl-testhost-trixie")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "testhost"
MCTOOL = "/opt/warmctl/src/tests/integration/mctool.py"
PYTHON = "/opt/warmctl/venv/bin/python"
ENV = {**os.environ, "PODMAN_IGNORE_CGROUPSV1_WARNING": "1"}


def running() -> bool:
    result = subprocess.run(["podman", "container", "inspect", "-f", "{{.State.Running}}", NAME],
                            capture_output=True, text=True, check=False, env=ENV)
    return result.stdout.strip() == "true"


def inside(*argv: str, check: bool = True,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", "exec", "-e", "PODMAN_IGNORE_CGROUPSV1_WARNING=1",
                             "-e", "NO_COLOR=1", NAME, *argv], capture_output=True, text=True,
                            check=False, timeout=timeout, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"in the test host, {' '.join(argv)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 120) -> None:
    """Poll ``condition`` until true: a readiness check."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Service:
    """warmctl@NAME.service running memcached, published on 127.0.0.1:PORT in the test host."""

    name: str
    port: int
    keep_last: int = 24
    max_age: str | None = None  # MAX_AGE= in NAME.conf; None: the unit's default

    @property
    def unit(self) -> str:
        return f"warmctl@{self.name}.service"

    def configure(self) -> None:
        conf = (f"IMAGE=localhost/warmctl-test/memcached\n"
                f'PODMAN_ARGS="--publish 127.0.0.1:{self.port}:11211"\n'
                f'COMMAND="-m 256 -p 11211"\n'
                "SNAPSHOT_ARGS=--tcp-established\n"
                f"KEEP_LAST={self.keep_last}\n"
                + ("" if self.max_age is None else f"MAX_AGE={self.max_age}\n"))
        inside("sh", "-c", f"mkdir -p /etc/warmctl/services && cat >/etc/warmctl/services/"
                           f"{self.name}.conf <<'EOF'\n{conf}EOF\n")

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return inside("systemctl", *args, check=check)

    def active(self) -> str:
        return self.systemctl("is-active", self.unit, check=False).stdout.strip()

    def show(self, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", self.unit).stdout.strip()

    def journal(self) -> str:
        return inside("journalctl", "-u", self.unit, "--no-pager", "-o", "cat").stdout

    def mctool(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return inside(PYTHON, MCTOOL, args[0], str(self.port), *args[1:], check=check)

    def generations(self) -> list[str]:
        listed = inside("warmctl", "list", "--json", self.name, check=False)
        if listed.returncode != 0:
            return []
        return [str(item["ref"]) for item in json.loads(listed.stdout)]

    def remove(self) -> None:
        inside("systemctl", "disable", "--now", self.unit, f"warmctl-snapshot@{self.name}.timer",
               check=False)
        inside("systemctl", "reset-failed", self.unit, check=False)
        inside("podman", "rm", "--force", "--time", "0", self.name, check=False)
        inside("sh", "-c", f"warmctl rm --all-generations {self.name} >/dev/null 2>&1; "
                           f"rm -rf /etc/warmctl/services/{self.name}.conf "
                           f"/etc/systemd/system/warmctl-snapshot@{self.name}.timer.d "
                           f"/etc/systemd/system/{self.unit}.d; "
                           "systemctl daemon-reload", check=False)
