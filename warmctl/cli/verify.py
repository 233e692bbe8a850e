"""warmctl verify [REF...]"""

from __future__ import annotations

import typer

from warmctl.cli.options import JsonOption, OptionalRefsArgument, QuietOption, app_of, output_for


def command(
    ctx: typer.Context,
    refs: OptionalRefsArgument = None,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Recompute digests and check archive structure (all snapshots when none is named).

    Exits 5 when any archive is corrupt, else 10 when the disk failed a read of one.
    """
    from warmctl.errors import DiskIOError, IntegrityError
    from warmctl.refs import parse_ref
    from warmctl.snapshots import resolve_refs, verify_snapshot

    out = output_for(json_mode, quiet)
    catalogue = app_of(ctx).catalogue()
    if refs:
        snapshots = resolve_refs(catalogue, [parse_ref(ref) for ref in refs])
    else:
        snapshots = catalogue.list_snapshots()
    results = []
    with out.progress("verify") as progress:
        for snap in snapshots:
            results.append(verify_snapshot(catalogue, snap, progress))
    corrupt = [r for r in results if not r.ok and not r.disk_failure]
    unread = [r for r in results if r.disk_failure]
    if json_mode:
        out.json([r.to_dict() for r in results])
    else:
        for r in results:
            verdict = ("ok" if r.ok else
                       f"{'I/O ERROR' if r.disk_failure else 'CORRUPT'}: {r.problem}")
            out.line(f"{r.snapshot.ref}\t{verdict}")
    if corrupt:
        raise IntegrityError(f"{len(corrupt)} of {len(results)} snapshot(s) failed verification")
    if unread:
        raise DiskIOError(
            f"the disk failed a read of {len(unread)} of {len(results)} snapshot(s): not "
            f"proved damaged", hint="nothing was removed: check the disk (dmesg), then retry")
