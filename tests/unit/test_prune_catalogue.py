"""prune on a real catalogue (no podman): whatever the policy, every kept row keeps its
archive, and a dry run announces exactly what a real run removes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from warmctl.catalogue import Catalogue, SnapshotRecord
from warmctl.lifecycle.remove import prune_snapshots
from warmctl.retention import Policy

names = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12)
policies = st.builds(
    Policy,
    keep_last=st.none() | st.integers(1, 4),
    keep_within=st.none() | st.floats(0, 5),
    max_total_size=st.none() | st.integers(0, 200),
).filter(lambda p: not p.is_empty)


def build(home: Path, snapshot_names: list[str], sizes: list[int]) -> Catalogue:
    cat = Catalogue(home).open()
    for name, size in zip(snapshot_names, sizes, strict=False):
        with cat.new_temp_file() as temp:
            temp.path.write_bytes(b"x" * size)
            record = SnapshotRecord(name=name, container_name="c", container_id="i",
                                    image_name="img", image_id="ii", compression="none")
            cat.publish(temp, record, sha256="0" * 64)
    return cat


@settings(max_examples=40, deadline=None)
@given(snapshot_names=names, sizes=st.lists(st.integers(1, 60), min_size=12, max_size=12),
       policy=policies)
def test_kept_rows_keep_their_archives_and_dry_run_matches(
    snapshot_names: list[str], sizes: list[int], policy: Policy
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cat = build(Path(tmp) / "home", snapshot_names, sizes)
        dry = prune_snapshots(cat, policy, dry_run=True)
        assert len(cat.list_snapshots()) == len(snapshot_names)  # a dry run deletes nothing

        real = prune_snapshots(cat, policy)
        assert [(d.generation.ref, d.keep) for d in real.decisions] == \
            [(d.generation.ref, d.keep) for d in dry.decisions]
        assert real.bytes_freed == dry.bytes_freed
        kept = cat.list_snapshots()
        assert {s.ref for s in kept} == {d.generation.ref for d in real.decisions if d.keep}
        for snap in kept:
            assert snap.archive.read_bytes() == b"x" * snap.size_bytes
        assert sorted(p.name for p in cat.archives_dir.iterdir()) == \
            sorted(snap.archive.name for snap in kept)
        if policy.keep_last:
            newest = {s.name: s.generation for s in kept}
            assert set(newest) == set(snapshot_names)
