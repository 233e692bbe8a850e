"""push and pull through a real registry: Debian's docker-registry (distribution 2.8), started by
each test on a free 127.0.0.1 port with its own config and storage under tmp_path, stopped
after. Warm memcached once, push, delete, pull into another catalogue, resume, every value
back; a corrupt blob refused; a registry that is down."""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import IMAGES, Containers, Warmctl, free_port, podman
from test_core_verbs import assert_all_back, fill, start_looper, start_memcached

pytestmark = pytest.mark.podman

REGISTRY_BINARY = "/usr/bin/docker-registry"  # Debian's docker-registry package

_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: false  # test_trust.py reads which blobs were fetched
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: warmctl-test-{port}
"""


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    log: Path  # its output, access log included

    def blob_data(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        hexdigest = digest.removeprefix("sha256:")
        return (self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
                / hexdigest[:2] / hexdigest / "data")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    port = free_port()
    storage = tmp_path / "registry-storage"
    config = tmp_path / "registry.yml"
    config.write_text(_CONFIG.format(storage=storage, port=port))
    log_path = tmp_path / "registry.log"
    with serving_registry(config, f"http://127.0.0.1:{port}/v2/", log_path):
        yield Registry(f"127.0.0.1:{port}", storage, log_path)


@contextlib.contextmanager
def serving_registry(config: Path, ping_url: str, log_path: Path,
                     context: ssl.SSLContext | None = None) -> Iterator[None]:
    """Debian's docker-registry serving ``config`` while the context is open: started, waited
    for until ``ping_url`` answers 200 (a readiness check, not a sleep), then stopped."""
    if not os.access(REGISTRY_BINARY, os.X_OK):
        message = f"{REGISTRY_BINARY} is missing (scripts/provision-host installs docker-registry)"
        if os.environ.get("WARMCTL_REQUIRE_PODMAN") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with log_path.open("wb") as log:
        proc = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_until_serving(ping_url, context, proc, log_path)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_serving(url: str, context: ssl.SSLContext | None,
                        proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"docker-registry exited {proc.returncode}: "
                                 f"{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"docker-registry did not answer at {url}: "
                         f"{log.read_text(errors='replace')}")


def test_push_remove_pull_elsewhere_resume_every_value_back(
    warmctl: Warmctl, containers: Containers, registry: Registry, tmp_path: Path
) -> None:
    name, port = start_memcached(containers)
    items = fill(port, 48, seed=21)
    assert warmctl("snapshot", name, "mc").stdout.strip() == "mc@1"
    original = warmctl("show", "mc", "--json").json()
    assert isinstance(original, dict)
    dest = f"{registry.host}/warm/mc"

    pushed = warmctl("push", "mc", dest, "--tls-verify=false", "--json").json()
    assert isinstance(pushed, dict)
    assert pushed["destination"] == f"{dest}:mc-1"
    assert pushed["blob_digest"] == f"sha256:{original['sha256']}"
    assert pushed["skipped_existing"] is False
    assert pushed["bytes_uploaded"] > original["size_bytes"]  # the archive and the config
    stored = registry.blob_data(pushed["blob_digest"])
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == original["sha256"]

    # Twice: the archive is in the registry already; the same manifest results.
    again = warmctl("push", "mc@1", dest, "--tls-verify=false", "--json").json()
    assert isinstance(again, dict)
    assert again["skipped_existing"] is True and again["bytes_uploaded"] == 0
    assert again["manifest_digest"] == pushed["manifest_digest"]

    warmctl("rm", "mc")
    podman("rm", "--force", "--time", "0", name)
    assert warmctl("list", "--json").json() == []

    elsewhere = Warmctl(tmp_path / "elsewhere")
    pulled = elsewhere("pull", f"{dest}:mc-1", "--tls-verify=false", "--json").json()
    assert isinstance(pulled, dict)
    assert pulled["ref"] == "mc@1"
    for key in ("sha256", "size_bytes", "compression", "container", "image", "image_id",
                "ports", "host", "criu_stats"):
        assert pulled[key] == original[key], key
    assert pulled["pulled"]["manifest_digest"] == pushed["manifest_digest"]
    assert elsewhere("verify", "mc").returncode == 0

    # This host recorded it: --strict finds nothing to refuse.
    resumed = elsewhere("resume", "mc", "--strict")
    assert resumed.stdout.strip() == name
    assert "warning" not in resumed.stderr
    assert_all_back(port, items)

    report = elsewhere("doctor", "--snapshot", "mc", "--json", check=False).json()
    assert isinstance(report, dict)
    rows = {c["name"]: c for c in report["checks"] if c["name"].startswith("host-")}
    assert list(rows) == ["host-cpu", "host-kernel", "host-criu", "host-podman",
                          "host-runtime", "host-image"]
    assert all(row["status"] == "ok" for row in rows.values()), rows


def test_corrupt_blob_in_the_registry_is_refused_and_nothing_recorded(
    warmctl: Warmctl, containers: Containers, registry: Registry, tmp_path: Path
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "looper", "--leave-running")
    dest = f"{registry.host}/warm/looper"
    pushed = warmctl("push", "looper", dest, "--tls-verify=false", "--json").json()
    assert isinstance(pushed, dict)
    blob = registry.blob_data(pushed["blob_digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    other = Warmctl(tmp_path / "other")
    result = other("pull", f"{dest}:looper-1", "--tls-verify=false", check=False)
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("warmctl: error: ") and "corrupt" in result.stderr
    assert result.stderr.count("\n") == 1
    assert other("list", "--json").json() == []
    assert list((other.home / "archives").iterdir()) == []
    assert list((other.home / "tmp").iterdir()) == []


def test_pull_refuses_an_image_that_is_not_a_snapshot(
    warmctl: Warmctl, registry: Registry
) -> None:
    image = f"{registry.host}/images/busybox:1"
    podman("push", "--tls-verify=false", IMAGES["busybox"], image)
    result = warmctl("pull", image, "--tls-verify=false", check=False)
    assert result.returncode == 5, result.stderr
    assert "is not a warmctl snapshot" in result.stderr
    assert warmctl("list", "--json").json() == []


def test_push_to_a_registry_that_is_down_changes_nothing(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "looper", "--leave-running")
    before = warmctl("list", "--json").json()
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = warmctl("push", "looper", f"{host}/warm/looper", "--tls-verify=false",
                     check=False)
    assert result.returncode == 6, result.stderr
    assert result.stderr.count("\n") == 1
    assert f"registry {host} is unreachable" in result.stderr
    assert warmctl("list", "--json").json() == before
    assert list((warmctl.home / "tmp").iterdir()) == []
