"""warmctl compresses archives itself (multi-threaded zstd) and feeds them to podman through a
FIFO, decompressing on the fly (warmctl/lifecycle/feed.py). Whatever the path, a resume must
bring back exactly the data podman's own path brings back, warmctl's archives must stay
importable by plain podman, and a damaged archive must never come back as a running container."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from mcclient import wait_for_memcached
from support import IMAGES, Containers, Warmctl, free_port, podman
from test_core_verbs import assert_all_back, fill, start_looper, start_memcached

from warmctl import criu_config
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
    ours = Path(warmctl("list", "--json").json()[0]["archive"])
    theirs = tmp_path / "podman.tar"
    podman("container", "checkpoint", "--leave-running", "--export", str(theirs), name)
    assert summarize(ours).memory_bytes == pytest.approx(summarize(theirs).memory_bytes, rel=0.05)
    assert ours.stat().st_size <= 1.1 * theirs.stat().st_size


def test_podman_reads_the_archive_as_the_feed_expects(
    warmctl: Warmctl, containers: Containers
) -> None:
    """feed.py answers podman's first two reads with the configuration alone. A podman that
    reads differently still restores (resume tries again with the whole archive each time),
    only slower: this pins the pattern of the podman these tests run."""
    looper = start_looper(containers)
    warmctl("snapshot", looper, "rp", "--leave-running")
    new = containers.name("rp")
    result = warmctl("resume", "rp", "--name", new, env={"WARMCTL_DEBUG": "1"})
    reads = re.findall(r"podman's read (\d) gets the (configuration tar|whole archive)",
                       result.stderr)
    assert reads == [("1", "configuration tar"), ("2", "configuration tar"),
                     ("3", "whole archive")], result.stderr
    assert "trying again" not in result.stderr
    assert containers.state(new) == "running"


@pytest.mark.parametrize(("compress", "where"), [("zstd", "checksum"), ("none", "middle")])
def test_damage_found_at_the_end_stops_podman_before_criu(
    warmctl: Warmctl, containers: Containers, compress: str, where: str
) -> None:
    """podman has read all but the archive's end when the damage shows (the zstd checksum;
    the digest of a plain archive, which reads fine): what it gets then must make it fail,
    with nothing restored."""
    name, port = start_memcached(containers)
    fill(port, 16, seed=23)
    warmctl("snapshot", name, "end", "--leave-running", "--compress", compress)
    archive = Path(warmctl("show", "end", "--json").json()["archive"])
    offset = archive.stat().st_size - 2 if where == "checksum" else archive.stat().st_size // 2
    with open(archive, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    new = containers.name("end")
    result = warmctl("resume", "end", "--name", new, "--publish",
                     f"127.0.0.1:{free_port()}:11211", check=False, env={"WARMCTL_DEBUG": "1"})
    assert result.returncode == 5, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("warmctl: error")]
    assert len(errors) == 1 and "corrupt" in errors[0], result.stderr
    # podman failed while unpacking: it never ran CRIU (not restored and then removed)
    assert "unpacking of checkpoint archive" in result.stderr, result.stderr
    assert containers.state(new) is None
    assert warmctl("list", "--json").json()[0]["ref"] == "end@1"


def test_resume_json_reports_criu_restore_statistics(
    warmctl: Warmctl, containers: Containers
) -> None:
    looper = start_looper(containers)
    warmctl("snapshot", looper, "st", "--leave-running")
    resumed = warmctl("resume", "st", "--name", containers.name("st"), "--json").json()
    assert isinstance(resumed, dict)
    assert resumed["ref"] == "st@1" and resumed["container"] == containers.name("st")
    assert resumed["criu_stats"]["restore_time"] > 0
    assert resumed["criu_stats"]["pages_restored"] > 0


def test_resume_of_a_stopped_source_restores_in_place_with_every_value(
    warmctl: Warmctl, containers: Containers
) -> None:
    """The source container, stopped by the snapshot, still holds that checkpoint in podman's
    storage: resume restores it there, without unpacking the archive."""
    name, port = start_memcached(containers)
    items = fill(port, 32, seed=24)
    source_id = podman("container", "inspect", "--format", "{{.Id}}", name).stdout.strip()
    warmctl("snapshot", name, "ip")
    assert containers.state(name) == "exited"
    result = warmctl("resume", "ip", "--json", env={"WARMCTL_DEBUG": "1"})
    assert "restoring in place" in result.stderr, result.stderr
    assert "whole archive" not in result.stderr  # the archive was not fed to podman
    assert podman("container", "inspect", "--format", "{{.Id}}", name).stdout.strip() == source_id
    assert_all_back(port, items)

    # Once restored, the checkpoint has left podman's storage: the same snapshot comes back
    # through its archive. A source stopped since (not by a checkpoint) is replaced only
    # when --replace says so.
    podman("stop", "--time", "0", name)
    assert warmctl("resume", "ip", check=False).returncode == 4
    result = warmctl("resume", "ip", "--replace", env={"WARMCTL_DEBUG": "1"})
    assert "restoring in place" not in result.stderr and "whole archive" in result.stderr
    assert_all_back(port, items)


def criu_config_annotation(container: str) -> str | None:
    shown = podman("container", "inspect", "--format", "{{json .Config.Annotations}}",
                   container).stdout
    value = json.loads(shown).get(criu_config.ANNOTATION)
    assert value is None or isinstance(value, str)
    return value


def test_resume_gives_criu_its_options_for_that_restore_only(
    warmctl: Warmctl, containers: Containers
) -> None:
    """CRIU restores with auto-dedup and tcp-close (warmctl/criu_config.py) from a file that
    exists for that restore only, named through a criu wrapper: nothing stays in the resumed
    container's spec. Snapshots of it, and podman's own checkpoint and restore of it, work
    after that, every value back each time. A container an earlier release resumed (its spec
    names a file long gone) is snapshotted and resumed too, and loses that annotation."""
    name, port = start_memcached(containers)
    items = fill(port, 32, seed=25)
    warmctl("snapshot", name, "dd", "--leave-running")
    first, first_port = containers.name("dd1"), free_port()
    result = warmctl("resume", "dd", "--name", first,
                     "--publish", f"127.0.0.1:{first_port}:11211", env={"WARMCTL_DEBUG": "1"})
    assert_all_back(first_port, items)
    assert criu_config_annotation(first) is None
    match = re.search(r"criu: (\S+\.conf) \(auto-dedup, tcp-close\)", result.stderr)
    assert match is not None, result.stderr
    assert Path(match.group(1)).parent == criu_config.DIRECTORY
    assert not Path(match.group(1)).exists()
    assert not Path(match.group(1)).with_suffix(".bin").exists()

    warmctl("snapshot", first, "dd2", "--leave-running")
    second, second_port = containers.name("dd2"), free_port()
    warmctl("resume", "dd2", "--name", second, "--publish", f"127.0.0.1:{second_port}:11211")
    assert_all_back(second_port, items)
    podman("container", "checkpoint", second)
    podman("container", "restore", second)
    assert_all_back(second_port, items)

    # As an earlier warmctl left it: the spec names a file of a restore long finished.
    old, old_port = containers.name("old"), free_port()
    podman("run", "--detach", "--name", old, "--publish", f"127.0.0.1:{old_port}:11211",
           "--annotation", f"{criu_config.ANNOTATION}={criu_config.DIRECTORY}/0-gone.conf",
           IMAGES["memcached"])
    wait_for_memcached(old_port)
    old_items = fill(old_port, 8, seed=26)
    assert criu_config_annotation(old) == f"{criu_config.DIRECTORY}/0-gone.conf"
    warmctl("snapshot", old, "old", "--leave-running")
    third, third_port = containers.name("old2"), free_port()
    warmctl("resume", "old", "--name", third, "--publish", f"127.0.0.1:{third_port}:11211")
    assert criu_config_annotation(third) is None
    assert_all_back(third_port, old_items)
