"""The layers of docs/design.md, read from the imports (ast, lazy imports included): a module
imports only modules of its own layer or of layers below it, and no two modules import each
other, even through others. A new module goes into LAYERS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "warmctl"

# Top to bottom. "warmctl.cli" stands for the whole package.
LAYERS: dict[str, set[str]] = {
    # the verbs, the application object they build, and the rendering (output.py: the terminal,
    # whose LiveProgress implements the Progress protocol the library takes)
    "cli": {"warmctl.cli", "warmctl.__main__", "warmctl.app", "warmctl.output"},
    # what a verb does: snapshot, resume, warm, push and pull, doctor
    "lifecycle": {
        "warmctl.lifecycle", "warmctl.lifecycle.take", "warmctl.lifecycle.resume",
        "warmctl.lifecycle.in_place", "warmctl.lifecycle.verify", "warmctl.lifecycle.remove",
        "warmctl.lifecycle.prerequisites", "warmctl.lifecycle.criu_logs",
        "warmctl.lifecycle.freezer", "warmctl.lifecycle.volume_plan",
        "warmctl.lifecycle.saved_volumes",
        "warmctl.lifecycle.warm", "warmctl.lifecycle.feed", "warmctl.lifecycle.waiting",
        "warmctl.lifecycle.claim", "warmctl.lifecycle.freshness",
        "warmctl.oci.sharing", "warmctl.host.doctor",
    },
    # podman, the registry, the catalogue, CRIU's configuration, the host
    "adapters": {
        "warmctl.podman", "warmctl.podman.runner", "warmctl.podman.types", "warmctl.podman.cli",
        "warmctl.catalogue", "warmctl.criu_config", "warmctl.container_lock",
        "warmctl.ownership", "warmctl.transcode", "warmctl.provenance",
        "warmctl.lazy_pages",
        "warmctl.oci", "warmctl.oci.reference", "warmctl.oci.credentials", "warmctl.oci.auth",
        "warmctl.oci.errors", "warmctl.oci.client", "warmctl.oci.transfer",
        "warmctl.oci.transport", "warmctl.oci.artifact",
        "warmctl.oci.cosign", "warmctl.oci.trust_policy",
        "warmctl.host", "warmctl.host.facts", "warmctl.host.podman_info", "warmctl.host.compare",
    },
    # pure rules and formats: no process, no network, no terminal
    "rules": {
        "warmctl", "warmctl.errors", "warmctl.progress", "warmctl.units", "warmctl.refs",
        "warmctl.labels",
        "warmctl.retention", "warmctl.podman_input", "warmctl.archive", "warmctl.spec_policy",
        "warmctl.host.criu_kernel", "warmctl.host.diagnose",
    },
}

# Sub-packages, by who may import them: only the verbs import warmctl.oci (a closed cluster:
# registries, signatures, trust), nothing below the verbs imports warmctl.cli, and warmctl.oci
# and warmctl.host import neither each other (below), so among sub-packages the arrows go
# cli -> oci and cli -> host only. warmctl.lifecycle and warmctl.podman import warmctl.host
# (podman/cli.py reads host/diagnose.py, lifecycle/ the host facts); host's adapters import
# warmctl.podman.
MAY_BE_IMPORTED_BY = {
    "warmctl.cli": {"warmctl.cli", "warmctl.__main__"},
    "warmctl.oci": {"warmctl.cli", "warmctl.oci"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The warmctl modules `name` imports: `from warmctl.host import facts` is
    warmctl.host.facts, `from warmctl.host.facts import x` is warmctl.host.facts too."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package holding this module, or above
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = package[:len(package) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    listed = "warmctl.cli" if name.startswith("warmctl.cli.") else name
    for index, members in enumerate(LAYERS.values()):
        if listed in members:
            return index
    raise AssertionError(f"{name}: which layer? Add it to LAYERS in {Path(__file__).name}")


def package_of(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_every_module_has_one_layer() -> None:
    for name in MODULES:
        layer_of(name)
    listed = [m for members in LAYERS.values() for m in members]
    assert sorted(set(listed)) == sorted(listed)
    assert not set(listed) - set(MODULES), "LAYERS names a module that is gone"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down(name: str) -> None:
    upward = sorted(m for m in GRAPH[name] if layer_of(m) < layer_of(name))
    assert not upward, f"{name} ({list(LAYERS)[layer_of(name)]}) imports a higher layer: {upward}"


def test_sub_packages_are_imported_only_by_those_allowed() -> None:
    wrong = sorted((name, imported) for name, imported_set in GRAPH.items()
                   for imported in imported_set
                   if package_of(imported) in MAY_BE_IMPORTED_BY
                   and package_of(name) not in MAY_BE_IMPORTED_BY[package_of(imported)])
    assert not wrong


def test_oci_and_host_do_not_import_each_other() -> None:
    across = sorted((name, imported) for name, imported_set in GRAPH.items()
                    for imported in imported_set
                    if {package_of(name), package_of(imported)} == {"warmctl.oci", "warmctl.host"})
    assert not across


def test_no_circle() -> None:
    """Depth-first: a module met again while its own imports are still being walked closes a
    circle."""
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("circle: " + " -> ".join([*path[path.index(name):], name]))
        if name in done:
            return
        for imported in sorted(GRAPH[name]):
            walk(imported, [*path, name])
        done.add(name)

    for name in sorted(GRAPH):
        walk(name, [])
