"""The registry client: references, auth files, challenges, and the HTTP flow against an
in-process fake registry (tests/unit/fake_registry.py), failures included."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
from pathlib import Path

import pytest
from fake_registry import FakeRegistry

from warmctl.errors import ExitCode, IntegrityError, NotFoundError, UsageError, WarmctlError
from warmctl.oci.auth import parse_challenge
from warmctl.oci.client import RegistryClient
from warmctl.oci.credentials import Credentials, auth_files, credentials_in, find_credentials
from warmctl.oci.errors import RegistryAuthError, RegistryUnreachable
from warmctl.oci.reference import Reference, parse_reference

KIB = 1024

# --- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:5000/warm/mc", Reference("127.0.0.1:5000", "warm/mc")),
    ("localhost:5000/mc:mc-3", Reference("localhost:5000", "mc", "mc-3")),
    ("localhost/mc", Reference("localhost", "mc")),
    ("registry.example.com/a/b/c:v1.2_x", Reference("registry.example.com", "a/b/c", "v1.2_x")),
    ("docker://quay.io/team/mc:1", Reference("quay.io", "team/mc", "1")),
    ("r.example.com/mc@sha256:" + "a" * 64,
     Reference("r.example.com", "mc", None, "sha256:" + "a" * 64)),
    ("r.example.com/mc:t@sha256:" + "b" * 64,
     Reference("r.example.com", "mc", "t", "sha256:" + "b" * 64)),
    ("[::1]:5000/mc", Reference("[::1]:5000", "mc")),
])
def test_parse_reference(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected
    assert str(parse_reference(text)) == text.removeprefix("docker://")


@pytest.mark.parametrize("text", [
    "memcached",  # a short name: never guessed to be Docker Hub
    "library/memcached:1",
    "registry.example.com",
    "registry.example.com/",
    "registry.example.com/Upper",
    "registry.example.com/mc:bad@tag",
    "registry.example.com/mc:" + "t" * 129,
    "registry.example.com/mc@sha256:short",
    "registry.example.com/a//b",
])
def test_parse_reference_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_reference(text)


def test_manifest_reference_prefers_the_digest() -> None:
    assert parse_reference("h.io/mc").manifest_reference == "latest"
    assert parse_reference("h.io/mc:v1").manifest_reference == "v1"
    digest = "sha256:" + "c" * 64
    assert parse_reference(f"h.io/mc:v1@{digest}").manifest_reference == digest


# --- credentials ------------------------------------------------------------------------------


def auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_auth_files_follow_podman(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/u"}
    assert auth_files(env, uid=1000) == [
        Path("/run/user/1000/containers/auth.json"),
        Path("/home/u/.config/containers/auth.json"),
        Path("/home/u/.docker/config.json"),
    ]
    # root without XDG_RUNTIME_DIR: where `podman login` writes then.
    assert auth_files({"HOME": "/root"}, uid=0)[0] == Path("/run/containers/0/auth.json")
    env = {"HOME": "/h", "XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dc"}
    assert auth_files(env, uid=5)[1:] == [Path("/cfg/containers/auth.json"),
                                          Path("/dc/config.json")]
    assert auth_files({"REGISTRY_AUTH_FILE": "/x.json"}) == [Path("/x.json")]


def test_credentials_most_specific_entry_wins() -> None:
    ref = parse_reference("reg.example.com:5000/team/app/mc:1")
    auths = {
        "reg.example.com:5000": auth("host", "p1"),
        "reg.example.com:5000/team": auth("team", "p2"),
        "other.example.com": auth("other", "p3"),
    }
    found = credentials_in(auths, ref, "f.json")
    assert found == Credentials("team", "p2", "f.json")
    assert credentials_in({"reg.example.com:5000": auth("host", "p:w:d")}, ref, "f") \
        == Credentials("host", "p:w:d", "f")
    assert credentials_in({"other.example.com": auth("x", "y")}, ref, "f") is None


def test_credentials_read_docker_legacy_keys() -> None:
    auths = {"https://index.docker.io/v1/": auth("hub", "pw"),
             "https://reg.example.com/v2/": auth("r", "pw2")}
    assert credentials_in(auths, parse_reference("docker.io/me/mc"), "f") \
        == Credentials("hub", "pw", "f")
    assert credentials_in(auths, parse_reference("reg.example.com/mc"), "f") \
        == Credentials("r", "pw2", "f")


def test_find_credentials_takes_the_first_file_with_an_entry(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(json.dumps({"auths": {}}))
    docker = tmp_path / "home" / ".docker"
    docker.mkdir(parents=True)
    (docker / "config.json").write_text(json.dumps(
        {"auths": {"localhost:5000": auth("bob", "pw")}, "credsStore": "desktop"}))
    env = {"XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path / "home")}
    ref = parse_reference("localhost:5000/mc")
    monkey_env = dict(env)
    found = find_credentials(ref, environ=monkey_env)
    assert found is not None and (found.username, found.password) == ("bob", "pw")
    assert found.source == str(docker / "config.json")
    assert find_credentials(parse_reference("localhost:6000/mc"), environ=monkey_env) is None


def test_find_credentials_explicit_authfile(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {"h.io": auth("u", "p")}}))
    found = find_credentials(parse_reference("h.io/mc"), authfile=path)
    assert found is not None and found.username == "u"
    with pytest.raises(UsageError, match="does not exist"):
        find_credentials(parse_reference("h.io/mc"), authfile=tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(WarmctlError, match="not valid JSON"):
        find_credentials(parse_reference("h.io/mc"), authfile=path)
    path.write_text(json.dumps({"auths": {"h.io": {"auth": "%%%"}}}))
    with pytest.raises(WarmctlError, match="not base64"):
        find_credentials(parse_reference("h.io/mc"), authfile=path)


# --- challenges -------------------------------------------------------------------------------


def test_parse_bearer_challenge() -> None:
    challenge = parse_challenge(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/mc:pull,push"')
    assert challenge is not None and challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.example.com/token",
                                "service": "registry.example.com",
                                "scope": "repository:team/mc:pull,push"}


def test_parse_basic_and_odd_challenges() -> None:
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and (basic.scheme, basic.params) == ("basic",
                                                                  {"realm": "Registry Realm"})
    spaced = parse_challenge('Bearer realm = "r", error=insufficient_scope , x="a\\"b"')
    assert spaced is not None
    assert spaced.params == {"realm": "r", "error": "insufficient_scope", "x": 'a"b'}
    assert parse_challenge("") is None


# --- the HTTP flow ----------------------------------------------------------------------------


def client_for(reg: FakeRegistry, repo: str = "warm/mc", *, push: bool = True,
               credentials: Credentials | None = None, chunk_size: int = 64 * KIB,
               tag: str | None = None) -> RegistryClient:
    ref = Reference(reg.host, repo, tag)
    client = RegistryClient(ref, push=push, tls_verify=False, credentials=credentials,
                            chunk_size=chunk_size, sleep=lambda _: None, timeout=10)
    client.connect()
    return client


def blob_file(tmp_path: Path, size: int, seed: int = 1) -> tuple[Path, str]:
    data = bytes((i * 7 + seed) % 251 for i in range(size))
    path = tmp_path / f"blob-{seed}"
    path.write_bytes(data)
    return path, "sha256:" + hashlib.sha256(data).hexdigest()


def upload(client: RegistryClient, path: Path, digest: str) -> list[int]:
    moves: list[int] = []
    with path.open("rb") as f:
        client.push_blob_file(f, path.stat().st_size, digest, moves.append)
    return moves


def test_chunked_upload(registry: FakeRegistry, tmp_path: Path) -> None:
    path, digest = blob_file(tmp_path, 300 * KIB)
    with client_for(registry) as client:
        assert client.blob_size(digest) is None
        moves = upload(client, path, digest)
        assert client.blob_size(digest) == 300 * KIB
    assert registry.blobs[digest] == path.read_bytes()
    assert registry.patches == 5  # 64 KiB chunks
    assert sum(moves) == 300 * KIB and min(moves) > 0


def test_upload_resumes_from_the_offset_the_registry_reports(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    registry.drop_patches = [3]
    path, digest = blob_file(tmp_path, 300 * KIB)
    with client_for(registry) as client:
        moves = upload(client, path, digest)
    assert registry.blobs[digest] == path.read_bytes()
    assert registry.count("GET /v2/warm/mc/blobs/uploads/") == 1  # asked where it stood
    assert registry.count("POST /v2/warm/mc/blobs/uploads/") == 1  # the same upload went on
    # Half the third chunk had arrived: the progress went back only to there.
    assert [m for m in moves if m < 0] == [-(32 * KIB)]
    assert sum(moves) == 300 * KIB


def test_upload_starts_again_when_the_registry_forgot_it(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    registry.drop_patches = [2]
    registry.resumable = False
    path, digest = blob_file(tmp_path, 200 * KIB)
    with client_for(registry) as client:
        moves = upload(client, path, digest)
    assert registry.blobs[digest] == path.read_bytes()
    assert registry.count("POST /v2/warm/mc/blobs/uploads/") == 2
    assert sum(moves) == 200 * KIB


def test_upload_gives_up_after_repeated_failures(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    registry.drop_patches = list(range(1, 50))
    path, digest = blob_file(tmp_path, 100 * KIB)
    with client_for(registry) as client, pytest.raises(RegistryUnreachable) as err:
        upload(client, path, digest)
    assert registry.host in err.value.message and err.value.exit_code == ExitCode.ENVIRONMENT
    assert digest not in registry.blobs


def test_upload_of_bytes_that_do_not_match_the_digest_is_not_committed(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    path, _ = blob_file(tmp_path, 100 * KIB)
    wrong = "sha256:" + "0" * 64
    with client_for(registry) as client, pytest.raises(IntegrityError, match="nothing was"):
        upload(client, path, wrong)
    assert registry.blobs == {} and registry.uploads == {}  # cancelled


def test_small_blob_and_manifest_round_trip(registry: FakeRegistry) -> None:
    data = b'{"hello": "world"}'
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    manifest = b'{"schemaVersion": 2}'
    with client_for(registry) as client:
        client.push_blob(data, digest)
        pushed = client.put_manifest("v1", manifest, "application/vnd.oci.image.manifest.v1+json")
    assert registry.blobs[digest] == data
    with client_for(registry, push=False, tag="v1") as client:
        body, media_type, got = client.get_manifest()
        out = io.BytesIO()
        assert client.fetch_blob(digest, len(data), out, lambda _: None) == digest[7:]
    assert (body, media_type, got) == (manifest, "application/vnd.oci.image.manifest.v1+json",
                                       pushed)
    assert out.getvalue() == data


def test_manifest_whose_digest_differs_from_the_one_asked_for(registry: FakeRegistry) -> None:
    registry.manifests[("warm/mc", "sha256:" + "d" * 64)] = (b"{}", "application/json")
    ref = Reference(registry.host, "warm/mc", None, "sha256:" + "d" * 64)
    client = RegistryClient(ref, push=False, tls_verify=False, timeout=10)
    client.connect()
    with client, pytest.raises(IntegrityError, match="hashes to"):
        client.get_manifest()


def test_missing_manifest_and_blob_are_not_found(registry: FakeRegistry) -> None:
    with client_for(registry, push=False, tag="nope") as client:
        with pytest.raises(NotFoundError) as err:
            client.get_manifest()
        assert err.value.exit_code == ExitCode.NOT_FOUND
        with pytest.raises(NotFoundError):
            client.fetch_blob("sha256:" + "e" * 64, 1, io.BytesIO(), lambda _: None)


def test_download_resumes_with_a_range_request(registry: FakeRegistry) -> None:
    data = os.urandom(200 * KIB)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.blobs[digest] = data
    registry.drop_download_after = 50 * KIB
    out = io.BytesIO()
    with client_for(registry, push=False) as client:
        assert client.fetch_blob(digest, len(data), out, lambda _: None) == digest[7:]
    assert out.getvalue() == data
    assert registry.count(f"GET /v2/warm/mc/blobs/{digest}") == 2


def test_download_larger_than_the_manifest_says_is_refused(registry: FakeRegistry) -> None:
    data = b"x" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    registry.blobs[digest] = data
    with client_for(registry, push=False) as client, pytest.raises(IntegrityError):
        client.fetch_blob(digest, 10, io.BytesIO(), lambda _: None)


# --- auth and reachability --------------------------------------------------------------------


def test_basic_auth(tmp_path: Path) -> None:
    with FakeRegistry(auth="basic") as reg:
        creds = Credentials(reg.username, reg.password, "auth.json")
        with client_for(reg, credentials=creds) as client:
            assert client.blob_size("sha256:" + "f" * 64) is None
        with pytest.raises(RegistryAuthError) as err:
            client_for(reg)
        assert err.value.exit_code == ExitCode.ENVIRONMENT
        assert err.value.hint == f"podman login --tls-verify=false {reg.host}"
        with pytest.raises(RegistryAuthError, match="refused the credentials from f"):
            client_for(reg, credentials=Credentials("alice", "wrong", "f"))


def test_bearer_token_auth_asks_for_push_scope(tmp_path: Path) -> None:
    with FakeRegistry(auth="bearer") as reg:
        creds = Credentials(reg.username, reg.password, "auth.json")
        path, digest = blob_file(tmp_path, 70 * KIB)
        with client_for(reg, credentials=creds) as client:
            upload(client, path, digest)
        assert reg.blobs[digest] == path.read_bytes()
        assert reg.token_scopes == ["repository:warm/mc:pull,push"]
        with pytest.raises(RegistryAuthError, match="anonymous access"):
            client_for(reg)


def test_an_expired_token_is_renewed(tmp_path: Path) -> None:
    with FakeRegistry(auth="bearer") as reg:
        creds = Credentials(reg.username, reg.password, "auth.json")
        path, digest = blob_file(tmp_path, 100 * KIB)
        with client_for(reg, credentials=creds) as client:
            reg.token = "renewed"  # the first token no longer works
            upload(client, path, digest)
        assert reg.blobs[digest] == path.read_bytes()
        assert len(reg.token_scopes) == 2


def test_unreachable_registry_is_an_environment_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ref = Reference(f"127.0.0.1:{port}", "mc", "t")
    for tls_verify in (True, False):
        client = RegistryClient(ref, push=True, tls_verify=tls_verify, timeout=5)
        with pytest.raises(RegistryUnreachable) as err:
            client.connect()
        assert err.value.exit_code == ExitCode.ENVIRONMENT
        assert err.value.message == (f"registry 127.0.0.1:{port} is unreachable: connect: "
                                     "connection refused")


def test_plain_http_registry_needs_tls_verify_false(registry: FakeRegistry) -> None:
    client = RegistryClient(Reference(registry.host, "mc"), push=False, timeout=5)
    with pytest.raises(RegistryUnreachable) as err:
        client.connect()
    assert err.value.hint is not None and "--tls-verify=false" in err.value.hint
