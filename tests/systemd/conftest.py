"""The systemd tests drive the Debian 13 test host (scripts/testhost), where systemd is PID 1:
this machine has no systemd. They run on this machine, with `podman exec` into the test host,
because one of them restarts the test host itself. scripts/testhost test runs them after the
integration suite; started on their own they need `scripts/testhost start` first.
"""

from __future__ import annotations

import os

import pytest
from testhost import NAME, running


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not items or running():
        return
    problem = f"the test host {NAME} is not running (scripts/testhost start)"
    if os.geteuid() != 0:
        problem = "not root: the test host is a root podman container"
    if os.environ.get("WARMCTL_REQUIRE_PODMAN") == "1":
        raise pytest.UsageError(f"WARMCTL_REQUIRE_PODMAN=1 but {problem}")
    for item in items:
        item.add_marker(pytest.mark.skip(reason=problem))

