"""warm on real podman: memcached filled by a host warm-up script, a Java service that builds
its state at start, and a readiness probe that never succeeds."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mcclient import MemcacheClient, iter_missing_or_different, random_items, wait_for_memcached
from support import IMAGES, Containers, Warmctl, free_port, podman

pytestmark = pytest.mark.podman

HERE = Path(__file__).parent
MCTOOL = f"{shlex.quote(sys.executable)} {shlex.quote(str(HERE / 'mctool.py'))}"


def test_warm_memcached_with_host_warmup_then_resume(
    warmctl: Warmctl, containers: Containers
) -> None:
    count, seed = 4000, 11
    port = free_port()
    container = containers.name("warm")
    out = warmctl(
        "warm", IMAGES["memcached"], "mcwarm", "--container", container,
        "-p", f"127.0.0.1:{port}:11211",
        "--warmup", f"{MCTOOL} fill {port} {count} {seed}",
        "--ready", f"{MCTOOL} ready {port} {count}",
        "--interval", "200ms", "--timeout", "2m", "--label", "via=warm",
    )
    assert out.stdout.strip() == "mcwarm@1"
    assert containers.state(container) == "exited"

    entry = warmctl("show", "mcwarm", "--json").json()
    assert isinstance(entry, dict)
    assert entry["warm"]["image"] == IMAGES["memcached"]
    assert entry["warm"]["probe_attempts"] >= 1
    assert entry["warm"]["warmup"].endswith(f"fill {port} {count} {seed}")
    assert entry["labels"] == {"via": "warm"}

    assert warmctl("resume", "mcwarm").stdout.strip() == container
    wait_for_memcached(port)
    items = random_items(count, 4096, seed)
    with MemcacheClient(port) as client:
        got = client.get_many(list(items))
    assert list(iter_missing_or_different(items, got)) == []


def test_warm_not_ready_exits_9_and_leaves_nothing(
    warmctl: Warmctl, containers: Containers
) -> None:
    container = containers.name("never")
    started = time.monotonic()
    result = warmctl(
        "warm", IMAGES["busybox"], "never", "--container", container,
        "--ready", "echo still cold; exit 1", "--interval", "300ms", "--timeout", "3s",
        "--", "sleep", "1000", check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 9, result.stderr
    assert "still cold" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert elapsed < 3 + 30  # the timeout, plus podman's start and removal
    assert containers.state(container) is None
    assert warmctl("list", "--json").json() == []


def test_warm_failing_warmup_exits_9_and_keep_on_failure_keeps_it(
    warmctl: Warmctl, containers: Containers
) -> None:
    container = containers.name("badwarm")
    result = warmctl(
        "warm", IMAGES["busybox"], "badwarm", "--container", container,
        "--warmup-exec", "sh -c 'echo no such data >&2; exit 3'", "--keep-on-failure",
        "--", "sleep", "1000", check=False,
    )
    assert result.returncode == 9, result.stderr
    assert "no such data" in result.stderr
    assert containers.state(container) == "running"
    assert warmctl("list", "--json").json() == []


def test_warm_of_a_missing_image_is_not_found(warmctl: Warmctl) -> None:
    result = warmctl("warm", "localhost/warmctl-test/no-such-image", "x", check=False)
    assert result.returncode == 3
    assert "not on this host" in result.stderr


def _get(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        data: dict[str, object] = json.loads(response.read())
        return data


@pytest.fixture(scope="module")
def state_server_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("java-classes")
    subprocess.run(["javac", "-d", str(out), str(HERE / "java" / "StateServer.java")],
                   check=True)
    out.chmod(0o755)
    return out


def test_warm_java_service_then_resume_keeps_its_state(
    warmctl: Warmctl, containers: Containers, state_server_classes: Path
) -> None:
    port = free_port()
    container = containers.name("java")
    ready = (f"{shlex.quote(sys.executable)} -c \"import urllib.request; "
             f"urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)\"")
    warmctl(
        "warm", IMAGES["java"], "javasvc", "--container", container,
        "-p", f"127.0.0.1:{port}:8080", "-v", f"{state_server_classes}:/app:ro",
        "--ready", ready, "--interval", "500ms", "--timeout", "5m",
        "--", "-Xmx256m", "-cp", "/app", "StateServer", "300000",
    )
    # The probe's requests were served before the snapshot; remember what the service was.
    podman("rm", "--force", container)

    assert warmctl("resume", "javasvc").stdout.strip() == container
    first = _get(port)
    entry = warmctl("show", "javasvc", "--json").json()
    assert isinstance(entry, dict)
    attempts = entry["warm"]["probe_attempts"]
    assert first["entries"] == 300000
    # Not rebuilt: the request counter goes on from the readiness probe's successful request.
    assert first["served"] == 2, first

    other_port = free_port()
    warmctl("resume", "javasvc", "--name", containers.name("java2"),
            "--publish", f"127.0.0.1:{other_port}:8080")
    second = _get(other_port)
    assert second["nonce"] == first["nonce"]
    assert second["checksum"] == first["checksum"]
    assert second["served"] == 2
    assert attempts >= 1


def test_warm_with_tcp_and_exec_probes(warmctl: Warmctl, containers: Containers) -> None:
    port = free_port()
    container = containers.name("httpd")
    out = warmctl(
        "warm", IMAGES["busybox"], "web", "--container", container,
        "-p", f"127.0.0.1:{port}:8080", "--ready-tcp", "8080", "--interval", "100ms",
        "--warmup-exec", "sh -c 'echo warmed > /www/index.html'", "--leave-running",
        "--json", "--", "httpd", "-f", "-p", "8080", "-h", "/www",
    ).json()
    assert isinstance(out, dict)
    assert out["ref"] == "web@1" and out["warm"]["ready"] == "tcp: 8080"
    assert containers.state(container) == "running"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        assert response.read() == b"warmed\n"

    other = containers.name("exec")
    warmctl(
        "warm", IMAGES["busybox"], "marker", "--container", other,
        "--ready-exec", "test -e /tmp/ready", "--interval", "100ms", "--timeout", "1m",
        "--", "sh", "-c", "sleep 1; touch /tmp/ready; sleep 1000",
    )
    entry = warmctl("show", "marker", "--json").json()
    assert isinstance(entry, dict)
    assert entry["warm"]["probe_attempts"] >= 2


def test_warm_ready_exec_of_a_command_the_image_lacks_fails_at_once(
    warmctl: Warmctl, containers: Containers
) -> None:
    """Not ten minutes of silent retries: podman's "not found" ends the wait, exit 9."""
    container = containers.name("noprobe")
    started = time.monotonic()
    result = warmctl(
        "warm", IMAGES["busybox"], "noprobe", "--container", container,
        "--ready-exec", "no-such-probe --ping", "--interval", "200ms", "--timeout", "10m",
        "--", "sleep", "1000", check=False,
    )
    assert result.returncode == 9, result.stderr
    assert "--ready-exec 'no-such-probe --ping' cannot run in container" in result.stderr
    assert "not found" in result.stderr  # podman's (the runtime's) own words
    assert time.monotonic() - started < 60
    assert containers.state(container) is None
    assert warmctl("list", "--json").json() == []


def test_warm_ready_exec_says_why_after_its_first_failure_escaped(
    warmctl: Warmctl, containers: Containers
) -> None:
    container = containers.name("coldprobe")
    probe = "sh -c \"printf 'still cold\\\\033[2J' >&2; exit 1\""
    result = warmctl(
        "warm", IMAGES["busybox"], "coldprobe", "--container", container,
        "--ready-exec", probe, "--interval", "300ms", "--timeout", "3s",
        "--", "sleep", "1000", check=False,
    )
    assert result.returncode == 9, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning: not ready yet" in line]
    assert len(warnings) == 1, result.stderr  # after the first failure only
    assert "still cold\\x1b[2J" in warnings[0] and "retrying every 0.3s" in warnings[0]
    assert "\x1b" not in result.stderr
