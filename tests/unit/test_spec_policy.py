"""What a snapshot's spec asks of the host, and the annotations a registry's spec loses; on
the spec of a real podman checkpoint (tests/unit/data/podman-checkpoint-busybox.tar) and
variants of it."""

from __future__ import annotations

import copy
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from warmctl import archive, spec_policy
from warmctl.criu_config import spec_for_restore
from warmctl.errors import ExitCode, HostError
from warmctl.lifecycle.feed import ArchiveFeed

ARCHIVE = Path(__file__).parent / "data" / "podman-checkpoint-busybox.tar"


@pytest.fixture(scope="module")
def real() -> tuple[dict[str, Any], dict[str, Any]]:
    files = archive.configuration_files(ARCHIVE, within=1 << 24)
    assert files is not None
    return json.loads(files[0]), json.loads(files[1])


def test_podmans_defaults_ask_for_nothing(real: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, spec = real
    assert spec_policy.host_access(spec, config) == []
    assert spec_policy.archive_host_access(ARCHIVE) == []
    assert spec_policy.steering_annotations(spec) == []


def test_each_kind_of_host_access_is_named(real: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, original = real
    spec = copy.deepcopy(original)
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"]
                                   if ns["type"] not in ("network", "pid")]
    spec["linux"]["namespaces"].append({"type": "pid", "path": "/proc/1/ns/pid"})
    spec["mounts"].append({"destination": "/host", "type": "bind", "source": "/",
                           "options": ["rbind"]})
    spec["mounts"].append({"destination": "/x", "type": "none", "options": ["bind"],
                           "source": "/var/lib/containers/storage/volumes/../../../../etc/_data"})
    spec["linux"]["devices"] = [{"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232}]
    spec["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 10,
                                                  "minor": 232, "access": "rwm"})
    spec["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    spec["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "id"]}],
                     "poststop": []}
    assert spec_policy.host_access(spec, {**config, "privileged": True}) == [
        "privileged",
        "pid namespace /proc/1/ns/pid",
        "host network namespace",
        "host path / at /host",
        "host path /var/lib/containers/storage/volumes/../../../../etc/_data at /x",
        "device /dev/kvm",
        "device access c 10:232 rwm",
        "capabilities CAP_SYS_ADMIN",
        "OCI hooks run on the host (prestart)",
    ]


def test_keys_are_read_as_go_reads_them(real: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, original = real
    spec = copy.deepcopy(original)
    spec["HOOKS"] = {"Prestart": [{"path": "/bin/sh"}]}
    assert spec_policy.host_access(spec) == ["OCI hooks run on the host (Prestart)"]
    twice = b'{"annotations": {}, "Annotations": {"org.criu.config": "/tmp/evil.conf"}}'
    with pytest.raises(spec_policy.UnclearSpec) as caught:
        spec_policy.confine(b"{}", twice)
    assert caught.value.exit_code == ExitCode.INTEGRITY


def test_confine_keeps_only_podmans_informative_annotations(
        real: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, original = real
    spec = copy.deepcopy(original)
    spec["annotations"].update({"org.criu.config": "/tmp/evil.conf",
                                "run.oci.handler": "krun",
                                "org.systemd.property.ExecStopPost": "/bin/evil",
                                "custom": "x"})
    assert spec_policy.steering_annotations(spec) == [
        "custom", "org.criu.config", "org.systemd.property.ExecStopPost", "run.oci.handler"]
    confined = json.loads(spec_policy.confine(json.dumps(config).encode(),
                                              json.dumps(spec).encode()))
    assert confined["annotations"] == original["annotations"]
    assert confined["mounts"] == original["mounts"]


def test_a_registrys_criu_configuration_never_reaches_podman(
        real: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, original = real
    spec = copy.deepcopy(original)
    spec["annotations"]["org.criu.config"] = "/tmp/evil.conf"
    config_dump = json.dumps({**config, "runtime": "runc"}).encode()
    spec_dump = json.dumps(spec).encode()
    # A configuration a local snapshot's container names itself is kept (criu_config.py) ...
    kept = json.loads(spec_for_restore(config_dump, spec_dump))
    assert kept["annotations"]["org.criu.config"] == "/tmp/evil.conf"
    # ... a registry's is gone from the configuration tar the feed gives podman.
    fed = ArchiveFeed(ARCHIVE, "0" * 64, confine=True)
    served = fed._config_tar
    assert served is not None
    with tarfile.open(fileobj=io.BytesIO(served)) as tar:
        member = tar.extractfile("spec.dump")
        assert member is not None
        assert "org.criu.config" not in json.loads(member.read()).get("annotations", {})


def test_refusal_names_each_access() -> None:
    spec_policy.refuse_host_access("mc@1", [])
    with pytest.raises(HostError) as caught:
        spec_policy.refuse_host_access("mc@1", ["privileged", "host network namespace"])
    assert caught.value.exit_code == ExitCode.ENVIRONMENT
    assert caught.value.message == ("mc@1 came from a registry and asks for host access: "
                                    "privileged; host network namespace")
    assert caught.value.hint is not None and "--allow-host-access" in caught.value.hint


@pytest.mark.parametrize("data", [b"[]", b"{", b'{"a": 1, "a": 2}'])
def test_unclear_specs(data: bytes) -> None:
    with pytest.raises(spec_policy.UnclearSpec):
        spec_policy.parse(data)


def test_what_config_dump_asks_of_the_host(real: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """podman keeps most of config.dump when it imports: the fields that reach the host."""
    original_config, spec = real
    config = copy.deepcopy(original_config)
    userdata = str(Path(config["conmonPidFile"]).parent)
    config.update({
        "exitCommand": ["/bin/sh", "-c", "id > /tmp/x"],
        "conmonPidFile": "/etc/shadow",
        "pid_file": f"{userdata}/pidfile",  # under podman's run root: podman resets it
        "rootfs": "/",
        "secrets": [{"name": "db-password", "id": "abc"}],
        "mounts": [*config["mounts"], "/boot"],
        "mountAllDevices": True,
    })
    assert spec_policy.host_access(spec, config) == [
        "exit command /bin/sh -c id > /tmp/x",
        "pid file written to /etc/shadow",
        "host directory / as its root file system",
        "this host's podman secrets db-password",
        "host mount /boot handled by podman",
        "every host device",
    ]


def test_named_volumes_are_the_containers_own_only_when_declared(
        real: tuple[dict[str, Any], dict[str, Any]]) -> None:
    config, original = real
    spec = copy.deepcopy(original)
    source = "/var/lib/containers/storage/volumes/cache-data/_data"
    spec["mounts"].append({"destination": "/data", "type": "bind", "source": source,
                           "options": ["rbind"]})
    # Not declared: this host's volume of that name would be mounted.
    assert spec_policy.host_access(spec, config) == [f"host path {source} at /data"]
    declared = {**config, "namedVolumes": [{"volumeName": "cache-data", "dest": "/data"}]}
    assert spec_policy.host_access(spec, declared) == []
    # A container file of podman's at a destination podman does not replace is the host's.
    userdata = next(m["source"] for m in original["mounts"] if m["destination"] == "/etc/hosts")
    spec["mounts"].append({"destination": "/etc/cron.d/x", "type": "bind", "source": userdata,
                           "options": ["bind"]})
    assert f"host path {userdata} at /etc/cron.d/x" in spec_policy.host_access(spec, declared)
