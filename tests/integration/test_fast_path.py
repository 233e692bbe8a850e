"""warmctl compresses and expands archives itself (multi-threaded zstd, with a plain tar in
the catalogue's tmp/ in between). Whatever the path, a resume must bring back exactly the data
podman's own path brings back, and warmctl's archives must stay importable by plain podman."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import Containers, Warmctl, free_port, podman
from test_core_verbs import assert_all_back, fill, start_memcached

from warmctl.archive import detect_compression, summarize

pytestmark = pytest.mark.podman


@pytest.mark.parametrize("compress", ["zstd", "none", "gzip"])
def test_every_path_restores_the_same_data(
    warmctl: Warmctl, containers: Containers, compress: str
) -> None:
    name, port = start_memcached(containers)
    items = fill(port, 48, seed=21)
    warmctl("snapshot", name, "fp", "--leave-running", "--compress", compress)
    entry = warmctl("show", "fp", "--json").json()
    assert isinstance(entry, dict)
    archive = Path(entry["archive"])
    assert detect_compression(archive) == compress
    assert entry["archive_contents"]["memory_bytes"] >= 48 << 20
    assert list((warmctl.home / "tmp").iterdir()) == []

    other_port = free_port()
    warmctl("resume", "fp", "--name", containers.name("warmctl"),
            "--publish", f"127.0.0.1:{other_port}:11211")
    assert_all_back(other_port, items)
    assert list((warmctl.home / "tmp").iterdir()) == []

    # The same archive through podman's own import path serves the same data.
    plain_port = free_port()
    podman("container", "restore", "--import", str(archive), "--name",
           containers.name("podman"), "--publish", f"127.0.0.1:{plain_port}:11211")
    assert_all_back(plain_port, items)


def test_zstd_archive_is_about_podmans_size(
    warmctl: Warmctl, containers: Containers, tmp_path: Path
) -> None:
    name, port = start_memcached(containers)
    fill(port, 32, seed=22)
    warmctl("snapshot", name, "sz", "--leave-running")
    ours = Path(warmctl("list", "--json").json()[0]["archive"])  # type: ignore[index]
    theirs = tmp_path / "podman.tar"
    podman("container", "checkpoint", "--leave-running", "--export", str(theirs), name)
    assert summarize(ours).memory_bytes == pytest.approx(summarize(theirs).memory_bytes, rel=0.05)
    assert ours.stat().st_size <= 1.1 * theirs.stat().st_size
