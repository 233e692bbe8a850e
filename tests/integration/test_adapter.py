"""The podman adapter against a real podman: a memcached full of data goes through
checkpoint --export, rm and restore --import, and every value comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcclient import MemcacheClient, iter_missing_or_different, random_items, wait_for_memcached
from support import IMAGES, Containers, free_port

from warmctl.errors import NotFoundError
from warmctl.podman.cli import PodmanCLI

pytestmark = pytest.mark.podman

MIB = 1 << 20


def test_checkpoint_export_and_restore_import_keep_every_value(
    containers: Containers, tmp_path: Path
) -> None:
    podman = PodmanCLI()
    name = containers.name("mc")
    port = free_port()
    podman.run_detached(IMAGES["memcached"], name=name, publish=[f"127.0.0.1:{port}:11211"])
    wait_for_memcached(port)
    items = random_items(count=64 * MIB // 4096, size=4096, seed=2)
    with MemcacheClient(port) as client:
        client.set_many(items)

    archive = tmp_path / "mc.tar"
    result = podman.checkpoint(name, archive)
    assert archive.stat().st_size > 64 * MIB // 2  # zstd cannot shrink random data much
    assert archive.stat().st_mode & 0o777 == 0o600
    assert result.criu_statistics["pages_written"] >= 64 * MIB // 4096
    info = podman.inspect_container(name)
    assert info is not None and not info.running

    podman.remove_container(name)
    assert podman.inspect_container(name) is None
    restored = podman.restore(archive, name=name)
    assert restored.criu_statistics["pages_restored"] >= 64 * MIB // 4096
    info = podman.inspect_container(name)
    assert info is not None and info.running
    assert info.ports == [f"127.0.0.1:{port}:11211/tcp"]

    wait_for_memcached(port)
    with MemcacheClient(port) as client:
        got = client.get_many(list(items))
    assert list(iter_missing_or_different(items, got)) == []


def test_missing_container_is_reported_as_not_found(tmp_path: Path) -> None:
    podman = PodmanCLI()
    assert podman.inspect_container("warmctl-no-such-container") is None
    with pytest.raises(NotFoundError):
        podman.checkpoint("warmctl-no-such-container", tmp_path / "x.tar")
